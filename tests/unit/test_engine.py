"""The engine's rules, one by one, and its invariants (hypothesis).

No root, no kernel, no sleeps: time is passed in.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quark
from quark import EV, ID_CHANGE
from quark.engine import (
    Engine,
    Held,
    QueueFull,
    agg_fork_exec,
    agg_mult,
    agg_single,
    decode_exit_status,
    default_matrix,
    entity_id,
    min_matrix,
    target_age_ms,
)
from quark.engine.aggregate import agg_file, agg_tty
from quark.raw.types import RawEvent, RawKind, RawTask, Seed

K = RawKind
MS = 1_000_000
FAR = 1 << 62


def fork(pid: int, t: int, ppid: int = 1, **task: object) -> RawEvent:
    return RawEvent(
        K.WAKE_UP_NEW_TASK,
        t,
        pid,
        task=RawTask(ppid=ppid, start_time=t, **task),
    )  # type: ignore[arg-type]


def execve(
    pid: int,
    t: int,
    exe: str = "/usr/bin/true",
    args: tuple[str, ...] = ("true",),
    **task: object,
) -> RawEvent:
    return RawEvent(
        K.EXEC,
        t,
        pid,
        task=RawTask(**task),
        exe=exe,  # type: ignore[arg-type]
        args=args,
    )


def exit_(
    pid: int, t: int, status: int = 0, tid: int | None = None
) -> RawEvent:
    return RawEvent(
        K.EXIT_THREAD,
        t,
        pid,
        tid,
        task=RawTask(exit_code=status, cwd="/not-from-exit"),
    )


def comm(pid: int, t: int, name: str) -> RawEvent:
    return RawEvent(K.COMM, t, pid, comm=name)


def idc(pid: int, t: int, mask: int, **task: object) -> RawEvent:
    return RawEvent(
        K.ID_CHANGE,
        t,
        pid,
        task=RawTask(**task),  # type: ignore[arg-type]
        id_change=mask,
    )


def drain(e: Engine, now: int = FAR) -> list[quark.Event]:
    return list(e.drain(now))


# -- ageing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "age"),
    [(0, 1000), (999, 1000), (1000, 901), (5000, 501), (8999, 102),
     (9000, 0), (10000, 0)],
)  # fmt: skip
def test_target_age_has_upstreams_numbers(length: int, age: int) -> None:
    assert target_age_ms(length, 10000, 1000) == age


@pytest.mark.parametrize(("m", "h"), [(1, 10), (5, 1000), (10, 10),
                                      (100, 5000), (7, 13)])  # fmt: skip
def test_target_age_odd_sizes_never_divide_by_zero(m: int, h: int) -> None:
    for n in range(m + 1):
        assert 0 <= target_age_ms(n, m, h) <= h


def test_events_are_held_for_the_hold_time() -> None:
    e = Engine(hold_time=100)
    e.push(comm(5, 10 * MS, "x"))
    assert e.pop(109 * MS) is None
    ev = e.pop(110 * MS)
    assert ev is not None and ev.events == EV.SETPROCTITLE


# -- ordering -----------------------------------------------------------------


def test_ordering_by_time_and_the_1ns_bump() -> None:
    e = Engine(hold_time=10)
    e.push(comm(1, 50, "b"))
    e.push(comm(2, 50, "c"))  # same time: bumped to 51
    e.push(comm(3, 10, "a"))
    out = drain(e)
    assert [ev.time for ev in out] == [10, 50, 51]
    assert [ev.process.comm for ev in out if ev.process] == ["a", "b", "c"]


def test_a_late_event_is_stamped_after_the_last_delivered() -> None:
    e = Engine(hold_time=10)
    e.push(comm(1, 100, "a"))
    assert drain(e)[0].time == 100
    e.push(comm(2, 40, "late"))
    ev = drain(e)[0]
    assert ev.time == 101 and e.late == 1


def test_the_engine_never_changes_its_input() -> None:
    """Raw events stay as the backend made them: the bumped time, the merged
    children and the dead mark are the engine's own (Held)."""
    raws = [comm(1, 50, "b"), comm(2, 50, "c"), fork(7, 60), execve(7, 61),
            exit_(7, 62)]  # fmt: skip
    before = [r.to_dict() for r in raws]
    e = Engine(hold_time=10)
    for r in raws:
        e.push(r)
    out = drain(e)
    assert [ev.time for ev in out] == [50, 51, 60]
    assert [r.to_dict() for r in raws] == before
    assert not hasattr(raws[2], "agg")


