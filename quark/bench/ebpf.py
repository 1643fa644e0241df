"""``python -m quark.bench ebpf [--json] [--rate 1600] [--seconds 30]``.

A separate process spawns ``/bin/true`` (fork+exec+wait) at a fixed rate.
Measured in one run, in two phases of ``--seconds`` each:

1. the library alone (this process), delivering every event and printing
   nothing: its CPU time (user+sys) as % of one core, and the BPF programs'
   run time as % of one core (``kernel.bpf_stats_enabled`` is turned on for
   the run);
2. ``quark-mon`` with its default text output to /dev/null: its CPU (and
   the BPF time) likewise.

Also: the events delivered against the processes spawned (phase 1 counts
each spawned pid seen with FORK, EXEC and EXIT) and the lost counter.
Targets: delivery <= 3% of a core, BPF time included; with text <= 8%;
nothing lost. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import quark
from quark import EV

__all__ = ["main"]

SPAWNER = r"""
import os, sys, time
rate, seconds, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
pids = []
start = time.monotonic()
n = int(rate * seconds)
for i in range(n):
    due = start + i / rate
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    pids.append(pid)
elapsed = time.monotonic() - start
with open(out, "w") as f:
    f.write(f"{elapsed}\n")
    f.write("\n".join(map(str, pids)))
"""

STATS = "/proc/sys/kernel/bpf_stats_enabled"


def _bpf_run_ns() -> int:
    """Total run time of quark's programs (names q_*), from bpftool."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(
        p.get("run_time_ns", 0)
        for p in json.loads(out)
        if str(p.get("name", "")).startswith("q_")
    )


def _spawn(rate: float, seconds: float, out: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(rate), str(seconds), out]
    )


def _read_spawned(path: str) -> tuple[float, list[int]]:
    with open(path) as f:
        elapsed = float(f.readline())
        pids = [int(x) for x in f.read().split()]
    return elapsed, pids


def _phase_library(
    rate: float, seconds: float, backend: str = "ebpf"
) -> dict[str, float]:
    """The library alone on ``backend``; BPF run time only for EBPF."""
    bpf = _bpf_run_ns if backend == "ebpf" else (lambda: 0)
    with (
        tempfile.NamedTemporaryFile("r") as tmp,
        quark.Queue(backend=backend) as qq,
    ):
        seen: dict[int, int] = {}
        bpf0 = bpf()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        spawner = _spawn(rate, seconds, tmp.name)
        delivered = 0
        while True:
            ev = qq.get_event()
            if ev is not None:
                delivered += 1
                if ev.process is not None:
                    pid = ev.process.pid
                    seen[pid] = seen.get(pid, 0) | ev.events
                continue
            if spawner.poll() is not None:
                break
            qq.block()
        # drain what the hold time still keeps
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            ev = qq.get_event()
            if ev is None:
                qq.block(0.1)
                continue
            delivered += 1
            if ev.process is not None:
                pid = ev.process.pid
                seen[pid] = seen.get(pid, 0) | ev.events
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        bpf1 = bpf()
        stats = qq.stats()
        elapsed, pids = _read_spawned(tmp.name)
    full = EV.FORK | EV.EXEC | EV.EXIT
    complete = sum(1 for pid in pids if seen.get(pid, 0) & full == full)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "spawned": len(pids),
        "spawn_rate_per_s": len(pids) / elapsed,
        "seen_complete": complete,
        "events_delivered": delivered,
        "lost": stats.lost,
        "consumer_cpu_pct": 100 * cpu / wall,
        "consumer_cpu_us_per_event": 1e6 * cpu / max(delivered, 1),
        "bpf_cpu_pct": 100 * (bpf1 - bpf0) / 1e9 / wall,
    }


def _phase_mon(rate: float, seconds: float) -> dict[str, float]:
    with (
        tempfile.NamedTemporaryFile("r") as tmp,
        open(os.devnull, "w") as null,
    ):
        mon = subprocess.Popen(
            [sys.executable, "-m", "quark.cli.mon", "-b", "-s"],
            stdout=null, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.5)  # let it open
        bpf0 = _bpf_run_ns()
        cpu0 = _proc_cpu(mon.pid)
        t0 = time.monotonic()
        spawner = _spawn(rate, seconds, tmp.name)
        spawner.wait()
        time.sleep(1.5)  # the hold time
        wall = time.monotonic() - t0
        cpu1 = _proc_cpu(mon.pid)
        bpf1 = _bpf_run_ns()
        mon.terminate()
        _, err = mon.communicate(timeout=10)
        _, pids = _read_spawned(tmp.name)
    lost = _mon_lost(err.decode(errors="replace"))
    return {
        "spawned": len(pids),
        "lost": lost,
        "consumer_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "bpf_cpu_pct": 100 * (bpf1 - bpf0) / 1e9 / wall,
    }


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _mon_lost(stderr: str) -> int:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.split()[:1] == ["inserts"] and i + 1 < len(lines):
            return int(lines[i + 1].split()[4])
    return -1


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled on for the block, then as it was."""
    with open(STATS) as f:
        old = f.read().strip()
    with open(STATS, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(STATS, "w") as f:
            f.write(old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench ebpf")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rate", type=float, default=1600.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench ebpf: needs root", file=sys.stderr)
        return 2
    with bpf_stats():
        lib = _phase_library(args.rate, args.seconds)
        mon = _phase_mon(args.rate, args.seconds)
    result = {
        "benchmark": "ebpf",
        "rate_target_per_s": args.rate,
        "seconds": args.seconds,
        "library": {k: round(v, 3) for k, v in lib.items()},
        "quark_mon_text": {k: round(v, 3) for k, v in mon.items()},
        "delivery_pct_of_core": round(
            lib["consumer_cpu_pct"] + lib["bpf_cpu_pct"], 3
        ),
        "text_pct_of_core": round(
            mon["consumer_cpu_pct"] + mon["bpf_cpu_pct"], 3
        ),
        "targets": {"delivery_pct": 3.0, "text_pct": 8.0, "lost": 0},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"spawned {lib['spawned']:.0f} processes at "
        f"{lib['spawn_rate_per_s']:.0f}/s (target {args.rate:.0f}/s)\n"
        f"library alone: consumer {lib['consumer_cpu_pct']:.2f}% + BPF "
        f"{lib['bpf_cpu_pct']:.2f}% = {result['delivery_pct_of_core']}% of "
        f"a core (target <= 3%)\n"
        f"  seen with FORK+EXEC+EXIT: {lib['seen_complete']:.0f} of "
        f"{lib['spawned']:.0f}; lost {lib['lost']:.0f}\n"
        f"quark-mon text to /dev/null: consumer "
        f"{mon['consumer_cpu_pct']:.2f}% + BPF {mon['bpf_cpu_pct']:.2f}% = "
        f"{result['text_pct_of_core']}% of a core (target <= 8%); lost "
        f"{mon['lost']:.0f}"
    )
    return 0
