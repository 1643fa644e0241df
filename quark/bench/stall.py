"""``python -m quark.bench stall [--json] [--processes 5000] [--sleep 4]``.

A consumer that falls behind: this process opens a queue with the default
attributes, then reads nothing for ``--sleep`` seconds while ``--spawners``
helper processes start ``--processes`` processes between them as fast as
they can (``/bin/true`` with the caller's environment and three arguments,
as :mod:`quark.bench._load` spawns), then catches up and reads everything.

Reported: ``lost`` (goal 0 with the default ring), the ring's size, its
high-water mark and the times the consumer was found behind (``Stats``),
whether every process was seen with FORK, EXEC and EXIT, and whether the
spawning was over before the consumer woke (else the stall did not cover
the whole load). Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
)

__all__ = ["main", "result", "shares"]


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one."""
    q, r = divmod(total, parts)
    return [q + (i < r) for i in range(parts)]


def run(processes: int, sleep: float, spawners: int) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        qq = stack.enter_context(quark.Queue())
        tracker = Tracker()
        t0 = time.monotonic()
        group = Spawners(
            stack,
            tracker,
            [{"count": n} for n in shares(processes, spawners) if n],
        )
        time.sleep(sleep)
        done_in_stall = group.ended()
        woke = time.monotonic()
        group.deliver(qq, tracker)
        drain(qq, tracker)
        caught_up = time.monotonic() - woke
        stats = qq.stats()
        spawned = group.results()
    pids = [pid for s in spawned for pid in s.pids]
    spawn_seconds = max(s.elapsed for s in spawned)
    return {
        "spawned": len(pids),
        "spawn_seconds": spawn_seconds,
        "spawn_rate_per_s": len(pids) / spawn_seconds,
        "spawning_done_within_sleep": done_in_stall,
        "not_complete": incomplete(tracker.complete, pids),
        "lost": stats.lost,
        "events_delivered": tracker.delivered,
        "raw_inserted": stats.insertions,
        "ring_size": stats.ring_size,
        "ring_high_water": stats.ring_high_water,
        "ring_high_water_pct": (
            100 * stats.ring_high_water / max(stats.ring_size, 1)
        ),
        "ring_behind": stats.ring_behind,
        "repairs": stats.repairs,
        "catch_up_seconds": caught_up,
        "elapsed_seconds": time.monotonic() - t0,
    }


def result(
    processes: int, sleep: float, spawners: int, figures: dict[str, object]
) -> dict[str, object]:
    """The JSON document of a run."""
    return {
        "benchmark": "stall",
        "processes": processes,
        "sleep_seconds": sleep,
        "spawners": spawners,
        "cpus": os.cpu_count(),
        "argv": list(ARGV),
        "env_bytes": env_bytes(os.environ),
        **{
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in figures.items()
        },
        "targets": {"lost": 0, "not_complete": 0},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench stall")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--processes", type=int, default=5000)
    ap.add_argument("--sleep", type=float, default=4.0)
    ap.add_argument("--spawners", type=int, default=4)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench stall: needs root", file=sys.stderr)
        return 2
    if args.processes < 1 or args.spawners < 1 or args.sleep < 0:
        ap.error("--processes and --spawners must be >= 1, --sleep >= 0")
    figures = run(args.processes, args.sleep, args.spawners)
    res = result(args.processes, args.sleep, args.spawners, figures)
    if args.json:
        print(json.dumps(res))
        return 0
    late = "; NOT all within the sleep"
    print(
        f"consumer asleep {args.sleep:g} s while {res['spawned']} processes "
        f"started in {res['spawn_seconds']} s ({res['spawn_rate_per_s']:.0f}"
        f"/s, {args.spawners} spawners"
        + ("" if res["spawning_done_within_sleep"] else late)
        + f"): {' '.join(ARGV)}, environment {res['env_bytes']} bytes\n"
        f"lost {res['lost']} (goal 0); not seen with FORK+EXEC+EXIT: "
        f"{res['not_complete']} (goal 0); /proc repairs {res['repairs']}\n"
        f"ring {res['ring_size']} bytes on {res['cpus']} CPUs: high water "
        f"{res['ring_high_water']} ({res['ring_high_water_pct']:.1f}%), "
        f"behind {res['ring_behind']} times; caught up in "
        f"{res['catch_up_seconds']} s"
    )
    return 0