def test_a_callback_sees_the_held_head_and_child() -> None:
    seen = []

    def spy(head: Held, child: RawEvent) -> bool:
        seen.append((head.kind, head.pid, head.time, head.raw.exe,
                     [c.kind for c in head.agg or ()], child.kind,
                     child.task.exit_code))  # fmt: skip
        return True

    e = Engine(hold_time=10)
    e.set_agg_matrix(K.EXEC, K.EXIT_THREAD, spy)
    e.push(execve(7, 1, "/bin/x"))
    e.push(exit_(7, 2, 3 << 8))
    (ev,) = drain(e)
    assert ev.events == EV.EXEC | EV.EXIT
    assert seen == [(K.EXEC, 7, 1, "/bin/x", [], K.EXIT_THREAD, 3 << 8)]


def test_a_late_event_at_a_merged_childs_time_is_held() -> None:
    """A merged child's time stays taken until its heap entry is gone: two
    entries of one time would be compared by their nodes (a TypeError that
    used to crash the consumer)."""
    e = Engine(hold_time=10)
    e.push(fork(7, 1))
    e.push(execve(7, 2))
    assert e.pop(FAR) is not None  # fork+exec, the exec merged
    e.push(comm(8, 2, "late"))  # from a CPU whose ring lagged
    (ev,) = drain(e)
    assert ev.process is not None and ev.process.comm == "late"
    assert ev.time == 3  # bumped past the merged exec's time


def test_exited_processes_share_equal_values_and_keep_them() -> None:
    """An exited entry waits out the grace time holding values equal to
    other entries' (a record's integers are objects of their own): it
    keeps one of them, and every lookup still shows its own values."""
    e = Engine(hold_time=10)
    caps = [int("2199023255551") for _ in range(3)]  # equal, not the same
    assert caps[0] is not caps[1]
    for i, cap in enumerate(caps):
        pid = 20 + i
        e.push(fork(pid, 10 * i + 1, ppid=7, cap_bset=cap, uid=1000 + i))
        e.push(exit_(pid, 10 * i + 2))
    assert len(drain(e)) == 3
    procs = [e.lookup(20 + i) for i in range(3)]
    assert all(p is not None for p in procs)
    assert {p.cap_bset for p in procs if p} == {2199023255551}
    assert len({id(p.cap_bset) for p in procs if p}) == 1
    assert [p.uid for p in procs if p] == [1000, 1001, 1002]
    assert [p.pid for p in procs if p] == [20, 21, 22]


def test_the_queue_never_exceeds_max_length() -> None:
    e = Engine(max_length=3, hold_time=10)
    for i in range(3):
        e.push(comm(i + 1, i, "x"))
    assert e.space() == 0
    with pytest.raises(QueueFull):
        e.push(comm(9, 9, "x"))


# -- aggregation --------------------------------------------------------------


def test_fork_exec_exit_is_one_event() -> None:
    e = Engine(hold_time=10)
    for r in (fork(7, 1 * MS), execve(7, 2 * MS), exit_(7, 3 * MS, 7 << 8)):
        e.push(r)
    (ev,) = drain(e)
    assert ev.events == EV.FORK | EV.EXEC | EV.EXIT
    assert ev.time == 1 * MS
    assert ev.process is not None and ev.process.exit_code == 7
    assert (e.aggregations, e.non_aggregations, e.removals) == (1, 0, 3)


