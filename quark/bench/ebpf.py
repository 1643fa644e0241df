"""``python -m quark.bench ebpf [--json] [--rate 1600] [--seconds 30]``.

A separate process spawns ``/bin/true`` (fork+exec+wait) at a fixed rate,
as a shell spawns a command: with the caller's whole environment and three
arguments (:mod:`quark.bench._load`). Measured in one run, in phases of
``--seconds`` each, on the same load:

1. the library alone (this process), delivering every event and printing
   nothing: its CPU time (user+sys) as % of one core, and the BPF programs'
   run time as % of one core (``kernel.bpf_stats_enabled`` is turned on for
   the run); the spawned processes seen with FORK, EXEC and EXIT;
2. ``quark-mon`` with its default text output to /dev/null;
3. ``quark-mon -E`` (ECS JSON) to /dev/null;
4. auditd with one execve rule (``-a always,exit -F arch=b64 -S execve``):
   the CPU of auditd and of the kernel's kauditd thread. auditd is installed
   with apt-get when missing (said on stderr), started for the phase when it
   is not running, and the audit rules, the enabled flag and the backlog
   limit are restored afterwards. Where auditd cannot run here, the output
   says why instead of a figure.

Each phase reports the events delivered (or raw events inserted) against the
processes spawned, and the lost counter. Targets: delivery <= 3% of a core,
BPF time included; text <= 8%; nothing lost. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import quark
from quark.bench._load import (
    ARGV,
    Tracker,
    drain,
    env_bytes,
    incomplete,
    proc_cpu,
    read_spawned,
    spawn,
)

__all__ = [
    "AUDIT_RULE",
    "main",
    "parse_audit_status",
    "parse_mon_stats",
    "prog_ids",
]

STATS = "/proc/sys/kernel/bpf_stats_enabled"

# The one rule of the auditd phase, as auditctl -l prints it.
AUDIT_RULE = ("-a", "always,exit", "-F", "arch=b64", "-S", "execve")
AUDIT_BACKLOG = 8192  # what Debian's audit.rules sets (-b 8192)

Figures = dict[str, float]


def _progs() -> dict[int, int]:
    """Every loaded BPF program's run time in ns, by id, from bpftool."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {p["id"]: p.get("run_time_ns", 0) for p in json.loads(out)}


def prog_ids(fdinfo: list[str]) -> set[int]:
    """The BPF program ids in a process's /proc/PID/fdinfo texts: its
    program fds and link fds name them (``prog_id:``)."""
    ids = set()
    for text in fdinfo:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "prog_id":
                ids.add(int(value))
    return ids


def _prog_ids_of(pid: int | str) -> set[int]:
    """The BPF programs process ``pid`` holds open: exactly quark's, even
    when other queues are open on a shared machine."""
    texts = []
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                texts.append(f.read())
        except OSError:  # closed meanwhile
            continue
    return prog_ids(texts)


def _opened(pid: int, settle: float = 0.5, timeout: float = 30) -> set[int]:
    """The programs of ``pid`` once it holds some and their number has
    stayed the same for ``settle`` seconds (an open loads them one by
    one)."""
    deadline = time.monotonic() + timeout
    ids: set[int] = set()
    stable = time.monotonic()
    while time.monotonic() < deadline:
        now = _prog_ids_of(pid)
        if now != ids:
            ids, stable = now, time.monotonic()
        elif ids and time.monotonic() - stable >= settle:
            return ids
        time.sleep(0.1)
    raise RuntimeError(f"process {pid} loaded no BPF program in {timeout}s")


def _bpf_run_ns(ids: set[int]) -> int:
    """Total run time of the programs ``ids``."""
    return sum(ns for i, ns in _progs().items() if i in ids)


