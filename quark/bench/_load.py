"""The realistic process load the ebpf, storm and stall benchmarks share.

A spawner is a separate Python process that runs ``/bin/true`` with three
arguments (which it ignores) and the caller's whole environment, as a shell
spawns a command: fork+exec (``posix_spawn``) then wait, at a fixed rate or
as fast as it can. It writes its elapsed time and the pids it spawned to a
file, read back with :func:`read_spawned`.

:class:`Tracker` follows which spawned processes the library delivered
complete (FORK, EXEC and EXIT seen), in arrays indexed by pid, so that the
bookkeeping costs little CPU and memory and pid reuse in a long run is
counted right: a process instance ends at its EXIT.
"""

from __future__ import annotations

import array
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from quark import EV, Event, Queue

__all__ = [
    "ARGV",
    "FULL",
    "SpawnResult",
    "Spawners",
    "Tracker",
    "drain",
    "env_bytes",
    "incomplete",
    "mapped_rss_kb",
    "proc_cpu",
    "read_spawned",
    "self_status_kb",
    "spawn",
    "status_kb",
]

# /bin/true ignores its arguments (GNU true only reads a lone --help or
# --version): three of them, as an everyday command line has.
ARGV = ("/bin/true", "--color=auto", "-la", "/home/user/src/project")

FULL = int(EV.FORK | EV.EXEC | EV.EXIT)
_EXIT = int(EV.EXIT)

SPAWNER = r"""
import os, sys, time
rate, seconds, count, out = float(sys.argv[1]), float(sys.argv[2]), \
    int(sys.argv[3]), sys.argv[4]
argv = sys.argv[5:]
env = dict(os.environ)
pids = []
start = time.monotonic()
end = start + seconds
i = 0
while True:
    if count and i >= count:
        break
    now = time.monotonic()
    if seconds and now >= end:
        break
    if rate:
        delay = start + i / rate - now
        if delay > 0:
            time.sleep(delay)
    pid = os.posix_spawn(argv[0], argv, env)
    os.waitpid(pid, 0)
    pids.append(pid)
    i += 1
elapsed = time.monotonic() - start
with open(out, "w") as f:
    f.write(f"{elapsed}\n")
    f.write("\n".join(map(str, pids)))
"""


def env_bytes(environ: Mapping[str, str]) -> int:
    """Size of an environment as execve copies it: ``K=V`` plus a NUL each."""
    return sum(
        len(k.encode()) + len(v.encode()) + 2 for k, v in environ.items()
    )


def spawn(
    out: str, *, rate: float = 0.0, seconds: float = 0.0, count: int = 0
) -> subprocess.Popen[bytes]:
    """Start a spawner writing to ``out``: ``rate`` per second (0: as fast
    as it can), until ``count`` processes (0: no limit) or ``seconds``
    (0: no limit) is reached; one of the two limits must be set."""
    if not count and not seconds:
        raise ValueError("spawn: set count or seconds")
    return subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(rate), str(seconds), str(count),
         out, *ARGV],
    )  # fmt: skip


class SpawnResult:
    """What a spawner wrote: its elapsed seconds and the pids it spawned."""

    def __init__(self, elapsed: float, pids: list[int]) -> None:
        self.elapsed = elapsed
        self.pids = pids


def read_spawned(path: str) -> SpawnResult:
    with open(path) as f:
        elapsed = float(f.readline())
        pids = [int(x) for x in f.read().split()]
    return SpawnResult(elapsed, pids)


def _pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


class Tracker:
    """Counts, per pid, the process instances whose parent is one of
    ``parents`` and that were delivered with FORK, EXEC and EXIT.

    Flags gather per pid until its EXIT, which closes the instance."""

    def __init__(self, parents: Iterable[int] = (), pid_max: int = 0) -> None:
        size = (pid_max or _pid_max()) + 1
        self.parents = set(parents)
        self.flags = bytearray(size)  # FORK|EXEC|EXIT fit in a byte
        self.complete = array.array("I", bytes(4 * size))
        self.delivered = 0

    def add(self, ev: Event) -> None:
        self.delivered += 1
        p = ev.process
        if p is None or p.ppid not in self.parents:
            return
        pid = p.pid
        # plain ints: an IntFlag's & builds a member (enum's __call__),
        # which cost this bookkeeping 5% of the library phase's CPU
        events = int(ev.events)
        flags = self.flags[pid] | (events & FULL)
        if events & _EXIT:
            if flags == FULL:
                self.complete[pid] += 1
            flags = 0
        self.flags[pid] = flags


def incomplete(
    complete: Mapping[int, int] | array.array[int], pids: Iterable[int]
) -> int:
    """How many of the spawned ``pids`` (a pid once per instance) were not
    seen complete: per pid, the instances spawned beyond those seen."""
    return sum(max(0, n - complete[pid]) for pid, n in Counter(pids).items())


def drain(qq: Queue, tracker: Tracker, quiet: float = 2.0) -> None:
    """Read until nothing has come for ``quiet`` seconds (the hold time
    keeps the last events a while)."""
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        ev = qq.get_event()
        if ev is None:
            qq.block(0.1)
            continue
        tracker.add(ev)
        last = time.monotonic()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user+system) a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def status_kb(text: str, key: str) -> int:
    """A ``kB`` figure (``VmHWM``, ``VmRSS``) from /proc/PID/status text."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0])
    raise KeyError(key)


def self_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return status_kb(f.read(), key)


def mapped_rss_kb(smaps: str, name: str) -> int:
    """The resident kB of the mappings of ``name`` in /proc/PID/smaps text
    (``anon_inode:bpf-map``: the BPF ring buffer, mapped whole at open)."""
    total, inside = 0, False
    for line in smaps.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            inside = line.rstrip().endswith(name)  # a mapping's first line
        elif inside and head == "Rss:":
            total += int(rest.split()[0])
    return total


class Spawners:
    """Spawners started together, one per ``loads`` entry (:func:`spawn`'s
    keywords), each writing to a temporary file that ``stack`` removes;
    their pids are the ``tracker``'s parents (when there is one)."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        tracker: Tracker | None,
        loads: Iterable[Mapping[str, float]],
    ) -> None:
        loads = list(loads)
        self._outs = [
            stack.enter_context(tempfile.NamedTemporaryFile("r")).name  # noqa: SIM115
            for _ in loads
        ]
        self.procs = [
            spawn(out, **kw)  # type: ignore[arg-type]
            for out, kw in zip(self._outs, loads, strict=True)
        ]
        if tracker is not None:
            tracker.parents.update(p.pid for p in self.procs)

    def ended(self) -> bool:
        return all(p.poll() is not None for p in self.procs)

    def deliver(self, qq: Queue, tracker: Tracker) -> None:
        """Read every event into ``tracker`` until the spawners have
        ended (then :func:`drain` the rest)."""
        while True:
            ev = qq.get_event()
            if ev is not None:
                tracker.add(ev)
                continue
            if self.ended():
                return
            qq.block()

    def results(self) -> list[SpawnResult]:
        """What each spawner wrote (call once they have ended)."""
        return [read_spawned(out) for out in self._outs]
