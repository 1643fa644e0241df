"""Repair after loss: the plan (pure), the engine's part, and the check of
the cache against the real /proc (quark.repair)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from quark import procfs
from quark.engine import Engine
from quark.engine.repair import plan
from quark.raw.types import RawEvent, RawKind, RawTask, Seed
from quark.repair import RECHECKS, Repair, listed_starts, stale

TICK = 10_000_000
HZ = procfs.clock_ticks()
REAL_TICK = 1_000_000_000 // HZ


def _seed(pid: int, start: int | None) -> Seed:
    return Seed(pid, RawTask(start_time=start, ppid=1), exe=None, args=None)


# -- plan ---------------------------------------------------------------------
def test_plan_nothing_to_do_when_cache_matches() -> None:
    assert plan({1: 100, 2: 200}, {1: 100, 2: 200}, TICK) == ([], [])


def test_plan_gone_missing_and_reused() -> None:
    cached = {1: 100, 5: 500, 7: 700}
    listed = {1: 100, 7: 700 + 3 * TICK, 9: 900}
    gone, missing = plan(cached, listed, TICK)
    # 5 exited; 7 was reused (another start): gone, and its new one missing
    assert gone == [(5, 500), (7, 700)]
    assert missing == [7, 9]


def test_plan_same_start_within_a_tick() -> None:
    # the scrape's start is to the tick, the kernel's to the ns
    assert plan({3: 1_000}, {3: 1_000 + TICK - 1}, TICK) == ([], [])


def test_plan_unknown_start_is_the_listed_one() -> None:
    assert plan({4: None}, {4: 123}, TICK) == ([], [])
    assert plan({4: None}, {}, TICK) == ([(4, None)], [])


# -- the engine's part --------------------------------------------------------
def _engine() -> Engine:
    return Engine(hold_time=10, cache_grace_time=0, tick_ns=TICK)


def test_engine_repair_purges_adds_and_counts() -> None:
    e = _engine()
    e.seed([_seed(10, 1_000), _seed(11, 2_000)])
    purged, added = e.repair([(10, 1_000)], [_seed(12, 3_000)])
    assert (purged, added) == (1, 1)
    assert e.lookup(10) is None
    assert e.lookup(11) is not None
    p = e.lookup(12)
    assert p is not None and p.start_time == 3_000
    c = e.counters()
    assert (c["repairs"], c["repair_purged"], c["repair_added"]) == (1, 1, 1)


def test_engine_repair_leaves_a_reused_pid_alone() -> None:
    e = _engine()
    e.seed([_seed(10, 5_000)])  # pid 10 is another process by now
    assert e.repair([(10, 1_000)], []) == (0, 0)
    assert e.lookup(10) is not None


def test_engine_repair_keeps_a_known_process() -> None:
    e = _engine()
    e.seed([_seed(10, 1_000)])
    # found again with the same start (to the tick): nothing added
    assert e.repair([], [_seed(10, 1_000 + TICK // 2)]) == (0, 0)
    # a new start time: replaced (the pid was reused)
    assert e.repair([], [_seed(10, 9 * TICK)]) == (0, 1)
    p = e.lookup(10)
    assert p is not None and p.start_time == 9 * TICK


def test_engine_repair_leaves_pids_with_held_events() -> None:
    e = _engine()
    e.seed([_seed(10, 1_000)])
    task = RawTask(start_time=1_000, ppid=1, exit_code=0)
    e.push(RawEvent(RawKind.EXIT_THREAD, 50, 10, task=task))
    fork = RawTask(start_time=7_000, ppid=1)
    e.push(RawEvent(RawKind.WAKE_UP_NEW_TASK, 60, 20, task=fork))
    # its exit is still held: it will mark the process, not the repair
    assert e.repair([(10, 1_000)], [_seed(20, 7_000)]) == (0, 0)
    assert e.lookup(10) is not None
    assert e.lookup(20) is None  # its fork, held, will add it


def test_engine_repair_runs_poison_rules_on_added_only() -> None:
    judged: list[int] = []
    resets: list[bool] = []

    class Rules:
        def evaluate(self, ev: object, tag: int | None) -> tuple[int, int]:
            judged.append(ev.process.pid)  # type: ignore[attr-defined]
            return 0, 7

        def reset_counters(self, *, keep_poison: bool = False) -> None:
            resets.append(keep_poison)

    e = Engine(hold_time=10, tick_ns=TICK, ruleset=Rules())
    e.seed([_seed(1, 100)])
    judged.clear()
    resets.clear()
    e.repair([], [_seed(1, 100), _seed(2, 200)])
    assert judged == [2]  # only the added one
    assert resets == []  # a repair never resets the rules' counters
    p = e.lookup(2)
    assert p is not None and p.poison_tag == 7


# -- the check against the real /proc ----------------------------------------
@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _run(r: Repair, count: int = 1) -> None:
    """Drive the check to its end, as get_event would."""
    r.step(0, lambda: count, drained_at=1 << 62)
    for _ in range(10_000):
        if not r.busy:
            return
        r.step(0, lambda: count, drained_at=1 << 62)
    raise AssertionError("the repair never ended")


def _repair(e: Engine) -> Repair:
    return Repair(e, root="/proc", hz=HZ, tick_ns=REAL_TICK, max_env=4096)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_repair_reconciles_with_proc(
    child: subprocess.Popen[bytes],
) -> None:
    e = Engine(hold_time=10, tick_ns=REAL_TICK)
    seeds = procfs.scrape("/proc")
    me = os.getpid()
    # the child's fork was "lost": not cached; a dead process's exit was
    # "lost": still cached; our own pid cached with another start time
    seeds = [s for s in seeds if s.pid not in (child.pid, me)]
    dead = _dead_pid()
    seeds.append(_seed(dead, 5 * REAL_TICK))
    own = procfs.scrape_pid("/proc", me, max_env=0, hz=HZ)
    assert own is not None and own.task.start_time is not None
    seeds.append(_seed(me, own.task.start_time + 100 * REAL_TICK))
    e.seed(seeds)
    r = _repair(e)
    _run(r)
    assert e.lookup(dead) is None
    p = e.lookup(child.pid)
    assert p is not None and p.cmdline is not None
    assert "time.sleep(60)" in " ".join(p.cmdline)
    mine = e.lookup(me)
    assert mine is not None and mine.start_time == own.task.start_time
    c = e.counters()
    assert c["repairs"] == 1
    assert c["repair_purged"] >= 2  # the dead one and our old self
    assert c["repair_added"] >= 2  # the child and our new self
    # nothing stale is left: every live cached pid is in /proc, with the
    # start time /proc gives, and every process /proc lists is cached
    live = e.cached_starts()
    listed = listed_starts("/proc", HZ)
    assert plan(live, listed, REAL_TICK)[0] == []
    assert child.pid in live and dead not in live


def test_repair_is_skipped_while_nothing_is_lost() -> None:
    e = Engine(hold_time=10, tick_ns=REAL_TICK)
    e.seed([_seed(_dead_pid(), 5 * REAL_TICK)])
    r = _repair(e)
    r.step(0, lambda: 0, drained_at=1 << 62)
    assert not r.busy
    assert e.counters()["repairs"] == 0
    assert len(list(e.processes())) == 1


def test_repair_waits_for_the_ring_and_held_events() -> None:
    e = Engine(hold_time=10, tick_ns=REAL_TICK)
    dead = _dead_pid()
    e.seed([_seed(dead, 5 * REAL_TICK)])
    r = _repair(e)
    for _ in range(1000):
        # the ring was last read empty before the listing: records of the
        # processes listed may still be in it
        r.step(10, lambda: 3, drained_at=0)
    assert r.busy and e.counters()["repairs"] == 0
    _run(r, 3)
    assert e.lookup(dead) is None
    assert e.counters()["repairs"] == 1
    # it changed something: once more (a fork read after the check began
    # would have escaped it), until a check finds nothing to change (the
    # host's processes all cached, unless some start or end meanwhile)
    for _ in range(10):
        n = e.counters()["repairs"]
        _run(r, 3)
        if e.counters()["repairs"] == n:
            break
    else:
        raise AssertionError("every check found something to change")
    assert e.counters()["repairs"] >= 2
    # the counter has not moved since: no further check
    r.step(20, lambda: 3, drained_at=1 << 62)
    assert not r.busy


def test_repair_steps_are_bounded_in_time() -> None:
    # a clock that jumps 10 ms at every read: every step stops at the first
    # look at it, so the check spans many steps rather than one long call
    t = [0]

    def clock() -> int:
        t[0] += 10_000_000
        return t[0]

    e = Engine(hold_time=10, tick_ns=REAL_TICK)
    r = Repair(
        e, root="/proc", hz=HZ, tick_ns=REAL_TICK, max_env=0, clock=clock
    )
    steps = 0
    r.step(0, lambda: 1, drained_at=1 << 62)
    while r.busy:
        steps += 1
        r.step(0, lambda: 1, drained_at=1 << 62)
    n = len(listed_starts("/proc", HZ))
    assert steps >= n // 64 - 1
    assert e.counters()["repairs"] == 1


def test_rechecks_are_bounded() -> None:
    # a cache that every check finds wrong (a pid that is always missing,
    # put back after each check): a few checks again, then none until the
    # next loss
    e = Engine(hold_time=10, tick_ns=REAL_TICK)
    e.seed(procfs.scrape("/proc"))
    r = _repair(e)
    me = os.getpid()

    def forget_me() -> None:
        p = e.lookup(me)
        if p is not None:
            e.cache.purge(me, p.start_time)

    forget_me()
    _run(r, 1)
    for _ in range(10):
        forget_me()
        _run(r, 1)
    assert e.counters()["repairs"] == 1 + RECHECKS
    forget_me()
    _run(r, 2)  # a new loss: checked again
    assert e.counters()["repairs"] == 2 + RECHECKS


def test_stale_leaves_new_kernel_threads_aside() -> None:
    # kthreadd (pid 2) and its threads: never added by an event
    gone, missing = stale({}, "/proc", HZ)
    assert 2 not in missing
    assert os.getpid() in missing
    assert gone == []
