"""``python -m quark.bench btf [--json] [--file FILE] [--runs 5]``.

The time to load a kernel's BTF (default: the running kernel's) and
resolve every offset quark needs (quark.btf.TARGETS), next to the time of
``bpftool btf dump file FILE format raw`` in the same run (bpftool reads and
prints every type; quark indexes all and decodes only what the targets
touch). Goal: under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time

from quark.btf import load_btf_file

__all__ = ["main"]


def _ours(path: str) -> float:
    t0 = time.perf_counter()
    load_btf_file(path).offsets()
    return time.perf_counter() - t0


def _bpftool(path: str) -> float | None:
    tool = shutil.which("bpftool")
    if tool is None:
        return None
    t0 = time.perf_counter()
    subprocess.run(
        [tool, "btf", "dump", "file", path, "format", "raw"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench btf")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--file", default="/sys/kernel/btf/vmlinux")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    ours = min(_ours(args.file) for _ in range(args.runs))
    runs = [_bpftool(args.file) for _ in range(args.runs)]
    tool = None if None in runs else min(r for r in runs if r is not None)
    result = {
        "benchmark": "btf", "file": args.file,
        "load_and_resolve_ms": round(ours * 1000, 1),
        "bpftool_dump_raw_ms": None if tool is None else round(tool * 1000, 1),
        "goal_ms": 300,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        vs = (
            "" if tool is None else f"; bpftool btf dump: {tool * 1000:.0f} ms"
        )
        print(
            f"btf: load {args.file} and resolve every target: "
            f"{ours * 1000:.0f} ms (goal < 300 ms, best of {args.runs})"
            f"{vs}"
        )
    return 0
