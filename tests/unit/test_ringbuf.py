"""The BPF ring buffer reader over anonymous maps laid out as the kernel
maps a ring buffer map (no kernel needed): the consumer position in its own
page, the producer position at the start of the second map, then the data
pages once (the reader maps the kernel's second copy of them not at all)."""

from __future__ import annotations

import mmap
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quark.sys.ringbuf import RingReader

PAGE = mmap.PAGESIZE
SIZE = PAGE  # data bytes: one page, the smallest ring
BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
PAD = 0xA5  # what fills the padding: never part of a record


def padded(length: int) -> int:
    return (length + HDR + 7) & ~7


class FakeKernel:
    """The producer side: reserve, commit and discard records as
    kernel/bpf/ringbuf.c does, into one copy of the data pages: a reader
    that looked past their end would find nothing there."""

    def __init__(self, start: int = 0, size: int = SIZE) -> None:
        self.size = size
        self.cons = mmap.mmap(-1, PAGE)
        self.prod = mmap.mmap(-1, PAGE + size)
        self.pos = start
        struct.pack_into("<Q", self.cons, 0, start)
        struct.pack_into("<Q", self.prod, 0, start)
        self.reader = RingReader.over(self.cons, self.prod, size)

    @property
    def consumer(self) -> int:
        return int(struct.unpack_from("<Q", self.cons, 0)[0])

    def free(self) -> int:
        return self.size - (self.pos - self.consumer)

    def _put(self, pos: int, data: bytes) -> None:
        off = pos & (self.size - 1)
        first = min(len(data), self.size - off)
        self.prod[PAGE + off : PAGE + off + first] = data[:first]
        rest = data[first:]
        self.prod[PAGE : PAGE + len(rest)] = rest

    def reserve(self, body: bytes) -> int:
        """Reserve a BUSY record holding ``body``; its position."""
        total = padded(len(body))
        assert total <= self.free(), "the kernel would refuse: ring full"
        pos = self.pos
        pad = bytes([PAD]) * (total - HDR - len(body))
        self._put(pos, struct.pack("<II", len(body) | BUSY, 0) + body + pad)
        self.pos += total
        struct.pack_into("<Q", self.prod, 0, self.pos)
        return pos

    def commit(self, pos: int, discard: bool = False) -> None:
        off = PAGE + (pos & (self.size - 1))
        word = struct.unpack_from("<I", self.prod, off)[0] & ~BUSY
        if discard:
            word |= DISCARD
        self._put(pos, struct.pack("<I", word))

    def write(self, body: bytes, discard: bool = False) -> int:
        pos = self.reserve(body)
        self.commit(pos, discard)
        return pos


def test_records_are_read_in_order_and_the_position_written_back() -> None:
    k = FakeKernel()
    bodies = [b"first", b"second!!", b"", b"x" * 100]
    for body in bodies:
        k.write(body)
    assert k.reader.read(100) == bodies
    assert k.consumer == k.pos == sum(padded(len(b)) for b in bodies)
    assert k.reader.read(100) == []
    assert k.consumer == k.pos


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 15, 16, 17, 61])
def test_records_are_padded_to_8_bytes(length: int) -> None:
    k = FakeKernel()
    first = bytes(range(length))
    k.write(first)
    k.write(b"after")
    assert k.reader.read(1) == [first]  # the padding is not part of it
    assert k.consumer == padded(length)
    assert k.consumer % 8 == 0
    assert k.reader.read(1) == [b"after"]


@pytest.mark.parametrize("start", [SIZE - 8, SIZE - 16, 2**40 + SIZE - 24])
def test_a_record_across_the_end_reads_whole(start: int) -> None:
    k = FakeKernel(start=start)
    body = bytes(range(1, 41))
    pos = k.write(body)
    off = pos & (SIZE - 1)
    assert off + padded(len(body)) > SIZE  # it does wrap
    # the wrapped part is at the start of the data area (the only copy)
    assert bytes(k.prod[PAGE : PAGE + 8]) != bytes(8)
    assert len(k.prod) == PAGE + SIZE
    assert k.reader.read(10) == [body]
    assert k.consumer == start + padded(len(body))


def test_a_busy_record_stops_the_batch_until_committed() -> None:
    k = FakeKernel()
    k.write(b"a")
    busy = k.reserve(b"being written")
    k.write(b"c")
    assert k.reader.read(10) == [b"a"]
    assert k.consumer == busy  # stopped at the busy record
    assert k.reader.read(10) == []
    k.commit(busy)
    assert k.reader.read(10) == [b"being written", b"c"]
    assert k.consumer == k.pos


def test_discarded_records_are_skipped_and_counted() -> None:
    k = FakeKernel()
    k.write(b"keep 1")
    k.write(b"drop me", discard=True)
    k.write(b"drop me too" * 3, discard=True)
    k.write(b"keep 2")
    assert k.reader.read(10) == [b"keep 1", b"keep 2"]
    assert k.reader.discarded == 2
    assert k.consumer == k.pos


def test_a_partial_batch_stops_after_the_last_record_returned() -> None:
    k = FakeKernel()
    bodies = [bytes([i]) * (i + 1) for i in range(5)]
    ends = []
    for body in bodies:
        ends.append(k.write(body) + padded(len(body)))
    assert k.reader.read(2) == bodies[:2]
    assert k.consumer == ends[1]
    assert k.reader.read(0) == []
    assert k.consumer == ends[1]
    assert k.reader.read(10) == bodies[2:]
    assert k.consumer == ends[-1]


def test_memory_too_small_for_the_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller"):
        RingReader.over(mmap.mmap(-1, PAGE), mmap.mmap(-1, SIZE), SIZE)
    with pytest.raises(ValueError, match="power-of-2"):
        RingReader.over(mmap.mmap(-1, PAGE), mmap.mmap(-1, 4 * PAGE), 3000)


@settings(max_examples=200, deadline=None)
@given(
    # positions move by whole 8-byte units from 0, as the kernel's do
    start=st.integers(0, 2**45).map(lambda n: n * 8),
    records=st.lists(
        st.tuples(st.integers(0, 300), st.booleans()), max_size=60
    ),
    limits=st.lists(st.integers(1, 8), min_size=1, max_size=20),
)
def test_everything_written_is_read_once_in_order(
    start: int, records: list[tuple[int, bool]], limits: list[int]
) -> None:
    """Random record sizes (some discarded), random batch limits, the
    producer as far ahead as the ring allows: each kept record comes out
    exactly once, in order, and the consumer ends where the producer is."""
    k = FakeKernel(start=start)
    todo = [
        (bytes([n % 251]) * n + n.to_bytes(2, "little"), drop)
        for n, drop in records
    ]
    want = [body for body, drop in todo if not drop]
    got: list[bytes] = []
    turn = 0
    while todo or k.consumer != k.pos:
        while todo and padded(len(todo[0][0])) <= k.free():
            body, drop = todo.pop(0)
            k.write(body, discard=drop)
        limit = limits[turn % len(limits)]
        batch = k.reader.read(limit)
        assert len(batch) <= limit
        got += batch
        turn += 1
        assert turn < 10_000
    assert got == want
    assert k.reader.discarded == sum(drop for _, drop in records)
    assert k.consumer == k.pos
