"""The engine with containers: the first event of a process that a
runtime moved into a container's cgroup between fork and exec carries the
container, and QQ.ENTRY_LEADER marks it as the container's entry leader."""

from __future__ import annotations

import quark
from quark import EV
from quark.engine import Engine
from quark.raw.types import RawEvent, RawKind, RawTask, Seed

ID = "f6aa2e3fa923d32f4d7905727cf1011148e4da0fd101492e98a27e8c55c5c829"
SCOPE = f"/system.slice/docker-{ID}.scope"
HOST = "/system.slice/containerd.service"


def _events(e: Engine) -> list[quark.Event]:
    out = []
    while (ev := e.pop(1 << 62)) is not None:
        out.append(ev)
    return out


def _engine() -> Engine:
    e = Engine(hold_time=10, entry_leaders=True)
    e.seed([
        Seed(1, RawTask(ppid=0, sid=1, start_time=1, cgroup="/init.scope"),
             exe="/sbin/init"),
        Seed(50, RawTask(ppid=1, sid=50, start_time=2, cgroup=HOST),
             exe="/usr/bin/containerd-shim-runc-v2"),
        Seed(70, RawTask(ppid=1, sid=70, start_time=2, cgroup=HOST),
             exe="/usr/bin/dockerd"),
    ])  # fmt: skip
    return e


def test_first_event_and_entry_leader() -> None:
    e = _engine()
    # fork in the runtime's cgroup, exec after the move into the container's
    e.push(RawEvent(RawKind.WAKE_UP_NEW_TASK, 10, 60,
                    task=RawTask(ppid=70, sid=70, start_time=10,
                                 cgroup=HOST)))  # fmt: skip
    e.push(RawEvent(RawKind.EXEC, 11, 60,
                    task=RawTask(ppid=70, sid=60, cgroup=SCOPE),
                    exe="/usr/bin/sleep", args=("sleep", "9")))  # fmt: skip
    e.push(RawEvent(RawKind.WAKE_UP_NEW_TASK, 12, 61,
                    task=RawTask(ppid=60, sid=60, start_time=12,
                                 cgroup=SCOPE)))  # fmt: skip
    evs = [ev for ev in _events(e) if ev.process and ev.process.pid == 60]
    first = evs[0]
    assert first.events & EV.EXEC
    assert first.process is not None
    assert first.process.container == quark.Container(ID, "docker")
    p = e.lookup(60)
    assert p is not None and p.container == quark.Container(ID, "docker")
    # not a child of a shim, nor of runc or conmon: the cgroup says it
    assert (p.entry_leader, p.entry_leader_type) == (60, quark.ELT.CONTAINER)
    child = e.lookup(61)
    assert child is not None
    assert (child.entry_leader, child.entry_leader_type) == (
        60,
        quark.ELT.CONTAINER,
    )


def test_scraped_container_entry_leader() -> None:
    e = Engine(hold_time=10, entry_leaders=True)
    e.seed([
        Seed(1, RawTask(ppid=0, sid=1, start_time=1, cgroup="/init.scope"),
             exe="/sbin/init"),
        Seed(40, RawTask(ppid=1, sid=40, start_time=2, cgroup=SCOPE),
             exe="/usr/bin/nginx"),
        Seed(41, RawTask(ppid=40, sid=40, start_time=3, cgroup=SCOPE),
             exe="/usr/bin/nginx"),
    ])  # fmt: skip
    leader, worker = e.lookup(40), e.lookup(41)
    assert leader is not None and worker is not None
    assert leader.entry_leader_type == quark.ELT.CONTAINER
    assert (worker.entry_leader, worker.entry_leader_type) == (
        40,
        quark.ELT.CONTAINER,
    )
    assert (
        worker.container == leader.container == quark.Container(ID, "docker")
    )


def _move(time: int, pid: int, cgroup: str) -> RawEvent:
    """A cgroup move as the KPROBE backend reads it (the cgroup alone)."""
    return RawEvent(RawKind.CGROUP, time, pid, task=RawTask(cgroup=cgroup))


def _fork_exec(e: Engine, pid: int, t: int) -> None:
    e.push(RawEvent(RawKind.WAKE_UP_NEW_TASK, t, pid,
                    task=RawTask(ppid=70, sid=70, start_time=t,
                                 cgroup=HOST)))  # fmt: skip
    e.push(RawEvent(RawKind.EXEC, t + 1, pid,
                    task=RawTask(ppid=70, sid=pid, cgroup=HOST),
                    exe="/usr/bin/sleep", args=("sleep", "9")))  # fmt: skip


def test_a_move_after_the_exec_is_on_the_exec() -> None:
    """A runtime that moves its child after the exec: the move joins the
    held exec, which carries the container and is its entry leader; no
    event is made of the move itself."""
    for min_agg in (False, True):
        e = Engine(hold_time=10, entry_leaders=True, min_agg=min_agg)
        e.seed([
            Seed(1, RawTask(ppid=0, sid=1, start_time=1, cgroup="/init.scope"),
                 exe="/sbin/init"),
            Seed(70, RawTask(ppid=1, sid=70, start_time=2, cgroup=HOST),
                 exe="/usr/bin/dockerd"),
        ])  # fmt: skip
        _fork_exec(e, 60, 10)
        e.push(_move(12, 60, SCOPE))
        evs = _events(e)
        assert all(ev.events for ev in evs), evs
        (execd,) = [ev for ev in evs if ev.events & EV.EXEC]
        p = execd.process
        assert p is not None and p.cgroup == SCOPE, (min_agg, p)
        assert p.container == quark.Container(ID, "docker")
        assert (p.entry_leader, p.entry_leader_type) == (
            60,
            quark.ELT.CONTAINER,
        )
        assert len(evs) == (2 if min_agg else 1), evs


def test_a_move_released_alone_updates_the_cache_only() -> None:
    e = _engine()
    _fork_exec(e, 60, 10)
    assert len(_events(e)) == 1
    e.push(_move(100, 60, SCOPE))
    assert _events(e) == []  # no event of its own
    p = e.lookup(60)
    assert p is not None and p.container == quark.Container(ID, "docker")
    assert p.exe == "/usr/bin/sleep"  # nothing else changed
    # the process's next event has it
    e.push(RawEvent(RawKind.EXIT_THREAD, 200, 60,
                    task=RawTask(ppid=70, exit_code=0)))  # fmt: skip
    (ev,) = _events(e)
    assert ev.process is not None and ev.process.cgroup == SCOPE


def test_a_move_of_an_unknown_process_adds_nothing() -> None:
    e = _engine()
    e.push(_move(100, 999, SCOPE))
    assert _events(e) == []
    assert e.lookup(999) is None