def test_min_agg_gives_three_events() -> None:
    e = Engine(hold_time=10, min_agg=True)
    for r in (fork(7, 1 * MS), execve(7, 2 * MS), exit_(7, 3 * MS)):
        e.push(r)
    assert [ev.events for ev in drain(e)] == [EV.FORK, EV.EXEC, EV.EXIT]


def test_two_execs_never_merge() -> None:
    e = Engine(hold_time=10)
    for r in (fork(7, 1), execve(7, 2, "/a"), execve(7, 3, "/b"), exit_(7, 4)):
        e.push(r)
    out = drain(e)
    assert [ev.events for ev in out] == [EV.FORK | EV.EXEC, EV.EXEC | EV.EXIT]
    assert [ev.process.exe for ev in out if ev.process] == ["/a", "/b"]


def test_an_exec_after_an_id_change_stays_separate() -> None:
    e = Engine(hold_time=10)
    for r in (fork(7, 1), idc(7, 2, 2, uid=0), execve(7, 3), exit_(7, 4)):
        e.push(r)
    out = drain(e)
    assert [ev.events for ev in out] == [EV.FORK | EV.ID_CHANGE,
                                         EV.EXEC | EV.EXIT]  # fmt: skip
    assert out[0].id_change == ID_CHANGE.SETUID


def connector(
    pid: int,
    t: int,
    exe: str | None = "/usr/bin/true",
    args: tuple[str, ...] | None = ("true",),
    **task: object,
) -> RawEvent:
    return RawEvent(
        K.EXEC_CONNECTOR, t, pid, task=RawTask(**task),  # type: ignore[arg-type]
        exe=exe, args=args,
    )  # fmt: skip


def test_kprobe_exec_halves_join_fork_and_exit() -> None:
    """KPROBE's tracepoint EXEC (the name as given) and EXEC_CONNECTOR (the
    resolved exe, argv, cwd) are one exec: a short-lived process is still
    one FORK|EXEC|EXIT event, with the connector's values."""
    e = Engine(hold_time=10)
    for r in (fork(7, 1), execve(7, 2, "/bin/sh", ("sh",)),
              connector(7, 3, "/usr/bin/dash", ("sh", "-c", "x"),
                        cwd="/tmp"),
              exit_(7, 4)):  # fmt: skip
        e.push(r)
    (ev,) = drain(e)
    assert ev.events == EV.FORK | EV.EXEC | EV.EXIT
    p = ev.process
    assert p is not None
    assert (p.exe, p.cmdline, p.cwd) == ("/usr/bin/dash", ["sh", "-c", "x"],
                                         "/tmp")  # fmt: skip


def test_kprobe_two_execs_keep_their_own_halves() -> None:
    e = Engine(hold_time=10)
    for r in (fork(7, 1), execve(7, 2, "/a"), connector(7, 3, "/a", ("a",)),
              execve(7, 4, "/b"), connector(7, 5, "/b", ("b",)),
              exit_(7, 6)):  # fmt: skip
        e.push(r)
    out = drain(e)
    assert [ev.events for ev in out] == [EV.FORK | EV.EXEC, EV.EXEC | EV.EXIT]
    assert [ev.process.cmdline for ev in out if ev.process] == [["a"], ["b"]]
    # a connector whose EXEC was lost still joins the fork, once
    e = Engine(hold_time=10)
    for r in (fork(8, 1), connector(8, 2, "/a", ("a",)),
              connector(8, 3, "/b", ("b",))):  # fmt: skip
        e.push(r)
    assert [ev.events for ev in drain(e)] == [EV.FORK | EV.EXEC, EV.EXEC]


def test_an_unknown_exe_or_cwd_replaces_the_inherited_one() -> None:
    """ "" says "seen, but could not be resolved": the parent's values must
    not pass for the child's; None leaves them."""
    e = Engine(hold_time=10)
    e.seed([Seed(1, RawTask(ppid=0, cwd="/root", start_time=1),
                 exe="/sbin/init", args=("init",))])  # fmt: skip
    e.push(fork(7, 5))
    e.push(execve(7, 6, "", ("x",), cwd=""))
    p = drain(e)[-1].process
    assert p is not None and (p.exe, p.cwd) == (None, None)
    e.push(fork(8, 7))
    e.push(execve(8, 8, None, ("y",)))  # type: ignore[arg-type]
    p = drain(e)[-1].process
    assert p is not None and (p.exe, p.cwd) == ("/sbin/init", "/root")


