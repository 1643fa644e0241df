"""A reader of a BPF ring buffer map, straight from its mmap'd pages.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (the only
page userspace may write); page 1 the producer position; then the data
pages, which the kernel offers twice in a row so that a record that wraps
reads contiguously. Each record is an 8-byte header (u32 length with the
BUSY and DISCARD bits, u32 page offset) followed by the data, padded to 8
bytes.

The data pages are mapped once here, not twice as libbpf maps them: the
kernel fills the whole mapping at mmap time, so the second copy would add
the ring's size again to the consumer's RSS (16 MB of the default ring)
for the rare record that wraps, which is read in two slices instead.

Reading the positions straight from memory, in batches, costs a fraction of
a ctypes callback per record (``ring_buffer__consume``).

The positions are read and written whole, through memoryviews cast to
native u64 (one 8-byte load or store), never with :mod:`struct`:
``Struct.pack_into`` zeroes its field before writing the bytes one by one,
so the kernel could read the consumer position as 0 in between, take
the ring for full and refuse records. Under a fork storm it did, a few per
10,000 processes, with the ring nearly empty: those were the "refusals
with room" once blamed on the 6.15+ ring lock. A byte-wise read of the
producer position could likewise be torn.

:meth:`RingReader.over` reads memory laid out the same way but made by the
caller (anonymous maps in the unit tests).
"""

from __future__ import annotations

import mmap

from quark.errors import ConfigError

__all__ = ["RingReader", "ring_bytes"]

#: a default ring holds this much per CPU (rounded up to a power of two),
#: never less than the minimum and never more than the maximum. 16 MiB
#: hold the ~8,000 short processes (fork, exec with a 1.3 KB environment,
#: exit: ~2 KB) that a 2-CPU machine starts in 3 s, so a consumer may
#: stall that long and lose nothing (python -m quark.bench stall).
PER_CPU = 4 << 20
MIN_DEFAULT = 16 << 20
MAX_DEFAULT = 128 << 20
#: a consumer is behind once this share of the ring waits (in 1/4ths)
_BEHIND_QUARTERS = 3

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8


def _check_size(size: int) -> None:
    if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
        raise ValueError(f"ring size {size} is not a power-of-2 pages")


def ring_bytes(requested: int, ncpus: int) -> int:
    """The ring size for ``QueueAttr.ring_size``: ``requested`` bytes, which
    must be a power of two multiple of the page size, or with 0 4 MiB per
    CPU (rounded up to a power of two), at least 16 and at most 128 MiB."""
    if requested == 0:
        want = max(MIN_DEFAULT, PER_CPU * max(ncpus, 1))
        return min(MAX_DEFAULT, 1 << (want - 1).bit_length())
    if (
        not isinstance(requested, int)
        or isinstance(requested, bool)
        or requested < 0
        or requested & (requested - 1)
        or requested % mmap.PAGESIZE
    ):
        raise ConfigError(
            f"ring_size={requested!r}: a power of two multiple of the page "
            f"size ({mmap.PAGESIZE} bytes), or 0 to size it from the CPUs"
        )
    return requested


class RingReader:
    """Reads records of the ring buffer map ``fd`` of ``size`` data bytes."""

    def __init__(self, fd: int, size: int) -> None:
        _check_size(size)
        page = mmap.PAGESIZE
        cons = mmap.mmap(
            fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        try:
            prod = mmap.mmap(
                fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ,
                offset=page,
            )  # fmt: skip
        except BaseException:
            cons.close()
            raise
        self._setup(cons, prod, size)

    @classmethod
    def over(
        cls, consumer: mmap.mmap, producer: mmap.mmap, size: int
    ) -> RingReader:
        """A reader of memory laid out as the kernel maps it: ``consumer``
        holds the consumer position at 0 (written back); ``producer`` the
        producer position at 0, then from its second page the ``size`` data
        bytes (what follows them is never read). ``close()`` closes
        both."""
        _check_size(size)
        if len(consumer) < 8 or len(producer) < mmap.PAGESIZE + size:
            raise ValueError("ring memory smaller than its layout")
        reader = cls.__new__(cls)
        reader._setup(consumer, producer, size)
        return reader

    def _setup(self, cons: mmap.mmap, prod: mmap.mmap, size: int) -> None:
        self.size = size
        self._mask = size - 1
        self._cons = cons
        self._prod = prod
        # whole-word views (see the module's docstring); the producer page
        # and the data pages are 8-aligned and a multiple of 8 long
        self._cons_pos = memoryview(cons).cast("B")[:8].cast("Q")
        self._prod_pos = memoryview(prod).cast("B")[:8].cast("Q")
        self._words = memoryview(prod).cast("B")[: mmap.PAGESIZE + size]
        self._words = self._words.cast("I")
        self._data = mmap.PAGESIZE  # data starts after the producer page
        self._end = mmap.PAGESIZE + size
        self.discarded = 0
        self.corrupt = 0  # times a header was impossible: the rest skipped
        # the most bytes ever found waiting at a read, and how many times a
        # read found more than three quarters of the ring waiting
        self.high_water = 0
        self.behind = 0
        self._behind_at = size * _BEHIND_QUARTERS // 4
        self._was_behind = False

    def read(self, limit: int) -> list[bytes]:
        """Up to ``limit`` records (fewer if the ring has fewer)."""
        out: list[bytes] = []
        prod_mm, words = self._prod, self._words
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        mask, base, end = self._mask, self._data, self._end
        start = cons
        self._note(prod - cons)
        while cons < prod and len(out) < limit:
            off = base + (cons & mask)
            word = words[off >> 2]
            if word & _BUSY:
                break  # being written: the rest comes next time
            length = word & ~(_BUSY | _DISCARD)
            if cons + ((length + _HDR + 7) & ~7) > prod:
                # impossible (the kernel reserved less): skip what is
                # there rather than trust it, or pass the producer
                self.corrupt += 1
                cons = prod
                break
            if word & _DISCARD:
                self.discarded += 1
            else:
                # a header never wraps (8-aligned, in pages); its data may
                stop = off + _HDR + length
                if stop <= end:
                    out.append(prod_mm[off + _HDR : stop])
                else:
                    out.append(
                        prod_mm[off + _HDR : end]
                        + prod_mm[base : base + stop - end]
                    )
            cons += (length + _HDR + 7) & ~7
        if cons != start:
            self._cons_pos[0] = cons
        return out

    def sample(self) -> int:
        """The bytes waiting now (noted in ``high_water`` and ``behind``, as
        at a read)."""
        waiting = self._prod_pos[0] - self._cons_pos[0]
        self._note(waiting)
        return int(waiting)

    def _note(self, waiting: int) -> None:
        if waiting > self.high_water:
            self.high_water = waiting
        if waiting > self._behind_at:
            if not self._was_behind:
                self.behind += 1  # once per episode, not once per read
                self._was_behind = True
        elif waiting <= self._behind_at // 3:
            self._was_behind = False  # caught up (well below the mark)

    def close(self) -> None:
        for view in (self._cons_pos, self._prod_pos, self._words):
            view.release()
        for m in (self._cons, self._prod):
            if not m.closed:
                m.close()
