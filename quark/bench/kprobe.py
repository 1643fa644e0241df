"""``python -m quark.bench kprobe [--json] [--rate 100] [--seconds 20]``.

Run inside a guest, where both backends work (``python krun.py 6.1 python
-m quark.bench kprobe``): a separate process spawns ``/bin/true`` at a fixed
rate while this process delivers every event, first on the EBPF backend,
then on KPROBE, in the same run. Reported per backend: the consumer's CPU
(user+sys of this process) per delivered event and as % of one core, the
processes seen with FORK, EXEC and EXIT, and the lost counter; then the
KPROBE/EBPF ratio of CPU per event. The BPF programs' own run time is given
for EBPF; the kprobes' in-kernel cost is not measured (no counter exists
for it). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from quark.bench.ebpf import _phase_library, bpf_stats

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench kprobe")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench kprobe: needs root", file=sys.stderr)
        return 2
    with bpf_stats():
        runs = {
            be: _phase_library(args.rate, args.seconds, be)
            for be in ("ebpf", "kprobe")
        }
    e, k = runs["ebpf"], runs["kprobe"]
    ratio = k["consumer_cpu_us_per_event"] / max(
        e["consumer_cpu_us_per_event"], 1e-9
    )
    result = {
        "benchmark": "kprobe",
        "kernel": os.uname().release,
        "rate_target_per_s": args.rate,
        "seconds": args.seconds,
        "ebpf": {key: round(v, 3) for key, v in e.items()},
        "kprobe": {key: round(v, 3) for key, v in k.items()},
        "kprobe_over_ebpf_cpu_per_event": round(ratio, 3),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"kernel {result['kernel']}, /bin/true at {args.rate:.0f}/s")
    for name, r in runs.items():
        print(
            f"{name:<7} consumer {r['consumer_cpu_us_per_event']:.0f} us "
            f"per event, {r['consumer_cpu_pct']:.1f}% of a core"
            + (f" (+ BPF {r['bpf_cpu_pct']:.2f}%)" if name == "ebpf" else "")
            + f"; {r['events_delivered']:.0f} events, complete "
            f"{r['seen_complete']:.0f} of {r['spawned']:.0f}, lost "
            f"{r['lost']:.0f}"
        )
    print(f"kprobe / ebpf, consumer CPU per event: {ratio:.2f}x")
    return 0