def _phase_library(
    rate: float, seconds: float, backend: str = "ebpf"
) -> Figures:
    """The library alone on ``backend``; BPF run time only for EBPF."""
    with (
        tempfile.NamedTemporaryFile("r") as tmp,
        quark.Queue(backend=backend) as qq,
    ):
        ids = _prog_ids_of("self") if backend == "ebpf" else set()

        def bpf() -> int:
            return _bpf_run_ns(ids)

        tracker = Tracker()
        bpf0 = bpf()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        spawner = spawn(tmp.name, rate=rate, count=int(rate * seconds))
        tracker.parents.add(spawner.pid)
        while True:
            ev = qq.get_event()
            if ev is not None:
                tracker.add(ev)
                continue
            if spawner.poll() is not None:
                break
            qq.block()
        drain(qq, tracker)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        bpf1 = bpf()
        stats = qq.stats()
        spawned = read_spawned(tmp.name)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = len(spawned.pids)
    return {
        "spawned": n,
        "spawn_rate_per_s": n / spawned.elapsed,
        "seen_complete": n - incomplete(tracker.complete, spawned.pids),
        "events_delivered": tracker.delivered,
        "raw_inserted": stats.insertions,
        "lost": stats.lost,
        "consumer_cpu_pct": 100 * cpu / wall,
        "consumer_cpu_us_per_event": 1e6 * cpu / max(tracker.delivered, 1),
        "consumer_cpu_us_per_process": 1e6 * cpu / max(n, 1),
        "bpf_cpu_pct": 100 * (bpf1 - bpf0) / 1e9 / wall,
    }


def _phase_mon(rate: float, seconds: float, flags: list[str]) -> Figures:
    """quark-mon with ``flags``, its output to /dev/null."""
    with (
        tempfile.NamedTemporaryFile("r") as tmp,
        open(os.devnull, "w") as null,
    ):
        mon = subprocess.Popen(
            [sys.executable, "-m", "quark.cli.mon", "-b", "-s", *flags],
            stdout=null, stderr=subprocess.PIPE,
        )  # fmt: skip
        ids = _opened(mon.pid)
        bpf0 = _bpf_run_ns(ids)
        cpu0 = proc_cpu(mon.pid)
        t0 = time.monotonic()
        spawner = spawn(tmp.name, rate=rate, count=int(rate * seconds))
        spawner.wait()
        time.sleep(1.5)  # the hold time
        wall = time.monotonic() - t0
        cpu1 = proc_cpu(mon.pid)
        bpf1 = _bpf_run_ns(ids)
        mon.terminate()
        _, err = mon.communicate(timeout=10)
        spawned = read_spawned(tmp.name)
    st = parse_mon_stats(err.decode(errors="replace"))
    return {
        "spawned": len(spawned.pids),
        "spawn_rate_per_s": len(spawned.pids) / spawned.elapsed,
        "raw_inserted": st.get("inserts", -1),
        "lost": st.get("lost", -1),
        "consumer_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "bpf_cpu_pct": 100 * (bpf1 - bpf0) / 1e9 / wall,
    }


def parse_mon_stats(stderr: str) -> dict[str, int]:
    """The last statistics row quark-mon wrote on stderr, by column name
    (``inserts``, ``removes``, ``aggs``, ``non-aggs``, ``lost``, ...);
    empty if there is none."""
    lines = [ln.split() for ln in stderr.splitlines()]
    found: dict[str, int] = {}
    for head, row in itertools.pairwise(lines):
        if head[:1] == ["inserts"] and len(row) == len(head):
            found = {
                k: int(v)
                for k, v in zip(head, row, strict=True)
                if v.lstrip("-").isdigit()
            }
    return found


