"""Repair after loss: the process cache checked against /proc.

When the backend's loss counter moves, records are gone that the cache
needed: an exit (the process stays cached forever), a fork (a running
process is unknown). :class:`Repair` then checks the cache against /proc
and fixes it, in the caller's thread and a few milliseconds per
:meth:`Repair.step` (the queue calls it from ``get_event``), so that a check
never stalls the caller:

1. wait until what the ring held when the loss was seen is in the cache:
   the ring read empty since, and no raw event older than that held;
2. list /proc and read each process's start time (a few hundred pids per
   step), having noted what the cache held when the listing began;
3. wait likewise until the records of the listing's time are in the
   cache, so that no record in flight is taken for a loss;
4. scrape the missing processes (a few at a time) and hand both lists to
   the engine (:meth:`quark.engine.Engine.repair`), which leaves alone any
   pid with raw events still held or reused since (the start time tells);
5. check again if that changed anything, until a check finds nothing
   (:data:`RECHECKS` times at most).

Nothing of it runs while the counter stands still: the queue reads it
once every :data:`CHECK_NS`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from quark.engine import Engine
from quark.engine.repair import plan
from quark.procfs import parse_stat, scrape_pid
from quark.raw.types import Seed

__all__ = ["CHECK_NS", "Repair", "listed_starts", "stale"]

#: how often the loss counter is read (ns)
CHECK_NS = 250_000_000
#: how long one step may work on /proc (ns)
BUDGET_NS = 4_000_000

#: checks in a row, after the one a loss began, while each changes something
RECHECKS = 2

_IDLE, _WAITING, _LISTING, _SETTLING, _SCRAPING = range(5)
_PF_KTHREAD = 0x00200000  # task flags (field 9 of /proc/PID/stat)


def _stat_of(root: str, pid: int, hz: int) -> tuple[int, bool] | None:
    """The start time (ns since boot) of ``pid`` and whether it is a kernel
    thread, None if it is gone."""
    try:
        with open(f"{root}/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
        flags = int(text[text.rindex(")") + 2 :].split()[6])
        return parse_stat(text, hz)["start_time"], bool(flags & _PF_KTHREAD)
    except (OSError, ValueError, IndexError):
        return None


def _start_of(root: str, pid: int, hz: int) -> int | None:
    st = _stat_of(root, pid, hz)
    return None if st is None else st[0]


def _listed_pids(root: str) -> list[int]:
    with os.scandir(root) as it:
        return sorted(int(e.name) for e in it if e.name.isdigit())


def listed_starts(root: str, hz: int) -> dict[int, int]:
    """pid -> start time of every process /proc lists now (whole)."""
    out = {}
    for pid in _listed_pids(root):
        start = _start_of(root, pid, hz)
        if start is not None:
            out[pid] = start
    return out


def stale(
    cached: dict[int, int | None], root: str, hz: int
) -> tuple[list[int], list[int]]:
    """What a cache of ``cached`` (pid -> start time, the processes not
    marked exited) gets wrong against /proc now: the pids it holds that are
    gone (or reused), and the ones it lacks. Kernel threads started since
    the open are not lacked: no event ever adds them."""
    listed: dict[int, int] = {}
    kthreads = set()
    for pid in _listed_pids(root):
        st = _stat_of(root, pid, hz)
        if st is not None:
            listed[pid] = st[0]
            if st[1]:
                kthreads.add(pid)
    gone, missing = plan(cached, listed, 1_000_000_000 // hz)
    return [pid for pid, _ in gone], [p for p in missing if p not in kthreads]


class Repair:
    """Checks ``engine``'s process cache against ``root`` after losses."""

    def __init__(
        self,
        engine: Engine,
        *,
        root: str,
        hz: int,
        tick_ns: int,
        max_env: int,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._engine = engine
        self._root = root
        self._hz = hz
        self._tick_ns = tick_ns
        self._max_env = max_env
        self._clock = clock
        self._state = _IDLE
        self._seen = 0  # the loss count last acted on
        self._todo: list[int] = []
        self._listed: dict[int, int] = {}
        self._kthreads: set[int] = set()
        self._rechecks = 0
        self._cached: dict[int, int | None] = {}
        self._listed_at = 0
        self._seen_at = 0  # when the loss counter was seen to move
        self._gone: list[tuple[int, int | None]] = []
        self._found: list[Seed] = []

    @property
    def busy(self) -> bool:
        """True while a check is under way (the caller should come back
        soon rather than sleep long)."""
        return self._state != _IDLE

    def step(self, now: int, lost: Callable[[], int], drained_at: int) -> None:
        """Move the check on (idle: begin one if ``lost()``, the backend's
        loss counter, moved): ``now`` is the backend's clock,
        ``drained_at`` when (on that clock) the ring was last read empty."""
        if self._state == _IDLE:
            count = lost()
            if count <= self._seen:
                return
            if count > self._seen >= 0:
                self._rechecks = 0  # a new loss, not a check again
            self._seen = count
            self._seen_at = now
            self._state = _WAITING
        if self._state == _WAITING:
            if not self._caught_up(self._seen_at, drained_at):
                return
            self._begin()
        until = self._clock() + BUDGET_NS
        if self._state == _LISTING:
            self._list(until, now)
        if self._state == _SETTLING:
            if not self._caught_up(self._listed_at, drained_at):
                return
            self._settle()
        if self._state == _SCRAPING:
            self._scrape(until)

    def _caught_up(self, since: int, drained_at: int) -> bool:
        """True once the records written before ``since`` are in the cache:
        the ring was read empty after it, and none older is held."""
        if drained_at <= since:
            return False
        oldest = self._engine.oldest_held()
        return oldest is None or oldest > since

    def _begin(self) -> None:
        # what the cache held before the listing: a process that starts
        # after this is not cached here, so never taken for gone
        self._cached = self._engine.cached_starts()
        self._todo = _listed_pids(self._root)
        self._todo.reverse()  # popped from the end: ascending pids
        self._listed = {}
        self._kthreads = set()
        self._state = _LISTING

    def _list(self, until: int, now: int) -> None:
        todo, listed = self._todo, self._listed
        root, hz, clock = self._root, self._hz, self._clock
        while todo:
            pid = todo.pop()
            st = _stat_of(root, pid, hz)
            if st is not None:
                listed[pid] = st[0]
                if st[1]:
                    self._kthreads.add(pid)
            if not len(todo) & 63 and clock() >= until:
                return
        self._listed_at = now
        self._state = _SETTLING

    def _settle(self) -> None:
        gone, missing = plan(self._cached, self._listed, self._tick_ns)
        # a pid /proc did not list may still be there: a thread's (listed
        # under its process only), or one that started while listing
        self._gone = [
            (pid, start)
            for pid, start in gone
            if pid in self._listed
            or start is None
            or not self._same(_start_of(self._root, pid, self._hz), start)
        ]
        # no event adds a kernel thread: one missing is no loss's doing
        kthreads = self._kthreads
        self._todo = [pid for pid in reversed(missing) if pid not in kthreads]
        self._found = []
        self._cached = {}
        self._listed = {}
        self._kthreads = set()
        self._state = _SCRAPING

    def _same(self, a: int | None, b: int) -> bool:
        return a is not None and abs(a - b) < self._tick_ns

    def _scrape(self, until: int) -> None:
        todo, found = self._todo, self._found
        while todo:
            seed = scrape_pid(
                self._root, todo.pop(), max_env=self._max_env, hz=self._hz
            )
            if seed is not None:
                found.append(seed)
            if not len(todo) & 7 and self._clock() >= until:
                return
        purged, added = self._engine.repair(self._gone, found)
        self._gone, self._found = [], []
        self._state = _IDLE
        if (purged or added) and self._rechecks < RECHECKS:
            # records that were still in flight when this check began (a
            # fork read after it) escaped it: check once more, until a
            # check finds nothing to change (a few times at most: a host
            # whose processes come and go fast may never hold still)
            self._rechecks += 1
            self._seen = -1
