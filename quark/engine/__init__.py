"""The engine: raw events in, ordered, aggregated, enriched events out.

Pure: no syscalls, no clock reads, no ctypes. ``now`` (ns on the raw events'
clock) is passed in by the caller.

Ordering uses a heap keyed by time (upstream's by-time tree) plus a per-pid,
time-ordered list (upstream's by-pid-time tree) for aggregation. Times are
unique in the queue: a colliding time is bumped by 1 ns until free, as
upstream does, except that nothing is ever dropped for it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import heapq
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from quark.engine.aggregate import (
    AggFn,
    Held,
    Matrix,
    agg_fork_exec,
    agg_mult,
    agg_single,
    default_matrix,
    min_matrix,
)
from quark.engine.cache import (
    EV_OF_KIND,
    PROCESS_KINDS,
    ProcessCache,
    decode_exit_status,
    entity_id,
)
from quark.engine.files import merge_files
from quark.engine.sockets import SocketCache
from quark.errors import ConfigError
from quark.events import (
    EV,
    ID_CHANGE,
    Event,
    File,
    ModuleLoad,
    Packet,
    Process,
    Ptrace,
    Shm,
    SockAddr,
    Socket,
    Tty,
)
from quark.raw.types import (
    RAW_NUM_TYPES,
    RawEvent,
    RawKind,
    RawPacket,
    RawSock,
    Seed,
    SockOp,
)

__all__ = [
    "AggFn",
    "Engine",
    "Held",
    "QueueFull",
    "Ruleset",
    "agg_fork_exec",
    "agg_mult",
    "agg_single",
    "decode_exit_status",
    "default_matrix",
    "entity_id",
    "min_matrix",
    "target_age_ms",
]

MS = 1_000_000
_new = object.__new__


class Ruleset(Protocol):
    """What the engine needs of a ruleset (see quark.rules)."""

    def evaluate(
        self, event: Event, poison_tag: int | None
    ) -> tuple[bool, int | None]: ...

    def reset_counters(self, *, keep_poison: bool = False) -> None: ...


class QueueFull(ConfigError):
    """push() beyond max_length: the caller must respect :meth:`space`."""


def target_age_ms(length: int, max_length: int, hold_time: int) -> int:
    """How long (ms) an event is held, from how full the queue is.

    Upstream's ``raw_event_target_age`` with its integer arithmetic: the full
    hold time below 10% of ``max_length``, no holding from 90%, and in between
    a line from just over 90% of the hold time down to about 10% of it.
    """
    m, h = max_length, hold_time
    if length < m // 10:
        return h
    if length >= (m // 10) * 9:
        return 0
    v = h - length // (m // h) + 1 if m > h else h - length * (h // m) + 1
    return v if v > 0 else 0


@functools.lru_cache(maxsize=8)
def _age_table(max_length: int, hold_time: int) -> tuple[int, ...]:
    """The target age in ns for every length: O(1) per pop. Shared by the
    engines of one configuration (10,001 entries by default: a tenth of a
    second in a TCG guest, paid at every open before)."""
    return tuple(
        target_age_ms(n, max_length, hold_time) * MS
        for n in range(max_length + 1)
    )


class Engine:
    """Orders, holds, aggregates and enriches raw events.

    - :meth:`push` a raw event (at most :meth:`space` of them);
    - :meth:`pop` with the current time to get the next due event;
    - :meth:`seed` the process cache with scraped processes.
    """

    def __init__(
        self,
        *,
        max_length: int = 10000,
        hold_time: int = 1000,
        cache_grace_time: int = 4000,
        max_env: int = 4096,
        min_agg: bool = False,
        thread_events: bool = False,
        entry_leaders: bool = False,
        ruleset: Ruleset | None = None,
        tick_ns: int = 10_000_000,
    ) -> None:
        if max_length <= 0:
            raise ConfigError(f"max_length must be > 0, not {max_length}")
        if hold_time < 10:
            raise ConfigError(f"hold_time must be >= 10 ms, not {hold_time}")
        if cache_grace_time < 0:
            raise ConfigError(
                f"cache_grace_time must be >= 0 ms, not {cache_grace_time}"
            )
        if max_env < 0:
            raise ConfigError(f"max_env must be >= 0, not {max_env}")
        self.max_length = max_length
        self.hold_time = hold_time
        self.thread_events = thread_events
        self.matrix: Matrix = min_matrix() if min_agg else default_matrix()
        self.cache = ProcessCache(
            grace_ns=cache_grace_time * MS,
            max_env=max_env,
            entry_leaders=entry_leaders,
            tick_ns=tick_ns,
        )
        self.sockets = SocketCache(cache_grace_time * MS)
        self.ruleset = ruleset
        # Held raw events by time, each time bumped to be unique among them;
        # None for one merged into an earlier event, whose time stays taken
        # until the heap gives it back. The heap and the pids' lists hold
        # times alone: ints compare several times faster than (time, raw)
        # tuples, and heappop was 8.5% of the consumer's CPU (py-spy).
        self._held: dict[int, RawEvent | None] = {}
        self._heap: list[int] = []
        self._by_pid: dict[int, list[int]] = {}
        self.insertions = 0
        self.removals = 0
        self.aggregations = 0
        self.non_aggregations = 0
        self.dropped_by_rules = 0
        self.late = 0
        self.repairs = 0
        self.repair_purged = 0
        self.repair_added = 0
        self._released = -1  # time of the last released head
        self._ages = self._age_table()

    # -- configuration -------------------------------------------------------
    def set_agg_matrix(
        self, parent: RawKind | int, child: RawKind | int, fn: AggFn | None
    ) -> None:
        """Set one cell; ``fn=None`` turns that pair off."""
        for k in (parent, child):
            if not 0 <= int(k) < RAW_NUM_TYPES:
                raise ConfigError(f"raw kind {k!r} out of range")
        if int(child) == RawKind.WAKE_UP_NEW_TASK and fn is not None:
            raise ConfigError(
                "a fork starts a process: it cannot merge into another event"
            )
        self.matrix[int(parent)][int(child)] = fn

    def _age_table(self) -> tuple[int, ...]:
        return _age_table(self.max_length, self.hold_time)

    # -- input ----------------------------------------------------------------
    @property
    def length(self) -> int:
        """Raw events held now."""
        return self.insertions - self.removals

    def space(self) -> int:
        return self.max_length - self.insertions + self.removals

    def push(self, raw: RawEvent) -> None:
        """Hold ``raw`` (which the engine never changes) until it is due."""
        if self.insertions - self.removals >= self.max_length:
            raise QueueFull(
                f"queue full ({self.max_length}): push at most space() events"
            )
        t = raw.time
        payload = raw.payload
        if isinstance(payload, RawSock) and payload.at_exit:
            t = self._before_exit(raw, t)
        if t <= self._released:
            # Older than an event already delivered (a ring that lagged
            # beyond the hold time): delivering it with its own time would
            # break the non-decreasing order users rely on. Stamp it just
            # after the last delivered one, and count it.
            t = self._released + 1
            self.late += 1
        held = self._held
        while t in held:
            t += 1
        # No object per held event beyond the raw event itself: one that
        # lives for the hold time makes the collector's passes longer
        # (python -m quark.bench engine delivered about 10% fewer raw
        # events/s with one).
        held[t] = raw
        heapq.heappush(self._heap, t)
        lst = self._by_pid.get(raw.pid)
        if lst is None:
            self._by_pid[raw.pid] = [t]
        elif lst[-1] < t:
            lst.append(t)
        else:
            bisect.insort(lst, t)
        self.insertions += 1

    def _before_exit(self, raw: RawEvent, t: int) -> int:
        """The time for a socket the kernel closed while its process's
        thread exited (``exit`` releases the files after the exit
        tracepoint fires): just before that exit, when it is still held,
        so that users see the close before the process is gone."""
        lst = self._by_pid.get(raw.pid)
        if not lst:
            return t
        held = self._held
        for et in reversed(lst):
            h = held[et]
            if et < t and h is not None and h.kind == RawKind.EXIT_THREAD:
                new = et - 1
                while new in held and new > self._released:
                    new -= 1
                return new if new > self._released else t
        return t

    def seed_sockets(self, sockets: list[Socket]) -> None:
        """Seed the socket cache with the connections scraped at open."""
        self.sockets.seed(sockets)

    def seed(self, seeds: list[Seed]) -> None:
        """Seed the cache; with a ruleset, poison rules run over every
        seeded process (a fake event with no bits), then the non-poison
        counters are reset, as upstream does."""
        self.cache.seed(seeds)
        rs = self.ruleset
        if rs is None:
            return
        self._poison(list(self.cache), rs)
        rs.reset_counters(keep_poison=True)

    def _poison(self, procs: list[Process], rs: Ruleset) -> None:
        """Run the poison rules over ``procs`` (a fake event, no bits)."""
        for proc in procs:
            fake = Event._make((EV(0), 0, proc, *_NO_PAYLOADS))
            _, tag = rs.evaluate(fake, proc.poison_tag)
            if tag != proc.poison_tag:
                self.cache.set_poison(proc.pid, tag)

    # -- repair after loss ---------------------------------------------------
    def cached_starts(self) -> dict[int, int | None]:
        """pid -> start time of every cached process not marked exited."""
        return self.cache.live()

    def oldest_held(self) -> int | None:
        """The time of the oldest raw event held, if any."""
        return self._head()

    def repair(
        self, gone: Iterable[tuple[int, int | None]], found: Iterable[Seed]
    ) -> tuple[int, int]:
        """Reconcile the cache with what /proc showed after a loss: forget
        the processes ``gone`` ((pid, start time) as cached when the check
        began: a pid since reused is left alone) and add the ``found`` ones
        (scraped; a pid cached with the same start time is kept). A pid with
        raw events still held is left to them. Returns (purged, added)."""
        held = self._by_pid
        purged = 0
        for pid, start in gone:
            if pid not in held and self.cache.purge(pid, start):
                purged += 1
        added = self.cache.seed([s for s in found if s.pid not in held])
        rs = self.ruleset
        if rs is not None and added:
            # the added ones are judged as the scraped ones were at open
            procs = (self.cache.lookup(pid) for pid in added)
            self._poison([p for p in procs if p is not None], rs)
        self.repairs += 1
        self.repair_purged += purged
        self.repair_added += len(added)
        return purged, len(added)

    # -- output ---------------------------------------------------------------
    def next_due(self) -> int | None:
        """The time at which the oldest queued event becomes due, if any."""
        t = self._head()
        if t is None:
            return None
        return t + self._ages[self.insertions - self.removals]

    def _head(self) -> int | None:
        """The time of the oldest live held event (merged ones dropped)."""
        heap, held = self._heap, self._held
        while heap and held[heap[0]] is None:
            del held[heapq.heappop(heap)]
        return heap[0] if heap else None

    def next_collection(self) -> int | None:
        """When a cache next purges an exited process or a closed socket,
        if one holds any."""
        a = self.cache.next_collection()
        b = self.sockets.next_collection()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def pop(self, now: int) -> Event | None:
        """The next due event, or None when nothing is due at ``now``."""
        self.cache.collect(now)
        self.sockets.collect(now)
        heap, held = self._heap, self._held
        while heap:
            t = heap[0]
            raw = held[t]
            if raw is None:  # merged: its time is free again
                heapq.heappop(heap)
                del held[t]
                continue
            if now - t < self._ages[self.insertions - self.removals]:
                return None
            heapq.heappop(heap)
            ev = self._release(t, raw, now)
            if ev is not None:
                return ev
        return None

    def drain(self, now: int) -> Iterator[Event]:
        while (ev := self.pop(now)) is not None:
            yield ev

    def _release(self, t: int, raw: RawEvent, now: int) -> Event | None:
        self._released = t
        held = self._held
        del held[t]
        pid = raw.pid
        lst = self._by_pid[pid]
        # raw is the oldest live event of all, hence first of its pid
        n = len(lst)
        i = 1
        agg: list[RawEvent] | None = None
        if n > 1:
            merging: list[RawEvent] = []
            row = self.matrix[raw.kind]
            head: Held | None = None
            while i < n:
                ct = lst[i]
                child = held[ct]
                assert child is not None  # a pid's list holds live ones
                fn = row[child.kind]
                if fn is None:
                    break
                if head is None:  # made only when a callback will see it,
                    # without a constructor call (once per released event)
                    head = _new(Held)
                    head.raw = raw
                    head.time = t
                    head.kind = raw.kind
                    head.pid = pid
                    head.agg = merging
                if not fn(head, child):
                    break
                merging.append(child)
                held[ct] = None  # its time is freed when the heap pops it
                i += 1
            agg = merging or None
        if i == n:
            del self._by_pid[pid]
        else:
            del lst[:i]
        self.removals += i
        if i > 1:
            self.aggregations += 1
        else:
            self.non_aggregations += 1
        return self._convert(raw, t, agg, now)

    def _convert(
        self, raw: RawEvent, t: int, agg: list[RawEvent] | None, now: int
    ) -> Event | None:
        proc: Process | None
        kind = raw.kind
        sock: Socket | None = None
        packet: Packet | None = None
        file: File | None = None
        shm: Shm | None = None
        tty: Tty | None = None
        ptrace: Ptrace | None = None
        module_load: ModuleLoad | None = None
        if kind in PROCESS_KINDS:
            if (
                kind == _CGROUP
                and not agg
                and self.cache.lookup(raw.pid) is None
            ):
                return None  # a move of a process not known: nothing to add
            proc, mask, idc = self.cache.apply(
                raw, t, agg, now, self.thread_events
            )
            if not mask:
                return None  # a cgroup move released alone: the cache has it
        else:
            idc = 0
            proc = self.cache.lookup(raw.pid)
            payload = raw.payload
            if kind == _SOCK_CONN:
                assert isinstance(payload, RawSock)
                sock = self.sockets.apply(raw.pid, t, payload)
                if sock is None:
                    return None  # a repeat, or never established
                mask = (
                    EV.SOCK_CONN_CLOSED
                    if payload.op is SockOp.CLOSE
                    else EV.SOCK_CONN_ESTABLISHED
                )
            elif kind == _FILE:
                assert isinstance(payload, File)
                file = payload
                if agg:
                    merged = [c.payload for c in agg]
                    file = merge_files(
                        payload, [f for f in merged if isinstance(f, File)]
                    )
                mask = EV.FILE
            elif kind == _SHM:
                assert isinstance(payload, Shm)
                shm = payload
                mask = EV.SHM
            elif kind == _TTY:
                assert isinstance(payload, Tty)
                tty = payload
                if agg:
                    tty = join_tty(payload, [c.payload for c in agg])
                mask = EV.TTY
            elif kind == _PTRACE:
                assert isinstance(payload, Ptrace)
                if payload.child_pid == raw.pid:
                    return None  # a tracer's own process (as upstream)
                child = self.cache.lookup(payload.child_pid)
                if child is not None and child.ppid == raw.pid:
                    return None  # a tracer's own child (as upstream)
                ptrace = payload
                mask = EV.PTRACE
            elif kind == _MODULE_LOAD:
                assert isinstance(payload, ModuleLoad)
                module_load = payload
                mask = EV.MODULE_LOAD
            elif kind == _PACKET:
                assert isinstance(payload, RawPacket)
                packet = Packet(
                    payload.direction,
                    payload.origin,
                    payload.orig_len,
                    payload.data,
                )
                mask = EV.PACKET
            else:
                mask = EV(EV_OF_KIND.get(kind, 0))
        event = Event._make(
            (
                mask, t, proc, ID_CHANGE(idc) if idc else None, sock,
                packet, file, shm, tty, ptrace, module_load, None,
            )
        )
        rs = self.ruleset
        if rs is not None:
            tag = proc.poison_tag if proc is not None else None
            deliver, new_tag = rs.evaluate(event, tag)
            if proc is not None and new_tag != tag:
                proc = self.cache.set_poison(proc.pid, new_tag)
                event = event._replace(process=proc)
            if not deliver:
                self.dropped_by_rules += 1
                return None
        return event

    # -- queries ------------------------------------------------------------
    def lookup(self, pid: int) -> Process | None:
        return self.cache.lookup(pid)

    def processes(self) -> Iterator[Process]:
        return iter(self.cache)

    def lookup_socket(
        self, local: SockAddr, remote: SockAddr
    ) -> Socket | None:
        return self.sockets.lookup(local, remote)

    def socket_list(self) -> Iterator[Socket]:
        return iter(self.sockets)

    def counters(self) -> dict[str, Any]:
        return {
            "insertions": self.insertions,
            "removals": self.removals,
            "aggregations": self.aggregations,
            "non_aggregations": self.non_aggregations,
            "garbage_collections": self.cache.garbage_collections,
            "length": self.length,
            "max_length": self.max_length,
            "cache_size": len(self.cache),
            "dropped_by_rules": self.dropped_by_rules,
            "late": self.late,
            "repairs": self.repairs,
            "repair_purged": self.repair_purged,
            "repair_added": self.repair_added,
        }


_SOCK_CONN = RawKind.SOCK_CONN
_PACKET = RawKind.PACKET
_FILE = RawKind.FILE
_SHM = RawKind.SHM
_TTY = RawKind.TTY
_CGROUP = RawKind.CGROUP
_PTRACE = RawKind.PTRACE
_MODULE_LOAD = RawKind.MODULE_LOAD
# an Event's members after process: none set (id_change ... bypass)
_NO_PAYLOADS = (None,) * (len(Event.FIELDS) - 3)


def join_tty(head: Tty, rest: list[object]) -> Tty:
    """A TTY event of joined writes: the first write's terminal, every
    write's bytes in order."""
    chunks = [head.data]
    truncated = head.truncated
    for p in rest:
        assert isinstance(p, Tty)
        chunks.append(p.data)
        truncated += p.truncated
    return dataclasses.replace(
        head, data=b"".join(chunks), truncated=truncated
    )