def test_matrix_cells_are_upstreams() -> None:
    d, m = default_matrix(), min_matrix()
    assert d[K.WAKE_UP_NEW_TASK][K.EXEC] is agg_fork_exec
    assert d[K.WAKE_UP_NEW_TASK][K.COMM] is agg_mult
    assert d[K.WAKE_UP_NEW_TASK][K.EXIT_THREAD] is agg_single
    assert d[K.EXEC][K.EXIT_THREAD] is agg_single
    assert d[K.EXEC][K.EXEC] is None
    assert d[K.COMM][K.COMM] is agg_mult
    assert d[K.ID_CHANGE][K.ID_CHANGE] is agg_mult
    assert m[K.WAKE_UP_NEW_TASK][K.EXEC] is None
    assert m[K.EXEC][K.EXEC_CONNECTOR] is agg_single
    assert d[K.FILE][K.FILE] is agg_file
    assert d[K.TTY][K.TTY] is agg_tty
    assert m[K.TTY][K.TTY] is None
    # upstream's 13 and 5 cells, and our cgroup moves' column in both: a
    # move joins any held process event but an exit, and is no head
    moves = {K.WAKE_UP_NEW_TASK, K.EXEC, K.COMM, K.ID_CHANGE}
    for mat in (d, m):
        assert {k for k in K if mat[k][K.CGROUP] is agg_mult} == moves
        assert all(c is None for c in mat[K.CGROUP])
    others = [k for k in K if k != K.CGROUP]
    assert sum(d[r][c] is not None for r in others for c in others) == 13
    assert sum(m[r][c] is not None for r in others for c in others) == 5


def test_set_agg_matrix() -> None:
    e = Engine(hold_time=10)
    e.set_agg_matrix(K.WAKE_UP_NEW_TASK, K.EXEC, None)
    for r in (fork(7, 1), execve(7, 2), exit_(7, 3)):
        e.push(r)
    assert [ev.events for ev in drain(e)] == [EV.FORK, EV.EXEC | EV.EXIT]
    with pytest.raises(quark.ConfigError):
        e.set_agg_matrix(K.EXEC, K.WAKE_UP_NEW_TASK, agg_mult)
    with pytest.raises(quark.ConfigError):
        e.set_agg_matrix(99, K.EXEC, None)


# -- the cache ----------------------------------------------------------------


def test_fork_inherits_from_the_parent_then_exec_replaces() -> None:
    e = Engine(hold_time=10)
    e.seed([Seed(1, RawTask(ppid=0, comm="init", cwd="/", cgroup="/s",
                            env=("A=1",), start_time=1),
                 exe="/sbin/init", args=("init",))])  # fmt: skip
    e.push(fork(7, 5))
    (ev,) = drain(e)
    p = ev.process
    assert p is not None
    assert (p.comm, p.exe, p.cmdline, p.cwd, p.cgroup, p.env) == (
        "init", "/sbin/init", ["init"], "/", "/s", ["A=1"])  # fmt: skip
    e.push(execve(7, 6, "/usr/bin/x", ("x", "-y"), comm="x"))
    p = drain(e)[0].process
    assert p is not None and (p.exe, p.cmdline, p.comm) == (
        "/usr/bin/x", ["x", "-y"], "x")  # fmt: skip


def test_exit_codes_keep_the_signal_and_cwd_not_from_exit() -> None:
    assert decode_exit_status(7 << 8) == 7
    assert decode_exit_status(9) == -9
    assert decode_exit_status(0x80 | 11) == -11  # core dumped
    e = Engine(hold_time=10)
    e.push(fork(7, 1, cwd="/here"))
    e.push(exit_(7, 2, 9))
    p = drain(e)[0].process
    assert p is not None and p.exit_code == -9 and p.cwd == "/here"


