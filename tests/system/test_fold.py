"""Folding on the host's EBPF backend (issue 15, item 2), the
``fold_forks=True`` option: a FORK record kept back in the kernel and
carried by the process's EXEC or EXIT record, so that a short process
sends two records, not three. What users rely on:

- every short process is still one FORK|EXEC|EXIT event with its exe,
  argv and cwd, and the forks are really folded (the programs' counters);
- a fork that no exec follows is delivered anyway, while its process
  lives, by the reader's sweep;
- a fork followed by another record of its process before the exec (an
  id change) is sent first, so its event shows the fork's own values
  (the parent's name), not the exec's;
- a process's fork is never delivered after its children's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import quark
from quark import EV
from quark.backends.ebpf import EbpfBackend

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root]


@pytest.fixture
def queue() -> Iterator[quark.Queue]:
    require("ebpf")
    with quark.Queue(backend="ebpf", fold_forks=True) as q:
        yield q


@pytest.fixture
def busy() -> Iterator[None]:
    """A shell starting a process every 10 ms: the reader always holds
    something, which is when forks are kept back."""
    p = subprocess.Popen(
        ["sh", "-c", "while :; do /bin/true; sleep 0.01; done"]
    )
    try:
        yield
    finally:
        p.kill()
        p.wait()


def _backend(q: quark.Queue) -> EbpfBackend:
    b = q._backend
    assert isinstance(b, EbpfBackend)
    return b


def _pump(q: quark.Queue, seconds: float) -> list[quark.Event]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ev = q.get_event()
        if ev is None:
            q.block(0.02)
            continue
        out.append(ev)
    return out


def _of(events: list[quark.Event], pid: int) -> list[quark.Event]:
    return [e for e in events if e.process and e.process.pid == pid]


def test_short_processes_fold_and_stay_whole(
    queue: quark.Queue, busy: None
) -> None:
    _pump(queue, 0.3)
    before = _backend(queue).fold_counts()
    pids = []
    for i in range(50):
        p = subprocess.Popen(["/bin/echo", "fold", str(i)], cwd="/tmp",
                             stdout=subprocess.DEVNULL)  # fmt: skip
        p.wait()
        pids.append(p.pid)
    events = _pump(queue, 2.0)
    after = _backend(queue).fold_counts()
    for i, pid in enumerate(pids):
        mine = _of(events, pid)
        assert len(mine) == 1, (pid, mine)
        ev = mine[0]
        assert ev.events == EV.FORK | EV.EXEC | EV.EXIT
        p = ev.process
        assert p is not None
        assert (p.exe, list(p.cmdline), p.cwd, p.comm) == (
            os.path.realpath("/bin/echo"),
            ["/bin/echo", "fold", str(i)],
            "/tmp",
            "echo",
        ), p
        assert p.ppid == os.getpid() and p.exit_code == 0
    folded = after["folded"] - before["folded"]
    # the test's own processes, and the shell's: most forks went folded
    assert folded >= 40, (before, after)
    assert after["deferred"] - before["deferred"] >= folded


def test_a_fork_without_exec_is_swept_while_it_lives(
    queue: quark.Queue, busy: None
) -> None:
    _pump(queue, 0.3)
    before = _backend(queue).fold_counts()
    kids: dict[int, float] = {}
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(4)
            os._exit(0)
        kids[pid] = time.monotonic()
    try:
        events = _pump(queue, 2.0)
        got = time.monotonic()
        for pid in kids:
            mine = _of(events, pid)
            assert mine and mine[0].events == EV.FORK, (pid, mine)
            p = mine[0].process
            assert p is not None
            assert p.ppid == os.getpid() and p.cwd == os.getcwd()
            assert p.exit_time is None  # delivered while it lives
        assert got - min(kids.values()) < 4
        assert _backend(queue).fold_counts()["swept"] > before["swept"]
    finally:
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def test_a_record_before_the_exec_sends_the_fork_first(
    queue: quark.Queue, busy: None
) -> None:
    """setgid(0) between fork and exec: the fork goes out before the
    ID_CHANGE record, so [FORK+ID_CHANGE] shows the parent's name and
    [EXEC] the program's, as without folding."""
    _pump(queue, 0.3)
    before = _backend(queue).fold_counts()
    with open("/proc/self/comm") as f:
        parent_comm = f.read().strip()
    pids = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(4243)
                os.execv("/bin/true", ["/bin/true"])
            finally:
                os._exit(127)
        pids.append(pid)
        os.waitpid(pid, 0)
    events = _pump(queue, 2.0)
    for pid in pids:
        mine = _of(events, pid)
        assert [e.events & (EV.FORK | EV.EXEC) for e in mine][:2] == [
            EV.FORK, EV.EXEC
        ], (pid, mine)
        assert mine[0].events & EV.ID_CHANGE
        assert mine[0].process is not None and mine[1].process is not None
        assert mine[0].process.comm == parent_comm
        assert mine[1].process.comm == "true"
    assert _backend(queue).fold_counts()["flushed"] > before["flushed"]


def test_a_fork_comes_before_its_childrens(
    queue: quark.Queue, busy: None
) -> None:
    """A child that forks before any exec of its own: its fork is sent
    before its child's record, and the events come in that order."""
    _pump(queue, 0.3)
    script = (
        "import os, subprocess\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    subprocess.run(['/bin/true'])\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script])
    p.wait()
    events = _pump(queue, 2.0)
    forks = {
        e.process.pid: i
        for i, e in enumerate(events)
        if e.process is not None and e.events & EV.FORK
    }
    kids = [e.process.pid for e in events if e.process is not None
            and e.process.ppid == p.pid and e.events & EV.FORK]  # fmt: skip
    assert len(kids) == 1, kids
    grandkids = [e.process.pid for e in events if e.process is not None
                 and e.process.ppid == kids[0]]  # fmt: skip
    assert grandkids, "the grandchild's events"
    assert forks[kids[0]] < forks[grandkids[0]]
    times = [e.time for e in events]
    assert times == sorted(times)