def parse_audit_status(text: str) -> dict[str, int]:
    """``auditctl -s`` output (``enabled 1``, ``pid 123``, ``lost 0``...)
    as numbers; lines whose value is not a number are left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _audit_status() -> dict[str, int]:
    r = _run(["auditctl", "-s"])
    if r.returncode != 0:
        raise _NoAudit(f"auditctl -s failed: {(r.stderr or r.stdout).strip()}")
    return parse_audit_status(r.stdout)


class _NoAudit(Exception):
    """auditd cannot run here; the message says why."""


def _install_auditd() -> None:
    if shutil.which("auditctl") and shutil.which("auditd"):
        return
    print(
        "quark.bench ebpf: auditd is not installed; installing it "
        "(apt-get install -y auditd)",
        file=sys.stderr,
    )
    r = subprocess.run(
        ["apt-get", "install", "-y", "auditd"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip
    if r.returncode != 0 or not shutil.which("auditctl"):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:]
        raise _NoAudit(f"apt-get install auditd failed: {' '.join(tail)}")


def _kthread(name: str) -> int | None:
    """The pid of kernel thread ``name``, if this pid namespace shows it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == name:
                    return int(entry)
        except OSError:
            continue
    return None


@contextlib.contextmanager
def _auditd_running() -> Iterator[int]:
    """auditd's pid: the running one, or one started for the block and
    stopped after it."""
    status = _audit_status()
    if status.get("pid", 0):
        yield status["pid"]
        return
    with tempfile.TemporaryFile("w+") as log:
        daemon = subprocess.Popen(
            ["auditd", "-n"], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 10
            while _audit_status().get("pid", 0) != daemon.pid:
                if daemon.poll() is not None:
                    log.seek(0)
                    why = " ".join(log.read().split())[-300:]
                    raise _NoAudit(f"auditd exited at start: {why}")
                if time.monotonic() > deadline:
                    raise _NoAudit("auditd did not register with the kernel")
                time.sleep(0.1)
            yield daemon.pid
        finally:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(timeout=10)


def _phase_auditd(rate: float, seconds: float) -> dict[str, object]:
    """auditd with one execve rule on the same load; the audit rules,
    enabled flag and backlog limit as they were afterwards."""
    try:
        _install_auditd()
        before = _run(["auditctl", "-l"]).stdout
        status0 = _audit_status()
        if status0.get("enabled") == 2:
            raise _NoAudit("the audit configuration is locked (enabled 2)")
        with _auditd_running() as pid:
            restored = True
            try:
                if status0.get("enabled") == 0:
                    _run(["auditctl", "-e", "1"])
                _run(["auditctl", "-b", str(AUDIT_BACKLOG)])
                add = _run(["auditctl", *AUDIT_RULE])
                if add.returncode != 0:
                    raise _NoAudit(f"auditctl {' '.join(AUDIT_RULE)}: "
                                   f"{add.stderr.strip()}")  # fmt: skip
                figures = _measure_auditd(pid, rate, seconds)
            finally:
                _run(["auditctl", "-d", *AUDIT_RULE[1:]])
                _run(["auditctl", "-b", str(status0.get("backlog_limit", 64))])
                if status0.get("enabled") == 0:
                    _run(["auditctl", "-e", "0"])
                restored = _run(["auditctl", "-l"]).stdout == before
    except _NoAudit as e:
        return {"unavailable": str(e)}
    return {**figures, "rules_restored": restored}


def _measure_auditd(pid: int, rate: float, seconds: float) -> Figures:
    kauditd = _kthread("kauditd")
    lost0 = _audit_status().get("lost", 0)
    with tempfile.NamedTemporaryFile("r") as tmp:
        cpu0 = proc_cpu(pid)
        k0 = proc_cpu(kauditd) if kauditd else 0.0
        t0 = time.monotonic()
        spawn(tmp.name, rate=rate, count=int(rate * seconds)).wait()
        time.sleep(1.5)  # let auditd write the tail
        wall = time.monotonic() - t0
        cpu1 = proc_cpu(pid)
        k1 = proc_cpu(kauditd) if kauditd else 0.0
        spawned = read_spawned(tmp.name)
    out = {
        "spawned": len(spawned.pids),
        "spawn_rate_per_s": len(spawned.pids) / spawned.elapsed,
        "lost": _audit_status().get("lost", 0) - lost0,
        "auditd_cpu_pct": 100 * (cpu1 - cpu0) / wall,
    }
    if kauditd:
        out["kauditd_cpu_pct"] = 100 * (k1 - k0) / wall
    return out


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


def _rounded(d: dict[str, object]) -> dict[str, object]:
    return {
        k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()
    }


def _total(d: Figures) -> float:
    return round(d["consumer_cpu_pct"] + d["bpf_cpu_pct"], 3)


def result(
    rate: float,
    seconds: float,
    lib: Figures,
    text: Figures,
    ecs: Figures,
    audit: dict[str, object],
) -> dict[str, object]:
    """The JSON document of a run, from its phases' figures."""
    return {
        "benchmark": "ebpf",
        "rate_target_per_s": rate,
        "seconds": seconds,
        "argv": list(ARGV),
        "env_bytes": env_bytes(os.environ),
        "library": _rounded(dict(lib)),
        "quark_mon_text": _rounded(dict(text)),
        "quark_mon_ecs": _rounded(dict(ecs)),
        "auditd": _rounded(audit),
        "delivery_pct_of_core": _total(lib),
        "text_pct_of_core": _total(text),
        "ecs_pct_of_core": _total(ecs),
        "targets": {"delivery_pct": 3.0, "text_pct": 8.0, "lost": 0},
    }


def _mon_line(name: str, m: Figures, target: str) -> str:
    return (
        f"{name}: consumer {m['consumer_cpu_pct']:.2f}% + BPF "
        f"{m['bpf_cpu_pct']:.2f}% = {_total(m)}% of a core{target}; raw "
        f"events {m['raw_inserted']:.0f} for {m['spawned']:.0f} processes; "
        f"lost {m['lost']:.0f}"
    )


def _audit_line(a: dict[str, object]) -> str:
    if "unavailable" in a:
        return f"auditd: not measured: {a['unavailable']}"
    line = f"auditd (one execve rule): auditd {a['auditd_cpu_pct']:.2f}%"
    if "kauditd_cpu_pct" in a:
        line += f" + kauditd {a['kauditd_cpu_pct']:.2f}%"
    return (
        f"{line} of a core; {a['spawned']} processes at "
        f"{a['spawn_rate_per_s']:.0f}/s; lost {a['lost']}; audit rules "
        f"{'restored' if a['rules_restored'] else 'NOT restored'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench ebpf")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rate", type=float, default=1600.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--no-auditd", action="store_true", help="skip the auditd phase"
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench ebpf: needs root", file=sys.stderr)
        return 2
    with bpf_stats():
        lib = _phase_library(args.rate, args.seconds)
        text = _phase_mon(args.rate, args.seconds, [])
        ecs = _phase_mon(args.rate, args.seconds, ["-E"])
    audit: dict[str, object] = (
        {"unavailable": "--no-auditd"}
        if args.no_auditd
        else _phase_auditd(args.rate, args.seconds)
    )
    res = result(args.rate, args.seconds, lib, text, ecs, audit)
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"spawned {lib['spawned']:.0f} processes at "
        f"{lib['spawn_rate_per_s']:.0f}/s (target {args.rate:.0f}/s): "
        f"{' '.join(ARGV)}, environment {res['env_bytes']} bytes\n"
        f"library alone: consumer {lib['consumer_cpu_pct']:.2f}% + BPF "
        f"{lib['bpf_cpu_pct']:.2f}% = {res['delivery_pct_of_core']}% of "
        f"a core (target <= 3%)\n"
        f"  {lib['events_delivered']:.0f} events delivered; seen with "
        f"FORK+EXEC+EXIT: {lib['seen_complete']:.0f} of "
        f"{lib['spawned']:.0f}; lost {lib['lost']:.0f}\n"
        + _mon_line("quark-mon text to /dev/null", text, " (target <= 8%)")
        + "\n"
        + _mon_line("quark-mon -E (ECS) to /dev/null", ecs, "")
        + "\n"
        + _audit_line(audit)
    )
    return 0