def test_start_time_is_immutable_once_set() -> None:
    e = Engine(hold_time=10)
    e.push(fork(7, 100))
    e.push(comm(7, 101, "a"))
    e.push(RawEvent(K.ID_CHANGE, 102, 7, task=RawTask(start_time=999)))
    drain(e)
    p = e.lookup(7)
    assert p is not None and p.start_time == 100


def test_env_is_cut_to_max_env_whole_entries() -> None:
    e = Engine(hold_time=10, max_env=12)
    e.push(execve(7, 1, env=("AAAA=1", "BB=2", "CCCCCC=3")))
    p = drain(e)[0].process
    assert p is not None and p.env == ["AAAA=1", "BB=2"]  # 7 + 5 bytes
    e0 = Engine(hold_time=10, max_env=0)
    e0.push(execve(7, 1, env=("A=1",)))
    p0 = drain(e0)[0].process
    assert p0 is not None and p0.env is None


def test_grace_time_then_gc() -> None:
    e = Engine(hold_time=10, cache_grace_time=100)
    e.push(fork(7, 1 * MS))
    e.push(exit_(7, 2 * MS))
    assert drain(e, 50 * MS)  # delivered at now=50 ms: marked then
    assert e.pop(149 * MS) is None and e.lookup(7) is not None
    assert e.pop(150 * MS) is None and e.lookup(7) is None
    assert e.cache.garbage_collections == 1


def test_pid_reuse_starts_a_new_process() -> None:
    e = Engine(hold_time=10)
    e.push(fork(7, 1, cwd="/old"))
    e.push(exit_(7, 2))
    e.push(fork(7, 3 * MS, ppid=1))
    out = drain(e)
    p = out[-1].process
    assert p is not None
    assert p.exit_time is None and p.exit_code is None
    assert p.start_time == 3 * MS


def test_entity_id_is_the_same_at_tick_and_ns_precision() -> None:
    a = entity_id(42, 1_234_567_891, 10_000_000)
    b = entity_id(42, 1_230_000_000, 10_000_000)
    assert a == b and len(a) == 16


def test_thread_exits_are_not_process_exits_with_thread_events() -> None:
    e = Engine(hold_time=10, thread_events=True, min_agg=True)
    e.push(fork(7, 1))
    e.push(exit_(7, 2, tid=8))  # a thread
    drain(e)
    p = e.lookup(7)
    assert p is not None and p.exit_time is None
    e.push(exit_(7, 3, 5 << 8))  # the process (tid == pid)
    drain(e)
    p = e.lookup(7)
    assert p is not None and p.exit_code == 5


def test_entry_leaders() -> None:
    e = Engine(hold_time=10, entry_leaders=True)
    e.seed([
        Seed(1, RawTask(ppid=0, sid=1, start_time=1), exe="/sbin/init"),
        Seed(50, RawTask(ppid=1, sid=50, start_time=2), exe="/usr/sbin/sshd"),
        Seed(60, RawTask(ppid=50, sid=60, tty_major=136, tty_minor=0,
                         start_time=3), exe="/usr/bin/bash"),
        Seed(61, RawTask(ppid=60, sid=60, start_time=4), exe="/usr/bin/vi"),
    ])  # fmt: skip
    assert e.lookup(1).entry_leader_type == quark.ELT.INIT  # type: ignore[union-attr]
    bash, vi = e.lookup(60), e.lookup(61)
    assert bash is not None and vi is not None
    assert (bash.entry_leader, bash.entry_leader_type) == (60, quark.ELT.SSHD)
    assert (vi.entry_leader, vi.entry_leader_type) == (60, quark.ELT.SSHD)


def test_counters() -> None:
    e = Engine(hold_time=10)
    for r in (fork(7, 1), execve(7, 2), comm(8, 3, "x")):
        e.push(r)
    drain(e)
    c = e.counters()
    assert (c["insertions"], c["removals"], c["aggregations"],
            c["non_aggregations"], c["length"]) == (3, 3, 1, 1, 0)  # fmt: skip


