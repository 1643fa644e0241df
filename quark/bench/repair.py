"""``python -m quark.bench repair [--json] [--lose 5000] [--sleepers 50]``.

How long the process cache takes to match /proc again after a loss
(issue 16): an EBPF queue with a small ring (64 KiB) caches ``--sleepers``
sleeping processes; then its consumer stalls while half of them are killed
(their exits lost), as many new ones start (their forks lost) and a
spawner runs ``/bin/true`` until at least ``--lose`` records are lost.
The consumer then reads again; each second until the cache matches /proc
it prints the stale count: cached processes that /proc no longer shows
(or shows with another start time) plus processes /proc shows that the
cache lacks. Reported: the records lost, the time from the consumer's
resuming to a cache that matches /proc (goal: under 5 s), and the repair
counters of ``Stats``. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import quark
from quark import procfs
from quark.repair import stale

__all__ = ["main"]

RING = 64 << 10
HOLD_MS = 100
GOAL_S = 5.0
TIMEOUT_S = 30.0

SPAWNER = r"""
import os
while True:
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
"""

SLEEPER = ["sleep", "3600"]


def _stale(q: quark.Queue, hz: int) -> int:
    cached = {p.pid: p.start_time for p in q.processes() if not p.exited}
    gone, missing = stale(cached, "/proc", hz)
    return len(gone) + len(missing)


def _read_for(q: quark.Queue, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if q.get_event() is None:
            q.block(0.02)


def _lose(q: quark.Queue, until: int) -> None:
    """Until the queue has lost ``until`` records (60 s at most)."""
    t = time.monotonic()
    while q.stats().lost < until and time.monotonic() - t < 60:
        time.sleep(0.05)


def _run(lose: int, sleepers: int) -> dict[str, object]:
    hz = procfs.clock_ticks()
    procs: list[subprocess.Popen[bytes]] = []
    spawner: subprocess.Popen[bytes] | None = None
    try:
        with quark.Queue(
            backend="ebpf", hold_time=HOLD_MS, ring_size=RING
        ) as q:
            for _ in range(sleepers):
                procs.append(subprocess.Popen(SLEEPER))
                _read_for(q, 0.01)
            _read_for(q, 1.0)
            lost0 = q.stats().lost
            # the consumer stalls from here: the spawner fills the ring,
            # then half of the sleepers exit and as many start, unseen
            spawner = subprocess.Popen([sys.executable, "-c", SPAWNER])
            _lose(q, lost0 + lose // 2)
            for p in procs[: sleepers // 2]:
                p.kill()
                p.wait()
            procs.extend(
                subprocess.Popen(SLEEPER) for _ in range(sleepers // 2)
            )
            _lose(q, lost0 + lose)
            spawner.kill()
            spawner.wait()
            spawner = None
            lost = q.stats().lost - lost0
            # the consumer reads again
            t0 = time.monotonic()
            series = []
            stale = _stale(q, hz)
            print(f"  0.0 s: stale {stale}", file=sys.stderr)
            series.append((0.0, stale))
            matched: float | None = None
            next_print = t0 + 1.0
            while time.monotonic() - t0 < TIMEOUT_S:
                if q.get_event() is None:
                    q.block(0.02)
                now = time.monotonic()
                if now >= next_print or q.stats().repairs:
                    stale = _stale(q, hz)
                    if now >= next_print:
                        print(
                            f"{now - t0:5.1f} s: stale {stale}",
                            file=sys.stderr,
                        )
                        series.append((round(now - t0, 1), stale))
                        next_print += 1.0
                    if stale == 0 and q.stats().repairs:
                        matched = now - t0
                        break
            s = q.stats()
    finally:
        if spawner is not None:
            spawner.kill()
            spawner.wait()
        for p in procs:
            p.kill()
            p.wait()
    return {
        "lost": lost,
        "repair_s": None if matched is None else round(matched, 3),
        "stale_each_second": series,
        "repairs": s.repairs,
        "repair_purged": s.repair_purged,
        "repair_added": s.repair_added,
        "ring_size": s.ring_size,
        "ring_behind": s.ring_behind,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench repair")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lose", type=int, default=5000)
    ap.add_argument("--sleepers", type=int, default=50)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench repair: needs root", file=sys.stderr)
        return 2
    r = _run(args.lose, args.sleepers)
    result = {
        "benchmark": "repair",
        "kernel": os.uname().release,
        "lose_target": args.lose,
        "sleepers": args.sleepers,
        **r,
        "goal_s": GOAL_S,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    took = r["repair_s"]
    print(
        f"lost {r['lost']} records (target >= {args.lose}) with "
        f"{args.sleepers // 2} exits and {args.sleepers // 2} forks among "
        f"them\ncache matched /proc "
        + (
            f"{took} s after the consumer resumed (goal < {GOAL_S:.0f} s)"
            if took is not None
            else f"NOT within {TIMEOUT_S:.0f} s"
        )
        + f"\nrepairs {r['repairs']}: purged {r['repair_purged']}, added "
        f"{r['repair_added']}; ring {r['ring_size']} bytes, found near "
        f"full {r['ring_behind']} times"
    )
    return 0 if took is not None else 1
