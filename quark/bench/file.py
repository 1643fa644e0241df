"""``python -m quark.bench file [--json] [--files N] [--rounds R]``.

A load of N (default 2000) files handled the way programs handle files,
in P (default 2) worker processes (never this one: the queue does not
report its own process). In a temporary tree of nested directories, each
worker takes its share of the files and, one phase after the other:

1. creates each file with a few KB of content (``open(path, "xb")``);
2. rewrites each file ``--rewrites`` times (default 3), ``open(path,
   "wb")`` with new content of another size;
3. chmods every fourth file to 0600;
4. renames each file into another directory of the tree;
5. deletes each file.

Each of these is one file operation (a create or a rewrite is one open,
one write and one close). Sizes vary per file and per rewrite.

Measured in one run, alternating ``--rounds`` times (the machine is a
noisy VM: compare the ratios, not the absolute figures):

1. the load alone: file operations per second;
2. the same load with ``Queue(QQ.EBPF | QQ.FILE)`` open and this process
   draining it: file operations per second, this process's CPU time
   (user+sys, ``os.times``) per 1,000 file operations, and the raw records
   the engine took in per file operation (``Stats.insertions`` over the
   operations: it counts every raw record of the host in that time,
   the workers' process events and any other process's file events
   included, so it is an upper bound on the load's own); plus
   ``Stats.lost`` and ``Stats.decode_errors``.

Checked in every with-queue run: each file's CREATE (at its first path),
MOVE (old and new path) and REMOVE (at its new path) were each delivered
exactly once, for the pid of the worker that did them, and each chmodded
file's PERMISSIONS change was delivered for that pid. Exits 1 if anything
was missed or lost. Needs root.

Nothing is pinned: the load and the consumer share the machine's CPUs as
they would in production. The consumer's CPU includes its idle wait for
the hold time after the load (a few wake-ups), not the queue's opening.

The load generator (:func:`run_load`) and the check (:func:`verify`) can
be reused by tests, as ``quark.bench.net``'s are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median

import quark
from quark import QQ, FileChange, FileOp

__all__ = [
    "FileSpec",
    "Load",
    "Problem",
    "file_events",
    "main",
    "run_load",
    "verify",
]

# The nested directories of the tree: files are created in the SRC ones
# and moved into the DST ones.
SRC = ("src/a", "src/a/b", "src/c/d/e", "src/f")
DST = ("dst/x", "dst/x/y/z", "dst/w")

# A worker: says "ready", waits for a line on stdin, does its files phase
# by phase and writes "start end operations" (monotonic seconds) to a file.
# The paths are made as _paths() makes them.
WORKER = r"""
import os, sys, time
root, first, count, rewrites, out = sys.argv[1], int(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
src = sys.argv[6].split(",")
dst = sys.argv[7].split(",")
idx = range(first, first + count)
old = {i: f"{root}/{src[i % len(src)]}/f{i}.dat" for i in idx}
new = {i: f"{root}/{dst[i % len(dst)]}/g{i}.dat" for i in idx}
blob = bytes(range(256)) * 40

def content(i, r):
    n = 1024 + (i * 97 + r * 389) % 6144      # 1..7 KB
    return blob[(i + r) % 256:][:n]

print("ready", flush=True)
sys.stdin.readline()
ops = 0
start = time.monotonic()
for i in idx:
    with open(old[i], "xb") as f:
        f.write(content(i, 0))
    ops += 1
for r in range(1, rewrites + 1):
    for i in idx:
        with open(old[i], "wb") as f:
            f.write(content(i, r))
        ops += 1
for i in idx:
    if i % 4 == 0:
        os.chmod(old[i], 0o600)
        ops += 1
for i in idx:
    os.rename(old[i], new[i])
    ops += 1
for i in idx:
    os.unlink(new[i])
    ops += 1
end = time.monotonic()
with open(out, "w") as f:
    f.write(f"{start} {end} {ops}\n")
"""


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of the load: the worker ``pid`` created it at ``path``,
    chmodded it if ``chmod``, moved it to ``new_path`` and removed it
    there."""

    pid: int
    path: str
    new_path: str
    chmod: bool


@dataclass(frozen=True, slots=True)
class Load:
    """What :func:`run_load` did: its files, the tree's root, the file
    operations made, and the wall time the workers spent making them
    (first start to last end)."""

    root: str
    files: tuple[FileSpec, ...]
    operations: int
    seconds: float

    @property
    def rate(self) -> float:
        """File operations per second."""
        return self.operations / self.seconds


def _paths(root: str, i: int) -> tuple[str, str]:
    return (
        f"{root}/{SRC[i % len(SRC)]}/f{i}.dat",
        f"{root}/{DST[i % len(DST)]}/g{i}.dat",
    )


def _kill(procs: Iterable[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def run_load(
    n: int = 2000,
    parallel: int = 2,
    rewrites: int = 3,
    *,
    while_running: Callable[[], object] | None = None,
    timeout: float = 120.0,
) -> Load:
    """Create, rewrite ``rewrites`` times, chmod (one in four), move and
    delete ``n`` files in ``parallel`` worker processes, in a fresh
    temporary tree (removed afterwards; the directories are made by this
    process, before the load).

    The workers start first and wait; the timed part begins when they are
    all ready. Until every worker has exited, ``while_running()`` is called
    over and over (it should return within about 50 ms); without it, this
    process sleeps. Raises RuntimeError if a worker fails or ``timeout``
    passes."""
    if n < 1 or parallel < 1 or rewrites < 0:
        raise ValueError("n and parallel must be >= 1, rewrites >= 0")
    parallel = min(parallel, n)
    py = sys.executable
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="quark-bench-file-") as tmp:
        root = os.path.join(tmp, "tree")
        for d in SRC + DST:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        try:
            workers: list[tuple[subprocess.Popen[str], str, int, int]] = []
            first = 0
            for k in range(parallel):
                count = n // parallel + (1 if k < n % parallel else 0)
                out = os.path.join(tmp, f"worker{k}")
                # -B: no .pyc written, so the workers' only file
                # operations are the load's
                w = subprocess.Popen(
                    [py, "-B", "-c", WORKER, root, str(first), str(count),
                     str(rewrites), out, ",".join(SRC), ",".join(DST)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                procs.append(w)
                workers.append((w, out, first, count))
                first += count
            for w, *_ in workers:
                assert w.stdout is not None
                if w.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"worker {w.pid} did not start")
            for w, *_ in workers:
                assert w.stdin is not None
                w.stdin.write("go\n")
                w.stdin.close()
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the load took more than {timeout}s")
                if while_running is not None:
                    while_running()
                else:
                    time.sleep(0.01)
            bad = [p for p in procs if p.returncode != 0]
            if bad:
                raise RuntimeError(
                    "worker(s) failed: "
                    + ", ".join(f"{p.pid} rc={p.returncode}" for p in bad)
                )
            files: list[FileSpec] = []
            starts, ends = [], []
            ops = 0
            for w, out, first, count in workers:
                with open(out) as f:
                    start, end, k_ops = f.readline().split()
                starts.append(float(start))
                ends.append(float(end))
                ops += int(k_ops)
                for i in range(first, first + count):
                    old, new = _paths(root, i)
                    files.append(FileSpec(w.pid, old, new, i % 4 == 0))
        finally:
            _kill(procs)
            for p in procs:
                for stream in (p.stdin, p.stdout):
                    if stream is not None:
                        stream.close()
    return Load(root, tuple(files), ops, max(ends) - min(starts))


def file_events(events: Iterable[quark.Event], root: str) -> list[quark.Event]:
    """The FILE events whose path or old path is under ``root``."""
    top = root.rstrip("/") + "/"
    out = []
    for ev in events:
        f = ev.file
        if f is None:
            continue
        if (f.path or "").startswith(top) or (f.old_path or "").startswith(
            top
        ):
            out.append(ev)
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one file of the load (``path`` its first
    path), or, with ``path`` None, an event for a file the load never
    had."""

    path: str | None
    text: str

    def __str__(self) -> str:
        return self.text


def _one(
    name: str, pid: int, evs: list[quark.Event], problems: list[str]
) -> None:
    if len(evs) != 1:
        problems.append(f"{name}: delivered {len(evs)} times, expected 1")
    for ev in evs:
        if ev.pid != pid:
            problems.append(f"{name}: for pid {ev.pid}, expected {pid}")


def verify(load: Load, events: Iterable[quark.Event]) -> list[Problem]:
    """Every problem found, none when everything was seen: for each file
    of ``load``, exactly one event with CREATE at its first path, one with
    MOVE from its first path to its new one, and one with REMOVE at its
    new path, each for its worker's pid; for a chmodded file, a
    PERMISSIONS change at its first path for that pid. A CREATE, MOVE or
    REMOVE of a path under the tree that the load never had is a problem
    too."""
    creates: dict[str, list[quark.Event]] = defaultdict(list)
    moves: dict[tuple[str | None, str], list[quark.Event]] = defaultdict(list)
    removes: dict[str, list[quark.Event]] = defaultdict(list)
    perms: dict[str, list[quark.Event]] = defaultdict(list)
    for ev in file_events(events, load.root):
        f = ev.file
        assert f is not None
        path = f.path or "<unknown>"
        if f.op & FileOp.MOVE:
            moves[(f.old_path, path)].append(ev)
        if f.op & FileOp.CREATE:
            creates[path].append(ev)
        if f.op & FileOp.REMOVE:
            removes[path].append(ev)
        if f.change & FileChange.PERMISSIONS:
            perms[path].append(ev)
    problems: list[Problem] = []
    for spec in load.files:
        texts: list[str] = []
        _one(f"CREATE of {spec.path}", spec.pid, creates.pop(spec.path, []),
             texts)  # fmt: skip
        _one(
            f"MOVE of {spec.path} to {spec.new_path}",
            spec.pid,
            moves.pop((spec.path, spec.new_path), []),
            texts,
        )
        _one(f"REMOVE of {spec.new_path}", spec.pid,
             removes.pop(spec.new_path, []), texts)  # fmt: skip
        if spec.chmod:
            p = perms.pop(spec.path, [])
            if not any(ev.pid == spec.pid for ev in p):
                texts.append(
                    f"chmod of {spec.path}: no PERMISSIONS change for pid "
                    f"{spec.pid} ({len(p)} for other pids)"
                )
        problems += (Problem(spec.path, t) for t in texts)
    for path in sorted(creates):
        problems.append(Problem(None, f"CREATE of {path}, never made"))
    for old, new in sorted(moves, key=str):
        problems.append(Problem(None, f"MOVE of {old} to {new}, never made"))
    for path in sorted(removes):
        problems.append(Problem(None, f"REMOVE of {path}, never made"))
    return problems


# -- the benchmark ------------------------------------------------------------


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _without(n: int, parallel: int, rewrites: int) -> dict[str, float]:
    c0 = _cpu()
    load = run_load(n, parallel, rewrites)
    return {
        "ops_per_s": load.rate,
        "operations": load.operations,
        "self_cpu_s": _cpu() - c0,
    }


def _with(
    n: int, parallel: int, rewrites: int, hold_time: int
) -> tuple[dict[str, float], list[Problem]]:
    t0 = time.monotonic()
    with quark.Queue(flags=QQ.EBPF | QQ.FILE, hold_time=hold_time) as q:
        open_s = time.monotonic() - t0
        events: list[quark.Event] = []
        delivered = 0

        def drain() -> None:
            nonlocal delivered
            ev = q.get_event()
            if ev is None:
                q.block(0.05)
                return
            while ev is not None:
                delivered += 1
                if ev.file is not None:
                    events.append(ev)
                ev = q.get_event()

        ins0 = q.stats().insertions
        c0 = _cpu()
        load = run_load(n, parallel, rewrites, while_running=drain)
        # every event is in the ring by now: wait out the hold time
        quiet = time.monotonic() + hold_time / 1000 + 0.5
        while time.monotonic() < quiet:
            drain()
        cpu = _cpu() - c0
        stats = q.stats()
    problems = verify(load, events)
    missed = {p.path for p in problems if p.path is not None}
    ops = load.operations
    records = stats.insertions - ins0
    return {
        "ops_per_s": load.rate,
        "operations": ops,
        "consumer_cpu_s": cpu,
        "consumer_cpu_ms_per_1000_ops": 1e6 * cpu / ops,
        "raw_records": records,
        "raw_records_per_op": records / ops,
        "events_delivered": delivered,
        "file_events_of_load": len(file_events(events, load.root)),
        "missed_files": len(missed),
        "unmade": sum(1 for p in problems if p.path is None),
        "lost": stats.lost,
        "decode_errors": stats.decode_errors,
        "queue_open_s": open_s,
    }, problems


def _r(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench file")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--rewrites", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold-time", type=int, default=1000, help="ms")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench file: needs root", file=sys.stderr)
        return 2
    n, par, rw = args.files, args.parallel, args.rewrites
    run_load(min(n, 200), par, rw)  # warm-up, not measured
    offs: list[dict[str, float]] = []
    ons: list[dict[str, float]] = []
    problems: list[Problem] = []
    for _ in range(args.rounds):
        offs.append(_without(n, par, rw))
        on, p = _with(n, par, rw, args.hold_time)
        ons.append(on)
        problems += p
    ratios = [
        on["ops_per_s"] / off["ops_per_s"]
        for off, on in zip(offs, ons, strict=True)
    ]
    cpu = median([on["consumer_cpu_ms_per_1000_ops"] for on in ons])
    rpo = median([on["raw_records_per_op"] for on in ons])
    missed = sum(int(on["missed_files"]) for on in ons)
    lost = sum(int(on["lost"]) for on in ons)
    decode_errors = sum(int(on["decode_errors"]) for on in ons)
    ok = missed == 0 and lost == 0 and decode_errors == 0 and not problems
    result = {
        "benchmark": "file",
        "files": n,
        "parallel": par,
        "rewrites": rw,
        "operations_per_run": int(ons[0]["operations"]) if ons else 0,
        "hold_time_ms": args.hold_time,
        "rounds": [
            {"without": _r(off), "with": _r(on), "rate_ratio": round(r, 3)}
            for off, on, r in zip(offs, ons, ratios, strict=True)
        ],
        "median_rate_ratio": round(median(ratios), 3) if ratios else None,
        "median_consumer_cpu_ms_per_1000_ops": round(cpu, 2),
        "median_raw_records_per_op": round(rpo, 4),
        "missed_files": missed,
        "lost": lost,
        "decode_errors": decode_errors,
        "problems": [str(p) for p in problems[:20]],
        "ok": ok,
    }
    if args.json:
        print(json.dumps(result))
        return 0 if ok else 1
    print(
        f"{n} files ({result['operations_per_run']} file operations: "
        f"create, {rw} rewrites, chmod of 1 in 4, move, delete) in {par} "
        f"worker processes; {args.rounds} rounds alternating without/with "
        f"the queue (hold_time {args.hold_time} ms)"
    )
    for i, (off, on, r) in enumerate(zip(offs, ons, ratios, strict=True), 1):
        print(
            f"  round {i}: without {off['ops_per_s']:.0f} ops/s, with "
            f"{on['ops_per_s']:.0f} ops/s (ratio {r:.3f}); consumer "
            f"{on['consumer_cpu_ms_per_1000_ops']:.1f} ms CPU/1000 ops; "
            f"{on['raw_records_per_op']:.3f} raw records/op; missed "
            f"{on['missed_files']:.0f}, lost {on['lost']:.0f}"
        )
    print(
        f"median: with/without {result['median_rate_ratio']}, consumer "
        f"{result['median_consumer_cpu_ms_per_1000_ops']} ms CPU per 1000 "
        f"file operations, {result['median_raw_records_per_op']} raw "
        f"records per operation; missed {missed}, lost {lost}, decode "
        f"errors {decode_errors}: " + ("OK" if ok else "FAIL")
    )
    for problem in problems[:20]:
        print(f"  {problem}")
    return 0 if ok else 1