# -- invariants (hypothesis) --------------------------------------------------

KINDS = [K.WAKE_UP_NEW_TASK, K.EXEC, K.EXIT_THREAD, K.COMM, K.ID_CHANGE]


@st.composite
def raw_events(draw: st.DrawFn, max_size: int = 60) -> list[RawEvent]:
    n = draw(st.integers(0, max_size))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(KINDS))
        pid = draw(st.integers(1, 6))
        t = draw(st.integers(0, 50 * MS))
        task = RawTask(ppid=1, exit_code=draw(st.integers(0, 255 << 8)))
        out.append(
            RawEvent(
                kind,
                t,
                pid,
                task=task,
                comm="c",
                id_change=2 if kind == K.ID_CHANGE else 0,
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(raw_events(), st.integers(100, 1000))
def test_output_time_is_non_decreasing(
    raws: list[RawEvent], hold: int
) -> None:
    # arrivals in any order within the hold window (50 ms < hold)
    e = Engine(hold_time=hold)
    times = []
    for r in raws:
        e.push(r)
        times += [ev.time for ev in e.drain(r.time)]
    times += [ev.time for ev in drain(e)]
    assert times == sorted(times)


@settings(max_examples=200, deadline=None)
@given(raw_events(), st.integers(1, 20), st.booleans())
def test_nothing_is_lost_and_the_queue_is_bounded(
    raws: list[RawEvent], max_length: int, min_agg: bool
) -> None:
    e = Engine(max_length=max_length, hold_time=10, min_agg=min_agg)
    pushed = 0
    pending = list(raws)
    now = 0
    while pending or e.length:
        while pending and e.space() > 0:
            r = pending.pop(0)
            now = max(now, r.time)
            e.push(r)
            pushed += 1
            assert e.length <= max_length
        for _ in e.drain(now + 20 * MS):
            pass
        now += 20 * MS
    # every raw event was removed exactly once: delivered or merged
    assert e.removals == pushed == len(raws)
    assert e.aggregations + e.non_aggregations <= pushed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30, unique=True))
def test_triples_aggregate_and_min_agg_splits(pids: list[int]) -> None:
    for min_agg, per_pid in ((False, 1), (True, 3)):
        e = Engine(hold_time=100, min_agg=min_agg)
        t = 0
        for pid in pids:
            for r in (fork(pid, t), execve(pid, t + 1), exit_(pid, t + 2)):
                e.push(r)
            t += 10
        out = drain(e)
        assert len(out) == per_pid * len(pids)
        full = EV.FORK | EV.EXEC | EV.EXIT
        seen: dict[int, int] = {}
        for ev in out:
            assert ev.process is not None
            seen[ev.process.pid] = seen.get(ev.process.pid, 0) | ev.events
        assert all(v == full for v in seen.values())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(0, 3))
def test_execs_never_merge_and_id_changes_split(execs: int, ids: int) -> None:
    e = Engine(hold_time=100)
    t = 1
    e.push(fork(7, t))
    for _ in range(ids):
        t += 1
        e.push(idc(7, t, 2))
    for _ in range(execs):
        t += 1
        e.push(execve(7, t))
    out = drain(e)
    assert sum(1 for ev in out if ev.events & EV.EXEC) == execs
    assert all(bin(int(ev.events & EV.EXEC)).count("1") <= 1 for ev in out)
    if ids:
        assert not out[0].events & EV.EXEC


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000))
def test_purged_after_grace_plus_one_pop(grace: int) -> None:
    e = Engine(hold_time=10, cache_grace_time=grace)
    e.push(fork(7, 0))
    e.push(exit_(7, 1))
    marked = 20 * MS
    ev = e.pop(marked)  # the exit is applied (and marked) here
    assert ev is not None and ev.events == EV.FORK | EV.EXIT
    assert e.lookup(7) is not None
    if grace:
        e.pop(marked + grace * MS - 1)
        assert e.lookup(7) is not None
    e.pop(marked + grace * MS)
    assert e.lookup(7) is None
