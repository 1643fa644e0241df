"""``quark.Queue``: wires a backend to the engine; driven by the caller."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import select
from collections import deque
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

from quark import procfs as _procfs
from quark.backends import (
    KIND_BITS,
    KIND_FLAGS,
    Backend,
    get_backend_class,
)
from quark.engine import AggFn, Engine, Ruleset
from quark.errors import (
    BackendError,
    ConfigError,
    NotSupportedError,
    QuarkError,
)
from quark.events import (
    EV,
    QQ,
    Event,
    Process,
    QueueAttr,
    SockAddr,
    Socket,
    Stats,
)
from quark.raw.record import StreamWriter
from quark.raw.types import RawKind
from quark.repair import CHECK_NS, Repair
from quark.sys.ringbuf import ring_bytes

__all__ = ["Queue"]

log = logging.getLogger("quark")

_ATTR_FIELDS = {f.name for f in dataclasses.fields(QueueAttr)}
#: at most one "falling behind" warning per this many ns
_BEHIND_LOG_NS = 10_000_000_000
#: the longest wait (s) while a repair is under way
_REPAIR_WAIT = 0.02
_BACKEND_FLAGS = (("ebpf", QQ.EBPF), ("kprobe", QQ.KPROBE))


# a bypass event's members: every one None but these three
_EVENTS_AT, _TIME_AT, _BYPASS_AT = (
    Event.FIELDS.index(name) for name in ("events", "time", "bypass")
)
_NONE: list[object] = [None] * len(Event.FIELDS)


def _bypass_event(time_ns: int, data: bytes) -> Event:
    values = _NONE.copy()
    values[_EVENTS_AT] = EV.BYPASS
    values[_TIME_AT] = time_ns
    values[_BYPASS_AT] = data
    return Event._make(tuple(values))


def _backend_order(backend: str | None, flags: QQ) -> list[str]:
    if backend is not None and backend != "auto":
        return [backend]
    if backend == "auto":
        return [name for name, _ in _BACKEND_FLAGS]
    names = [name for name, bit in _BACKEND_FLAGS if flags & bit]
    if not names:
        raise ConfigError(
            "no backend: set QQ.EBPF and/or QQ.KPROBE in flags, or pass "
            "backend="
        )
    return names


# what QQ.BYPASS cannot go with (upstream's rule): it hands records over
# before any process event is made of them
_NOT_WITH_BYPASS = QQ.ENTRY_LEADER | QQ.MIN_AGG | QQ.THREAD_EVENTS


def _bypass_backends(
    names: list[str], backend: str | None, flags: QQ
) -> list[str]:
    """The backends a ``QQ.BYPASS`` queue may try: EBPF's alone."""
    clash = flags & _NOT_WITH_BYPASS
    if clash:
        raise ConfigError(
            f"QQ.BYPASS cannot go with QQ.{clash.name}: a bypass queue "
            "hands over raw records, with no process events to build"
        )
    if backend == "auto":
        return ["ebpf"]
    others = [n for n in names if n != "ebpf"]
    if others:
        raise ConfigError(
            f"QQ.BYPASS is the ebpf backend's only, not {others[0]}'s: the "
            "raw records are the BPF programs' own"
        )
    return names


def _refused(cls: type[Backend], flags: QQ) -> str | None:
    """Why backend ``cls`` cannot serve the kinds ``flags`` ask for."""
    missing = flags & KIND_FLAGS & ~cls.SERVES
    if not missing:
        return None
    return "; ".join(cls.why_not(k) for k in KIND_BITS if k & missing)


