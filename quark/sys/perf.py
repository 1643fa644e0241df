"""perf_event_open(2) and its mmap'd ring, for the KPROBE backend.

The ring (include/uapi/linux/perf_event.h): page 0 is
``struct perf_event_mmap_page`` (``data_head`` at 1024, ``data_tail`` at
1032, ``data_offset`` at 1040, ``data_size`` at 1048), then the data pages.
Records start with ``struct perf_event_header {u32 type; u16 misc; u16
size}``. A record may wrap around the end of the data area: it is copied out
in two parts. A record whose size is impossible (0, not a multiple of 8, or
larger than the data area) means the ring cannot be trusted: it is counted,
and the reader skips to the head instead of aborting (upstream calls errx).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable
from typing import Protocol

from quark.sys.libc import check, libc, oserror

__all__ = [
    "PERF_RECORD_COMM",
    "PERF_RECORD_LOST",
    "PERF_RECORD_SAMPLE",
    "PerfEventAttr",
    "PerfRing",
    "RingBuffer",
    "perf_event_open",
]

PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_TID = 1 << 1
PERF_SAMPLE_TIME = 1 << 2
PERF_SAMPLE_CPU = 1 << 7
PERF_SAMPLE_RAW = 1 << 10
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_SAMPLE = 9
PERF_RECORD_MISC_COMM_EXEC = 1 << 13
PERF_FLAG_FD_CLOEXEC = 1 << 3

# bits of perf_event_attr's flags word
ATTR_DISABLED = 1 << 0
ATTR_COMM = 1 << 9
ATTR_WATERMARK = 1 << 14
ATTR_SAMPLE_ID_ALL = 1 << 18
ATTR_COMM_EXEC = 1 << 24
ATTR_USE_CLOCKID = 1 << 25

# attr.wakeup_events and attr.wakeup_watermark share one word: events
# without ATTR_WATERMARK, bytes with it.

# ioctls: _IO('$', n) and _IOW('$', 6, u32)
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_OUTPUT = 0x2405
PERF_IOC_FLAG_GROUP = 1  # an ioctl's argument: the whole group
PAGE_SIZE = mmap.PAGESIZE

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}

_HEAD, _TAIL, _DATA_OFFSET, _DATA_SIZE = 1024, 1032, 1040, 1048
_HDR = struct.Struct("<IHH")
_u64 = struct.Struct("<Q")


class PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` up to PERF_ATTR_SIZE_VER5 (112 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_watermark", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved_2", ctypes.c_uint16),
    ]


assert ctypes.sizeof(PerfEventAttr) == 112


def perf_event_open(
    attr: PerfEventAttr, pid: int, cpu: int, group_fd: int = -1
) -> int:
    """The new event's fd; OSError with errno on failure."""
    machine = os.uname().machine
    nr = _NR_PERF_EVENT_OPEN.get(machine)
    if nr is None:
        raise oserror(_errno.ENOSYS, f"perf_event_open on {machine}")
    attr.size = ctypes.sizeof(PerfEventAttr)
    fd = libc().syscall(
        ctypes.c_long(nr), ctypes.byref(attr), ctypes.c_int(pid),
        ctypes.c_int(cpu), ctypes.c_int(group_fd),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )  # fmt: skip
    return check(int(fd), "perf_event_open")


def ioctl(fd: int, request: int, arg: int = 0) -> None:
    fcntl.ioctl(fd, request, arg)


class RingBuffer(Protocol):
    """What :class:`PerfRing` reads from: an mmap or, in tests, a bytearray."""

    def __getitem__(self, key: slice) -> bytes: ...

    def __len__(self) -> int: ...


class PerfRing:
    """Reads the records of one perf ring.

    ``buf`` is the whole mapping (metadata page + data); ``write_tail`` is
    how the consumer position is published (into the mmap'd page).
    """

    def __init__(
        self,
        buf: RingBuffer,
        *,
        page_size: int = mmap.PAGESIZE,
        write_tail: Callable[[int], None] | None = None,
    ) -> None:
        self._buf = buf
        meta = bytes(buf[0:page_size])
        offset = _u64.unpack_from(meta, _DATA_OFFSET)[0] or page_size
        size = _u64.unpack_from(meta, _DATA_SIZE)[0] or (len(buf) - page_size)
        if size <= 0 or size & (size - 1):
            raise ValueError(f"perf ring data size {size} is not a power of 2")
        self._offset = offset
        self._size = size
        self._write_tail = write_tail
        self._mapping: mmap.mmap | None = None
        self._views: list[memoryview] = []  # into _mapping: released first
        self.corrupt = 0  # times the ring had to be skipped

    def close(self) -> None:
        """Unmap the ring (when it owns its mapping). Idempotent."""
        m, self._mapping = self._mapping, None
        for view in self._views:
            view.release()
        self._views = []
        if m is not None:
            m.close()

    def empty(self) -> bool:
        """Nothing left to read (the head is where we stopped)."""
        return self._u64_at(_HEAD) == self._u64_at(_TAIL)

    def skip(self) -> None:
        """Drop whatever is in the ring, unread."""
        if self._write_tail is not None:
            self._write_tail(self._u64_at(_HEAD))

    def _u64_at(self, off: int) -> int:
        # copied out first in one piece (an 8-byte memcpy), then decoded:
        # struct reads a buffer byte by byte, which the kernel's store
        # could tear
        return int(_u64.unpack_from(bytes(self._buf[off : off + 8]))[0])

    def _copy(self, pos: int, length: int) -> bytes:
        start = pos & (self._size - 1)
        base = self._offset
        first = min(length, self._size - start)
        data = bytes(self._buf[base + start : base + start + first])
        if first < length:  # wrapped: the rest is at the start of the data
            data += bytes(self._buf[base : base + length - first])
        return data

    def read(self, limit: int) -> list[tuple[int, int, bytes]]:
        """Up to ``limit`` records as (type, misc, bytes after the header)."""
        head = self._u64_at(_HEAD)
        tail = self._u64_at(_TAIL)
        out: list[tuple[int, int, bytes]] = []
        while tail < head and len(out) < limit:
            if head - tail < _HDR.size:
                break
            rtype, misc, rsize = _HDR.unpack(self._copy(tail, _HDR.size))
            if rsize < _HDR.size or rsize % 8 or rsize > head - tail:
                # impossible: skip what is there rather than trust it
                self.corrupt += 1
                tail = head
                break
            out.append(
                (rtype, misc, self._copy(tail + _HDR.size, rsize - _HDR.size))
            )
            tail += rsize
        if self._write_tail is not None:
            self._write_tail(tail)
        return out


def map_ring(fd: int, pages: int) -> tuple[mmap.mmap, PerfRing]:
    """mmap ``1 + pages`` pages of a perf event (pages a power of 2)."""
    page = mmap.PAGESIZE
    m = mmap.mmap(fd, (1 + pages) * page, mmap.MAP_SHARED,
                  mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip

    # One 8-byte store. struct.pack_into zeroes its field before writing
    # it byte by byte: the kernel could read a tail of 0 in between, take
    # the ring for full and drop records (see quark.sys.ringbuf).
    tail_word = memoryview(m).cast("B")[_TAIL : _TAIL + 8].cast("Q")

    def write_tail(tail: int) -> None:
        tail_word[0] = tail

    ring = PerfRing(m, page_size=page, write_tail=write_tail)
    ring._mapping = m
    ring._views.append(tail_word)
    return m, ring
