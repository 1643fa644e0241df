"""Run inside a guest (tests/kernel/test_kprobe_plumbing.py): records of a
real perf ring are damaged before the queue reads them, the way a kernel
bug or a stray write would: an impossible size, and a sample whose raw part
claims more bytes than its record. Each is counted (lost, decode_errors)
and skipped; the consumer goes on and sees later processes whole.

The kernel maps a ring's data pages read-only (a write faults with
SIGBUS), so the ring is copied as it stands, the copy damaged and read
through the backend in its place, and the real ring's tail then moved past
what the copy held."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Callable

import quark
from quark import EV


def spawn_and_wait_for_data(q: quark.Queue) -> tuple[object, int, int]:
    """Spawn /bin/true and return (ring, tail, head) of a ring with data,
    before anything reads it."""
    subprocess.run(["/bin/true"], check=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for r in q._backend._rings:  # type: ignore[union-attr]
            ring = r.ring
            head = ring._u64_at(1024)
            tail = ring._u64_at(1032)
            if head > tail:
                return ring, tail, head
        time.sleep(0.01)
    raise AssertionError("no record reached any ring")


def read_damaged(
    q: quark.Queue, ring: object, damage: Callable[[bytearray, int], None]
) -> None:
    """Read the ring's records, as they stand now, after ``damage(copy,
    tail position)`` changed the copy."""
    real_buf = ring._buf  # type: ignore[attr-defined]
    real_write = ring._write_tail  # type: ignore[attr-defined]
    copy = bytearray(real_buf[:])
    tail = struct.unpack_from("<Q", copy, 1032)[0]
    damage(copy, tail)

    def write_tail(t: int) -> None:
        struct.pack_into("<Q", copy, 1032, t)

    ring._buf, ring._write_tail = copy, write_tail  # type: ignore[attr-defined]
    try:
        for _ in range(5):
            q.get_event()
    finally:
        ring._buf, ring._write_tail = real_buf, real_write  # type: ignore[attr-defined]
    real_write(struct.unpack_from("<Q", copy, 1032)[0])


def at(ring: object, pos: int) -> int:
    return ring._offset + (pos & (ring._size - 1))  # type: ignore[attr-defined]


def drain_until(q: quark.Queue, pid: int, timeout: float = 10) -> EV:
    seen = EV(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = q.get_event()
        if ev is None:
            if seen & EV.EXIT:
                return seen
            q.block(0.02)
            continue
        if ev.process is not None and ev.process.pid == pid:
            seen |= ev.events
    return seen


def main() -> int:
    with quark.Queue(backend="kprobe", hold_time=50) as q:
        # 1. an impossible record size: the rest of that ring is skipped
        ring, _, _ = spawn_and_wait_for_data(q)

        def bad_size(copy: bytearray, tail: int) -> None:
            struct.pack_into("<H", copy, at(ring, tail + 6), 3)

        read_damaged(q, ring, bad_size)
        s = q.stats()
        assert s.lost >= 1, s
        assert ring.corrupt == 1, ring.corrupt  # type: ignore[attr-defined]
        # 2. a sample whose raw size overruns its record
        ring, _, _ = spawn_and_wait_for_data(q)
        damaged: list[int] = []

        def bad_raw(copy: bytearray, tail: int) -> None:
            head = struct.unpack_from("<Q", copy, 1024)[0]
            pos = tail
            while pos < head:
                rtype, _, size = struct.unpack_from(
                    "<IHH", copy, at(ring, pos)
                )
                if rtype == 9:  # the first SAMPLE: after its header 8,
                    # pid,tid 8, time 8, cpu,res 8 comes the raw size
                    struct.pack_into("<I", copy, at(ring, pos + 32), 0xFFFF)
                    damaged.append(pos)
                    return
                pos += size

        read_damaged(q, ring, bad_raw)
        assert damaged, "no SAMPLE record in the ring"
        s = q.stats()
        assert s.decode_errors >= 1, s
        # 3. the consumer goes on: a new process is seen whole
        child = subprocess.Popen(["/bin/true", "after"])
        child.wait()
        seen = drain_until(q, child.pid)
        full = EV.FORK | EV.EXEC | EV.EXIT
        assert seen & full == full, seen
        p = q.lookup(child.pid)
        assert p is not None and p.cmdline == ["/bin/true", "after"], p
        print("corrupt records counted and skipped:", q.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