class Queue:
    """A queue of process events from one backend.

    ``Queue(attr=None, *, backend=None, record=None, ruleset=None,
    procfs="/proc", **overrides)``: ``overrides`` name :class:`QueueAttr`
    fields (``flags``, ``max_length``, ``cache_grace_time``, ``hold_time``,
    ``max_env``, ``ring_size``); any other keyword is an option of the
    backend (``path=`` for ``backend="replay"``; ``ignore_btf=True`` and
    ``ring_pages=N`` for ``backend="kprobe"``, and ``ignore_btf`` makes
    EBPF decline).
    ``backend`` is ``"auto"`` (EBPF, then KPROBE, logging the fallback), a
    backend name, or None to follow the backend bits of ``flags``.
    ``record=FILE`` writes everything the backend delivers (and the scraped
    processes) as a raw stream that ``backend="replay"`` reads.

    Opening starts the backend listening first, then scrapes /proc, so no
    process started in between is missed. With ``QQ.SOCK_CONN`` the TCP
    connections and listeners of /proc/net/tcp and tcp6 seed the socket
    cache the same way. After a loss (``Stats.lost`` moved) the process
    cache is checked against /proc again, a few ms per :meth:`get_event`
    (:mod:`quark.repair`; ``Stats.repairs``). Iterate with ``for ev in
    qq``, or ``async for ev in qq`` (:meth:`__aiter__`).

    Event kinds beyond process events are asked for with their ``QQ``
    bits; one that cannot be served here (by the backend, or on this
    kernel) raises :class:`quark.NotSupportedError` naming the kind and
    why, never a queue that silently lacks it. ``backend="auto"`` falls
    back to KPROBE only when KPROBE serves every kind asked for.

    ``probe_kinds=True`` (an option of the ebpf and kprobe backends) asks
    for every kind the backend serves, whatever the flags say, and opens
    without the ones this kernel refuses: :meth:`capabilities` then says
    for each kind bit whether this kernel can serve it and why not (what
    ``quark-mon --probe`` prints).

    ``fold_forks=True`` (an option of the ebpf backend) has the kernel
    keep a process's FORK record back for its EXEC or EXIT record to
    carry: two ring records per short process instead of three, the same
    events. Off by default: measured, it saves no consumer CPU (README,
    "Folding").

    ``QQ.BYPASS`` (EBPF only) hands over every ring record as it is, one
    event per record (``events == EV.BYPASS``, ``Event.bypass`` the
    record's bytes, ``Event.time`` its header's): no /proc scrape, no
    cache, no aggregation, nothing held. It raises
    :class:`quark.ConfigError` together with ``QQ.ENTRY_LEADER``,
    ``QQ.MIN_AGG``, ``QQ.THREAD_EVENTS``, a KPROBE backend asked for
    (``backend="kprobe"``, or ``QQ.KPROBE`` in the flags), a replay, a
    ruleset or ``record=``; ``backend="auto"`` then means EBPF.
    """

    def __init__(
        self,
        attr: QueueAttr | None = None,
        *,
        backend: str | None = None,
        record: str | os.PathLike[str] | None = None,
        ruleset: Ruleset | None = None,
        procfs: str = "/proc",
        **overrides: Any,
    ) -> None:
        self._backend: Backend | None = None
        self._recorder: StreamWriter | None = None
        self._closed = False
        self._scrape_skipped = 0
        self._held: deque[tuple[int, bytes]] = deque()
        self._repair: Repair | None = None
        self._next_check = 0  # when loss and ring use are next looked at
        self._drained_at = 0  # when the ring was last read empty
        self._behind_seen = 0
        self._behind_logged = -_BEHIND_LOG_NS
        attr = dataclasses.replace(attr) if attr is not None else QueueAttr()
        options = {}
        for key, value in overrides.items():
            if key in _ATTR_FIELDS:
                setattr(attr, key, value)
            else:
                options[key] = value
        try:
            attr.flags = QQ(attr.flags)
        except (TypeError, ValueError):
            raise ConfigError(f"invalid flags {attr.flags!r}") from None
        if ruleset is not None:
            attr.ruleset = ruleset
        ring_bytes(attr.ring_size, 1)  # a bad size is the caller's error
        self.attr = attr
        names = _backend_order(backend, attr.flags)
        self._bypass = bool(attr.flags & QQ.BYPASS)
        if self._bypass:
            names = _bypass_backends(names, backend, attr.flags)
            if record is not None:
                raise ConfigError(
                    "QQ.BYPASS: nothing to record (a bypass queue makes no "
                    "raw events)"
                )
            if attr.ruleset is not None:
                raise ConfigError(
                    "QQ.BYPASS: a ruleset has no events to judge (a bypass "
                    "queue makes none)"
                )
        # the slack block() adds to a due time: a tenth of the hold time,
        # at most 50 ms
        self._batch = min(attr.hold_time / 10_000, 0.05)
        flags = attr.flags
        self._engine = Engine(
            max_length=attr.max_length,
            hold_time=attr.hold_time,
            cache_grace_time=attr.cache_grace_time,
            max_env=attr.max_env,
            min_agg=bool(flags & QQ.MIN_AGG),
            thread_events=bool(flags & QQ.THREAD_EVENTS),
            entry_leaders=bool(flags & QQ.ENTRY_LEADER),
            ruleset=attr.ruleset,
            tick_ns=1_000_000_000 // _procfs.clock_ticks(),
        )
        try:
            self._backend = self._open_backend(names, attr, options)
            if record is not None:
                self._recorder = StreamWriter(
                    record,
                    backend=self._backend.name,
                    hold_time=attr.hold_time,
                )
            if self._bypass:
                # nothing scraped, nothing cached: records only
                self._poll = select.poll()
                self._poll.register(self._backend.fileno(), select.POLLIN)
                return
            seeds = self._backend.seed()
            if seeds is None:
                seeds, self._scrape_skipped = _procfs.scrape_counted(
                    procfs, max_env=attr.max_env
                )
            if self._recorder is not None:
                for s in seeds:
                    self._recorder.seed(s)
            self._engine.seed(seeds)
            if self._backend.live():
                hz = _procfs.clock_ticks()
                self._repair = Repair(
                    self._engine,
                    root=procfs,
                    hz=hz,
                    tick_ns=1_000_000_000 // hz,
                    max_env=attr.max_env,
                )
            if self._backend.kinds() & QQ.SOCK_CONN:
                socks = self._backend.seed_sockets()
                if socks is None:
                    socks = _procfs.scrape_sockets(
                        procfs, now=self._backend.now()
                    )
                if self._recorder is not None:
                    for sock in socks:
                        self._recorder.socket(sock)
                self._engine.seed_sockets(socks)
            if self._recorder is not None:
                # the state at open is in the file once open returns,
                # whatever happens to the disk or the process after it
                self._recorder.flush()
            self._poll = select.poll()
            self._poll.register(self._backend.fileno(), select.POLLIN)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_backend(
        names: list[str], attr: QueueAttr, options: dict[str, Any]
    ) -> Backend:
        failures: list[tuple[str, QuarkError]] = []
        # under probe_kinds the backend asks for what it serves and keeps
        # what it could not: nothing is refused here
        probing = bool(options.get("probe_kinds"))
        for i, name in enumerate(names):
            try:
                cls = get_backend_class(name)
            except ImportError as e:
                err: QuarkError = BackendError(
                    f"backend {name} is not available: {e}"
                )
                failures.append((name, err))
                continue
            refused = None if probing else _refused(cls, attr.flags)
            if refused:
                failures.append((name, NotSupportedError(refused)))
                continue
            try:
                backend = cls(attr, **options)
            except QuarkError as e:
                failures.append((name, e))
                if i + 1 < len(names):
                    log.warning(
                        "backend %s failed (%s); falling back to %s",
                        name,
                        e,
                        names[i + 1],
                    )
                continue
            if failures:
                log.warning(
                    "using backend %s after: %s",
                    name,
                    "; ".join(f"{n}: {e}" for n, e in failures),
                )
            else:
                log.info("using backend %s", name)
            return backend
        if len(failures) == 1:
            raise failures[0][1]
        if all(isinstance(e, NotSupportedError) for _, e in failures):
            raise NotSupportedError(
                "no backend can serve this queue: "
                + "; ".join(f"{n}: {e}" for n, e in failures),
                errno=failures[-1][1].errno,
            )
        raise BackendError(
            "all backends failed: "
            + "; ".join(f"{n}: {e}" for n, e in failures),
            errno=failures[-1][1].errno,
        )

    # -- the driving loop ---------------------------------------------------
    def _populate(self) -> int:
        backend = self._require_open()
        space = self._engine.space()
        if space <= 0:
            return 0
        raws = backend.read(space)
        if len(raws) < space:
            self._drained_at = backend.now()
        rec = self._recorder
        if rec is not None and raws:
            for raw in raws:
                rec.raw(raw)
            rec.lost(backend.lost())
        push = self._engine.push
        for raw in raws:
            push(raw)
        return len(raws)

    def get_event(self) -> Event | None:
        """The next event, or None when nothing is ready now."""
        backend = self._require_open()
        if self._bypass:
            return self._next_bypass(backend)
        engine = self._engine
        self._populate()
        now = backend.now()
        if now >= self._next_check:
            self._check(backend, now)
        elif self._repair is not None and self._repair.busy:
            self._repair.step(now, backend.lost, self._drained_at)
        # A full queue never stalls: from 90% of max_length nothing is held.
        return engine.pop(now)

    def _check(self, backend: Backend, now: int) -> None:
        """Every CHECK_NS: warn a consumer falling behind, and repair the
        cache after a loss (:mod:`quark.repair`)."""
        self._next_check = now + CHECK_NS
        size, high, behind = backend.ring_stats()
        if behind > self._behind_seen:
            if now - self._behind_logged >= _BEHIND_LOG_NS:
                log.warning(
                    "falling behind: the %s ring (%d KiB) was found over "
                    "three quarters full (%d times so far, at most %d KiB "
                    "waiting); read faster or raise QueueAttr.ring_size, "
                    "or records will be lost",
                    backend.name, size >> 10, behind, high >> 10,
                )  # fmt: skip
                self._behind_logged = now
            self._behind_seen = behind
        if self._repair is not None:
            self._repair.step(now, backend.lost, self._drained_at)

    def _next_bypass(self, backend: Backend) -> Event | None:
        held = self._held
        if not held:
            now = backend.now()
            if now >= self._next_check:
                self._check(backend, now)  # the warning (no cache to mend)
            held.extend(backend.read_bypass(self.attr.max_length))
            if not held:
                return None
        return _bypass_event(*held.popleft())

    def block(self, timeout: float | None = None) -> None:
        """Wait until :meth:`get_event` may have work, or ``timeout`` s."""
        wait = self._wait_time(timeout)
        if wait is not None and wait <= 0:
            return
        ms = None if wait is None else max(1, int(wait * 1000 + 0.999))
        try:
            self._poll.poll(ms)
        except InterruptedError:
            pass

    def _wait_time(self, timeout: float | None = None) -> float | None:
        """How long (s) the caller may wait for the fd before get_event may
        have work anyway (0: it has now; None: only the fd tells)."""
        backend = self._require_open()
        if self._held:
            return 0  # records read, not handed over yet
        now = backend.now()
        wait: float | None = timeout
        if self._repair is not None:
            # the loss counter is looked at every CHECK_NS; a repair under
            # way goes on a few ms per get_event: come back soon
            until = (
                _REPAIR_WAIT
                if self._repair.busy
                else max(0.0, (self._next_check - now) / 1e9)
            )
            wait = until if wait is None else min(wait, until)
        due = self._engine.next_due()
        if due is not None:
            if due <= now:
                return 0  # get_event has work now
            # Batch: events are held anyway, so wake a little after the
            # head is due and release everything due by then in one go,
            # rather than waking once per record.
            until_due = (due - now) / 1e9 + self._batch
            wait = until_due if wait is None else min(wait, until_due)
        gc = self._engine.next_collection()
        if gc is not None:
            until_gc = max(0.0, (gc - now) / 1e9)
            wait = until_gc if wait is None else min(wait, until_gc)
        interval = backend.poll_interval()
        if interval is not None:
            wait = interval if wait is None else min(wait, interval)
        return wait

    @property
    def exhausted(self) -> bool:
        """True when nothing more will ever come: the end of a replay, with
        every held event delivered. Never true for a live backend."""
        return self._require_open().exhausted() and self._engine.length == 0

    def __iter__(self) -> Iterator[Event]:
        """Events forever, blocking in between; a replay ends at its end."""
        while True:
            ev = self.get_event()
            if ev is not None:
                yield ev
                continue
            if self.exhausted:
                return
            self.block()

    def fileno(self) -> int:
        """A descriptor that becomes readable when get_event may have work."""
        return self._require_open().fileno()

    def __aiter__(self) -> AsyncIterator[Event]:
        """``async for ev in qq``: events forever (a replay ends at its
        end), from the running event loop's thread, no thread of its own.

        It waits with ``loop.add_reader(qq.fileno())``, and no longer than
        :meth:`block` would (events held for the hold time, a backend that
        is polled rather than woken, a repair under way), so that nothing
        due waits for another record. Other tasks run meanwhile; the queue
        must not be used from another thread.
        """
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        while True:
            ev = self.get_event()
            if ev is not None:
                yield ev
                continue
            if self.exhausted:
                return
            await self._readable(loop, self._wait_time())

    async def _readable(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None
    ) -> None:
        """Until the queue's fd is readable, or ``timeout`` s."""
        fd = self.fileno()
        woken = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(woken, timeout)
        except asyncio.TimeoutError:  # not the builtin before 3.11
            pass
        finally:
            loop.remove_reader(fd)

    # -- cache and stats ----------------------------------------------------
    def lookup(self, pid: int) -> Process | None:
        return self._engine.lookup(pid)

    def processes(self) -> Iterator[Process]:
        """Every cached process, by ascending pid."""
        return self._engine.processes()

    def stats(self) -> Stats:
        backend = self._require_open()
        c = self._engine.counters()
        size, high, behind = backend.ring_stats()
        return Stats(
            ring_size=size,
            ring_high_water=high,
            ring_behind=behind,
            lost=backend.lost(),
            decode_errors=backend.decode_errors(),
            backend=backend.name,
            skipped_probes=backend.skipped_probes(),
            scrape_skipped=self._scrape_skipped,
            **c,
        )

    def sockets(self) -> Iterator[Socket]:
        """Every cached TCP connection (``QQ.SOCK_CONN``), closed ones
        included until ``cache_grace_time`` has passed."""
        self._require_open()
        return self._engine.socket_list()

    def lookup_socket(
        self, local: SockAddr, remote: SockAddr
    ) -> Socket | None:
        """The cached connection between ``local`` and ``remote``."""
        self._require_open()
        if not isinstance(local, SockAddr) or not isinstance(remote, SockAddr):
            raise ConfigError("lookup_socket takes two quark.SockAddr")
        if local.family != remote.family:
            raise ConfigError(
                f"lookup_socket: {local} and {remote} are of different "
                "families"
            )
        return self._engine.lookup_socket(local, remote)

    def capabilities(self) -> dict[QQ, str | None]:
        """For every event kind bit: None when it is live on this queue,
        else why not (the backend does not serve it, this kernel refused
        it, or it was not asked for).

        On a queue opened with ``probe_kinds=True`` every kind the backend
        serves was asked for: the answer is what this kernel can serve.
        """
        backend = self._require_open()
        live = backend.kinds()
        refused = backend.refused_kinds()
        out: dict[QQ, str | None] = {}
        for kind in KIND_BITS:
            if kind & live:
                out[kind] = None
            elif kind in refused:
                out[kind] = refused[kind]
            elif not kind & backend.SERVES:
                out[kind] = type(backend).why_not(kind)
            else:
                out[kind] = f"not asked for (QQ.{kind.name} not in flags)"
        return out

    @property
    def backend(self) -> str:
        """The active backend's name."""
        return self._require_open().name

    def set_agg_matrix(
        self, parent: RawKind | int, child: RawKind | int, fn: AggFn | None
    ) -> None:
        """Set one cell of the aggregation matrix: ``fn(head, child) ->
        bool`` decides whether raw event ``child`` merges into ``head``
        (see :mod:`quark.engine.aggregate`); None turns the pair off."""
        self._engine.set_agg_matrix(parent, child, fn)

    # -- lifetime -----------------------------------------------------------
    def _require_open(self) -> Backend:
        if self._backend is None or self._closed:
            raise ConfigError("the queue is closed", errno=9)
        return self._backend

    def close(self) -> None:
        """Release every kernel resource. Idempotent."""
        if self._closed:
            return
        self._closed = True
        backend, self._backend = self._backend, None
        try:
            if backend is not None:
                backend.close()
        finally:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
