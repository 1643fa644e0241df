"""Run inside a guest (tests/kernel/test_kprobe_plumbing.py): records of a
real perf ring are damaged in place before the queue reads them, the way a
kernel bug or a stray write would: an impossible size, and a sample whose
raw part claims more bytes than its record. Each is counted (lost,
decode_errors) and skipped; the consumer goes on and sees later processes
whole."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

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


def poke(ring: object, pos: int, fmt: str, value: int) -> None:
    off = ring._offset + (pos & (ring._size - 1))  # type: ignore[attr-defined]
    struct.pack_into(fmt, ring._buf, off, value)  # type: ignore[attr-defined]


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
        ring, tail, _ = spawn_and_wait_for_data(q)
        poke(ring, tail + 6, "<H", 3)  # perf_event_header.size
        for _ in range(20):
            q.get_event()
        s = q.stats()
        assert s.lost >= 1, s
        assert ring.corrupt == 1, ring.corrupt  # type: ignore[attr-defined]
        # 2. a sample whose raw size overruns its record
        for _ in range(50):
            ring, tail, _ = spawn_and_wait_for_data(q)
            rtype = struct.unpack_from(
                "<I",
                ring._buf,  # type: ignore[attr-defined]
                ring._offset + (tail & (ring._size - 1)),  # type: ignore[attr-defined]
            )[0]
            if rtype == 9:  # a SAMPLE
                break
            for _ in range(20):
                q.get_event()
        else:
            raise AssertionError("no SAMPLE record came first in 50 tries")
        # header 8 + pid,tid 8 + time 8 + cpu,res 8: then the raw size
        poke(ring, tail + 32, "<I", 0xFFFF)
        for _ in range(20):
            q.get_event()
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
