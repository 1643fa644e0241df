"""The perf ring reader on synthesized rings (no kernel needed)."""

from __future__ import annotations

import select
import struct
import time

from quark.sys.perf import (
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    PerfRing,
)
from quark.sys.timerfd import Timer

PAGE = 4096
SIZE = 256


def _ring(records: list[tuple[int, int, bytes]], start: int) -> bytearray:
    buf = bytearray(PAGE + SIZE)
    struct.pack_into("<QQ", buf, 1040, PAGE, SIZE)  # data_offset, data_size
    pos = start
    for rtype, misc, body in records:
        rec = struct.pack("<IHH", rtype, misc, 8 + len(body)) + body
        for i, b in enumerate(rec):
            buf[PAGE + (pos + i) % SIZE] = b
        pos += len(rec)
    struct.pack_into("<Q", buf, 1024, pos)  # data_head
    struct.pack_into("<Q", buf, 1032, start)  # data_tail
    return buf


def test_records_including_one_that_wraps() -> None:
    recs = [
        (PERF_RECORD_SAMPLE, 0, bytes(range(24))),
        (PERF_RECORD_LOST, 0, struct.pack("<QQ", 7, 3)),
        (PERF_RECORD_SAMPLE, 0, b"x" * 40),
    ]
    buf = _ring(recs, start=SIZE - 40)  # the second record straddles the end
    tails: list[int] = []
    ring = PerfRing(buf, page_size=PAGE, write_tail=tails.append)
    assert ring.read(10) == recs
    assert tails == [SIZE - 40 + sum(8 + len(b) for _, _, b in recs)]


def test_limit_leaves_the_rest() -> None:
    recs = [(PERF_RECORD_SAMPLE, 0, b"a" * 8)] * 3
    buf = _ring(recs, start=0)
    ring = PerfRing(buf, page_size=PAGE)
    assert len(ring.read(2)) == 2


def test_a_corrupt_record_is_counted_and_skipped_not_fatal() -> None:
    buf = _ring([(PERF_RECORD_SAMPLE, 0, b"a" * 8)], start=0)
    struct.pack_into("<IHH", buf, PAGE, PERF_RECORD_SAMPLE, 0, 0)  # size 0
    tails: list[int] = []
    ring = PerfRing(buf, page_size=PAGE, write_tail=tails.append)
    assert ring.read(10) == []
    assert ring.corrupt == 1 and tails == [16]
    # an oversized size (bigger than what the producer wrote) likewise
    buf = _ring([(PERF_RECORD_SAMPLE, 0, b"a" * 8)], start=0)
    struct.pack_into("<IHH", buf, PAGE, PERF_RECORD_SAMPLE, 0, 4096)
    ring = PerfRing(buf, page_size=PAGE)
    assert ring.read(10) == [] and ring.corrupt == 1


def test_empty_and_skip_follow_the_head() -> None:
    recs = [(PERF_RECORD_SAMPLE, 0, b"a" * 8)] * 2
    buf = _ring(recs, start=16)

    def write_tail(tail: int) -> None:
        struct.pack_into("<Q", buf, 1032, tail)

    ring = PerfRing(buf, page_size=PAGE, write_tail=write_tail)
    assert not ring.empty()
    ring.skip()
    assert ring.empty() and ring.read(10) == []


def test_the_timer_is_readable_once_expired_until_set_again() -> None:
    """The real timerfd: readable after its delay, and no longer once
    disarmed (a past expiry is cleared without reading it)."""
    timer = Timer()
    try:
        assert select.select([timer.fd], [], [], 0)[0] == []
        t0 = time.monotonic()
        timer.arm(20_000_000)
        assert select.select([timer.fd], [], [], 2)[0] == [timer.fd]
        assert time.monotonic() - t0 >= 0.019
        timer.disarm()
        assert select.select([timer.fd], [], [], 0.05)[0] == []
        timer.arm(1)
        assert select.select([timer.fd], [], [], 2)[0] == [timer.fd]
        timer.arm(10**12)  # set again, far away: the expiry is cleared
        assert select.select([timer.fd], [], [], 0.05)[0] == []
    finally:
        timer.close()
        timer.close()  # idempotent
