"""``python -m quark.bench storm [--json] [--seconds 60] [--spawners 4]``.

The machine's maximum spawn rate: ``--spawners`` processes each fork+exec
and wait ``/bin/true`` with the caller's environment and three arguments
(:mod:`quark.bench._load`), as fast as they can, for ``--seconds``. This
process reads with the library's default queue, delivering every event.

Reported: the processes spawned and those not seen with FORK, EXEC and EXIT
(goal 0), ``lost`` (goal 0), the consumer's peak RSS (``VmHWM``; goal
<= 60 MB with the default ``max_env``; the bench's own bookkeeping, two
arrays indexed by pid, is in it), and of it the BPF ring's mapping: the
kernel maps the ring's pages whole at open (the reader maps them once,
see :mod:`quark.sys.ringbuf`), so a 16 MiB ring shows as 16 MB of RSS
from the start, whatever the load; the rest is what the library holds.
Then the events and raw records per second sustained, and the consumer's
CPU. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time

import quark
from quark.bench._load import (
    ARGV,
    Spawners,
    Tracker,
    drain,
    env_bytes,
    incomplete,
    mapped_rss_kb,
    self_status_kb,
)

__all__ = ["RSS_GOAL_MB", "main", "result"]

RSS_GOAL_MB = 60


def run(seconds: float, spawners: int) -> dict[str, float]:
    rss_before = self_status_kb("VmRSS")
    with contextlib.ExitStack() as stack:
        qq = stack.enter_context(quark.Queue())
        tracker = Tracker()
        rss_open = self_status_kb("VmRSS")
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        group = Spawners(stack, tracker, [{"seconds": seconds}] * spawners)
        group.deliver(qq, tracker)
        t_spawned = time.monotonic()
        drain(qq, tracker)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        hwm = self_status_kb("VmHWM")  # before the pid lists are read
        with open("/proc/self/smaps") as f:
            ring_kb = mapped_rss_kb(f.read(), "anon_inode:bpf-map")
        stats = qq.stats()
        spawned = group.results()
    pids = [pid for s in spawned for pid in s.pids]
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    load = t_spawned - t0
    return {
        "spawned": len(pids),
        "spawn_rate_per_s": len(pids) / max(s.elapsed for s in spawned),
        "not_complete": incomplete(tracker.complete, pids),
        "lost": stats.lost,
        "events_delivered": tracker.delivered,
        "events_per_s": tracker.delivered / load,
        "raw_inserted": stats.insertions,
        "raw_per_s": stats.insertions / load,
        "rss_before_open_mb": rss_before / 1024,
        "rss_after_open_mb": rss_open / 1024,
        "peak_rss_mb": hwm / 1024,
        "ring_mapped_mb": ring_kb / 1024,
        "peak_rss_without_ring_mb": (hwm - ring_kb) / 1024,
        "consumer_cpu_pct": 100 * cpu / wall,
        "ring_size": stats.ring_size,
        "ring_high_water": stats.ring_high_water,
        "ring_behind": stats.ring_behind,
        "repairs": stats.repairs,
    }


def result(
    seconds: float, spawners: int, figures: dict[str, float]
) -> dict[str, object]:
    """The JSON document of a run."""
    return {
        "benchmark": "storm",
        "seconds": seconds,
        "spawners": spawners,
        "argv": list(ARGV),
        "env_bytes": env_bytes(os.environ),
        **{
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in figures.items()
        },
        "targets": {"not_complete": 0, "lost": 0, "peak_rss_mb": RSS_GOAL_MB},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench storm")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--spawners", type=int, default=4)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench storm: needs root", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.spawners < 1:
        ap.error("--seconds must be > 0 and --spawners >= 1")
    res = result(args.seconds, args.spawners, run(args.seconds, args.spawners))
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"{res['spawned']} processes in {args.seconds:g} s by "
        f"{args.spawners} spawners ({res['spawn_rate_per_s']:.0f}/s): "
        f"{' '.join(ARGV)}, environment {res['env_bytes']} bytes\n"
        f"not seen with FORK+EXEC+EXIT: {res['not_complete']} (goal 0); "
        f"lost {res['lost']} (goal 0); /proc repairs {res['repairs']}\n"
        f"sustained: {res['events_per_s']:.0f} events/s, "
        f"{res['raw_per_s']:.0f} raw records/s; consumer "
        f"{res['consumer_cpu_pct']:.1f}% of a core\n"
        f"peak RSS {res['peak_rss_mb']:.1f} MB (goal <= {RSS_GOAL_MB}; "
        f"{res['rss_after_open_mb']:.1f} MB after open), of which the "
        f"ring's mapping {res['ring_mapped_mb']:.1f} MB: "
        f"{res['peak_rss_without_ring_mb']:.1f} MB without it; ring "
        f"{res['ring_size']} bytes, high water {res['ring_high_water']}, "
        f"behind {res['ring_behind']} times"
    )
    return 0
