"""The process cache: what is known about every process, updated by events.

Each entry keeps its values in a list in :attr:`quark.Process.FIELDS` order,
so a snapshot is one ``tuple()`` and one object, built only when something
changed since the last one.
"""

from __future__ import annotations

import struct
from binascii import b2a_base64
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from quark.container import container_of
from quark.events import ELT, EV, Process
from quark.fields import Src
from quark.raw.types import RawEvent, RawKind, RawTask, Seed

__all__ = ["ProcessCache", "decode_exit_status", "entity_id"]

# Slots, from the table of process fields (quark.fields, on Process).
_F = {f.name: f.index for f in Process.TABLE}
_NFIELDS = len(Process.TABLE)


def _by_src(src: Src) -> tuple[int, ...]:
    return tuple(f.index for f in Process.TABLE if f.src is src)


def _only(src: Src) -> int:
    (index,) = _by_src(src)
    return index


_PID = _only(Src.PID)
_START = _only(Src.START)
_CWD = _only(Src.CWD)
_ENV = _only(Src.ENV)
_EXIT_CODE = _only(Src.EXIT_STATUS)
_EXIT_TIME = _only(Src.EXIT_TIME)
_PPID = _F["ppid"]
_ENTITY = _F["entity_id"]
_COMM = _F["comm"]
_EXE = _F["exe"]
_CMDLINE = _F["cmdline"]
_POISON = _F["poison_tag"]
_EL = _F["entry_leader"]
_ELT = _F["entry_leader_type"]
_CGROUP = _F["cgroup"]
_SID = _F["sid"]
_TTY_MAJ = _F["tty_major"]
_TTY_MIN = _F["tty_minor"]


def _copier(idx: tuple[int, ...]) -> Callable[[list[Any], RawTask], bool]:
    """``copy(vals, task)``: each field of ``idx`` that the task knows;
    True when it knew them all.

    Written as source and compiled once, as :mod:`dataclasses` does: it
    runs for every raw event, and unrolled it takes half the time of a
    loop over the fields (0.7 against 1.4 us for the 20 Src.TASK fields,
    timeit on the CI machine), where the engine spends about 13 us per
    raw event (python -m quark.bench engine).
    """
    lines = ["def copy(vals, task):", "    whole = True"]
    for i in idx:
        lines += [f"    v = task.{Process.TABLE[i].name}",
                  f"    if v is not None: vals[{i}] = v",
                  "    else: whole = False"]  # fmt: skip
    lines.append("    return whole")
    ns: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<cache copier>", "exec"), ns)
    copy: Callable[[list[Any], RawTask], bool] = ns["copy"]
    return copy


# Src.TASK fields, which every kernel task record carries, and
# Src.TASK_OPT ones, which some do: both copied whenever known.
_copy_plain = _copier(_by_src(Src.TASK))
_copy_task = _copier(_by_src(Src.TASK) + _by_src(Src.TASK_OPT))
_copy_opt = _copier(_by_src(Src.TASK_OPT))
# the task values an exited entry shares with others (see _share)
_SHARED = _by_src(Src.TASK) + _by_src(Src.TASK_OPT)
_SHARED_MAX = 1 << 16

# What a child inherits from its parent at fork: true of the child at that
# instant (same image, argv, environment memory, cwd and, barring
# CLONE_INTO_CGROUP, cgroup); the fork's own task data then overrides.
_INHERIT = tuple(f.index for f in Process.TABLE if f.decl.inherit)

EV_OF_KIND: dict[int, int] = {
    RawKind.WAKE_UP_NEW_TASK: int(EV.FORK),
    RawKind.EXEC: int(EV.EXEC),
    RawKind.EXEC_CONNECTOR: int(EV.EXEC),
    RawKind.EXIT_THREAD: int(EV.EXIT),
    RawKind.ID_CHANGE: int(EV.ID_CHANGE),
    RawKind.COMM: int(EV.SETPROCTITLE),
    RawKind.SOCK_CONN: int(EV.SOCK_CONN_ESTABLISHED),
    RawKind.PACKET: int(EV.PACKET),
    RawKind.FILE: int(EV.FILE),
    RawKind.PTRACE: int(EV.PTRACE),
    RawKind.MODULE_LOAD: int(EV.MODULE_LOAD),
    RawKind.SHM: int(EV.SHM),
    RawKind.TTY: int(EV.TTY),
    RawKind.GETPID: int(EV.GETPID),
}

_EV_CACHE: dict[int, EV] = {}
_EV_OF_KIND_INT = [EV_OF_KIND.get(k, 0) for k in range(len(RawKind))]
_K_FORK = int(RawKind.WAKE_UP_NEW_TASK)
_K_EXEC = int(RawKind.EXEC)
_K_EXEC_CONNECTOR = int(RawKind.EXEC_CONNECTOR)
_K_EXIT = int(RawKind.EXIT_THREAD)
_K_COMM = int(RawKind.COMM)
_K_CGROUP = int(RawKind.CGROUP)
# a move into a container's cgroup makes an entry leader as an exec does
_LEADER_KINDS = frozenset({_K_FORK, _K_EXEC, _K_EXEC_CONNECTOR, _K_CGROUP})

PROCESS_KINDS = frozenset(
    {
        RawKind.WAKE_UP_NEW_TASK,
        RawKind.EXEC,
        RawKind.EXEC_CONNECTOR,
        RawKind.EXIT_THREAD,
        RawKind.ID_CHANGE,
        RawKind.COMM,
        RawKind.GETPID,
        RawKind.CGROUP,  # no EV bit: it enriches the event it joins
    }
)


def decode_exit_status(status: int) -> int:
    """A raw wait status as :mod:`subprocess` reports it: the exit status,
    or ``-N`` when killed by signal N (upstream loses the signal)."""
    sig = status & 0x7F
    if sig:
        return -sig
    return (status >> 8) & 0xFF


_PACK_ID = struct.Struct("<IQ").pack


def entity_id(pid: int, start_time: int, tick_ns: int) -> str:
    """ECS ``process.entity_id``: base64 of ``le32(pid) || le64(start)``.

    The start time is truncated to clock ticks first, the precision /proc
    gives, so a process gets the same id whether it was first seen by an
    event or by the /proc scrape, across restarts of the agent.
    """
    start = start_time - start_time % tick_ns if tick_ns > 0 else start_time
    raw = _PACK_ID(pid & 0xFFFFFFFF, start & 0xFFFFFFFFFFFFFFFF)
    return b2a_base64(raw, newline=False).decode("ascii")


def truncate_env(env: tuple[str, ...], max_env: int) -> tuple[str, ...]:
    """Keep whole ``NAME=value`` entries while the NUL-separated size fits."""
    # Most environments are ASCII and fit: no encoding needed to know.
    chars = sum(map(len, env)) + len(env)
    if chars * 4 <= max_env or (
        chars <= max_env and all(map(str.isascii, env))
    ):
        return env
    out: list[str] = []
    used = 0
    for item in env:
        size = len(item.encode("utf-8", "surrogateescape")) + 1
        if used + size > max_env:
            break
        out.append(item)
        used += size
    return tuple(out)


class _Entry:
    __slots__ = ("gc", "snap", "vals")

    def __init__(self, pid: int) -> None:
        self.vals: list[Any] = [None] * _NFIELDS
        self.vals[_PID] = pid
        self.snap: Process | None = None
        self.gc: int | None = None  # time of the exit mark

    def snapshot(self) -> Process:
        snap = self.snap
        if snap is None:
            snap = self.snap = Process._make(tuple(self.vals))
        return snap


def _mark(e: _Entry) -> int:
    """The exit mark of an entry in the collection queue (always set)."""
    mark = e.gc
    assert mark is not None
    return mark


class ProcessCache:
    """Processes by pid, with grace-time garbage collection of exited ones."""

    def __init__(
        self,
        *,
        grace_ns: int,
        max_env: int,
        entry_leaders: bool = False,
        tick_ns: int = 10_000_000,
    ) -> None:
        self._procs: dict[int, _Entry] = {}
        # exited entries, by the time of their exit mark (Entry.gc)
        self._gc: deque[_Entry] = deque()
        self.grace_ns = grace_ns
        self.max_env = max_env
        self.entry_leaders = entry_leaders
        self.tick_ns = tick_ns
        self.garbage_collections = 0
        # the last environment cut to max_env, and what it was cut to: the
        # backends' decoders hand out one object per distinct environment
        self._env_in: tuple[str, ...] | None = None
        self._env_out: tuple[str, ...] = ()
        self._canon: dict[Any, Any] = {}  # value -> the one kept (_share)

    # -- queries ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._procs)

    def lookup(self, pid: int) -> Process | None:
        e = self._procs.get(pid)
        return None if e is None else e.snapshot()

    def __iter__(self) -> Iterator[Process]:
        for pid in sorted(self._procs):
            e = self._procs.get(pid)
            if e is not None:
                yield e.snapshot()

    def set_poison(self, pid: int, tag: int | None) -> Process | None:
        e = self._procs.get(pid)
        if e is None:
            return None
        if e.vals[_POISON] != tag:
            e.vals[_POISON] = tag
            e.snap = None
        return e.snapshot()

    # -- garbage collection -------------------------------------------------
    def collect(self, now: int) -> int:
        """Purge processes whose exit mark is ``grace_ns`` old or older."""
        gc = self._gc
        grace = self.grace_ns
        if not gc or now - _mark(gc[0]) < grace:
            return 0  # the common case: the engine asks at every pop
        n = 0
        procs = self._procs
        while gc and now - _mark(gc[0]) >= grace:
            entry = gc.popleft()
            pid = entry.vals[_PID]
            if procs.get(pid) is entry:
                del procs[pid]
                n += 1
        self.garbage_collections += n
        return n

    def next_collection(self) -> int | None:
        gc = self._gc
        return _mark(gc[0]) + self.grace_ns if gc else None

    # -- seeding -------------------------------------------------------------
    def seed(self, seeds: list[Seed]) -> list[int]:
        """Add scraped processes; a pid already known with the same start
        time (to the tick) is kept, one with another start time replaced.
        Returns the pids added or replaced."""
        added = []
        for s in seeds:
            old = self._procs.get(s.pid)
            start = s.task.start_time
            if old is not None and self._same_start(old, start):
                continue
            added.append(s.pid)
            e = _Entry(s.pid)
            self._apply_task(e, s.task, exiting=False)
            if s.exe is not None:
                e.vals[_EXE] = s.exe
            if s.args is not None:
                e.vals[_CMDLINE] = tuple(s.args)
            self._procs[s.pid] = e
        if self.entry_leaders and added:
            self._entry_leaders_from_roots()
        return added

    # -- repair after loss ---------------------------------------------------
    def live(self) -> dict[int, int | None]:
        """The start time of every cached process not marked exited."""
        return {
            pid: e.vals[_START]
            for pid, e in self._procs.items()
            if e.gc is None
        }

    def purge(self, pid: int, start: int | None) -> bool:
        """Forget ``pid``, found gone from /proc, if it is still the process
        that started at ``start`` and not marked exited (then its exit mark
        and the grace time will do)."""
        e = self._procs.get(pid)
        if e is None or e.gc is not None or e.vals[_START] != start:
            return False
        del self._procs[pid]
        return True

    def _same_start(self, e: _Entry, start: int | None) -> bool:
        old = e.vals[_START]
        if old is None or start is None:
            return True
        return bool(abs(old - start) < self.tick_ns)

    # -- applying raw events ------------------------------------------------
    def apply(
        self,
        head: RawEvent,
        time: int,
        agg: list[RawEvent] | None,
        now: int,
        thread_events: bool,
    ) -> tuple[Process, EV, int]:
        """Apply a head (released at ``time``) and the raw events merged
        into it to the process.

        Returns the snapshot after all of them, the EV mask and the
        ID_CHANGE mask.
        """
        pid = head.pid
        e = self._procs.get(pid)
        mask = 0
        id_change = 0
        kind = head.kind
        if kind == _K_FORK:
            e = self._fork(pid, e, head.task)
        elif e is None:
            e = self._procs[pid] = _Entry(pid)
        elif e.gc is not None and kind != _K_EXIT:
            # Activity on a process marked exited: a lost fork of a reused
            # pid. Start over rather than mix two processes.
            e = self._procs[pid] = _Entry(pid)
        # A FORK is never a child (no matrix column for it), so the entry is
        # settled by the head. The plain task fields of the last task win:
        # when that task carries them all, apply them once, not per raw.
        chain = (head, *agg) if agg else (head,)
        last = chain[-1].task
        # Copying the last task's first is harmless when it lacks some:
        # each raw's are then copied in order, the last's again at the end.
        plain_once = last is not None and _copy_plain(e.vals, last)
        for raw in chain:
            kind = raw.kind
            task = raw.task
            if task is not None:
                self._apply_task(
                    e, task, exiting=kind == _K_EXIT, plain=not plain_once
                )
            vals = e.vals
            if kind == _K_EXEC:
                if raw.exe is not None:
                    vals[_EXE] = raw.exe or None
                if raw.args is not None:
                    vals[_CMDLINE] = raw.args
            elif kind == _K_EXIT and (not thread_events or raw.tid == pid):
                status = task.exit_code if task is not None else None
                if status is not None:
                    vals[_EXIT_CODE] = decode_exit_status(status)
                vals[_EXIT_TIME] = raw.time  # the kernel's, never bumped
                if e.gc is None:
                    e.gc = now
                    self._gc.append(e)
            elif kind == _K_COMM:
                if raw.comm is not None:
                    vals[_COMM] = raw.comm
            elif kind == _K_EXEC_CONNECTOR:
                # KPROBE's second half of an exec: the resolved exe (after
                # the tracepoint's name as given) and argv
                if raw.exe is not None:
                    vals[_EXE] = raw.exe or None
                if raw.args is not None:
                    vals[_CMDLINE] = raw.args
            e.snap = None
            mask |= _EV_OF_KIND_INT[kind]
            id_change |= raw.id_change
            if self.entry_leaders and kind in _LEADER_KINDS:
                self._entry_leader(e)
        assert e is not None
        ev = _EV_CACHE.get(mask)
        if ev is None:
            ev = _EV_CACHE[mask] = EV(mask)
        snap = e.snapshot()
        if e.gc is not None:
            # Exited: the event hands this snapshot out, and the entry
            # waits out the grace time with its values alone (a snapshot is
            # their copy), rebuilt if anything asks for it. Under a fork
            # storm most entries are these: a third less of the cache.
            e.snap = None
            if e.gc == now:
                self._share(e.vals)
        return snap, ev, id_change

    def _share(self, vals: list[Any]) -> None:
        """Replace an exited entry's task values by equal ones other
        entries hold. Each record's integers are objects of their own
        (capabilities, namespace inodes, pgid: some 30 bytes each), and a
        fork storm keeps thousands of exited entries for the grace time
        (15,000 at 3,700 processes/s): shared, an exited entry takes 623
        bytes, not 959 (tracemalloc, 10,000 exits whose integers are fresh
        objects, as a record's are). Bounded: the table starts over past
        _SHARED_MAX values."""
        canon = self._canon
        if len(canon) > _SHARED_MAX:
            canon.clear()
        for i in _SHARED:
            x = vals[i]
            if x is not None:
                vals[i] = canon.setdefault(x, x)

    def _fork(
        self, pid: int, old: _Entry | None, task: RawTask | None
    ) -> _Entry:
        start = task.start_time if task is not None else None
        if old is not None and old.gc is None and self._same_start(old, start):
            e = old  # already known (scraped after the fork happened)
        else:
            e = _Entry(pid)
            self._procs[pid] = e
        ppid = task.ppid if task is not None else None
        parent = self._procs.get(ppid) if ppid is not None else None
        if parent is not None:
            pv = parent.vals
            for i in _INHERIT:
                if pv[i] is not None:
                    e.vals[i] = pv[i]
        e.snap = None
        return e

    def _apply_task(
        self, e: _Entry, task: RawTask, *, exiting: bool, plain: bool = True
    ) -> None:
        vals = e.vals
        if plain:
            _copy_task(vals, task)
        else:
            _copy_opt(vals, task)
        if vals[_START] is None and task.start_time is not None:
            vals[_START] = task.start_time
            vals[_ENTITY] = entity_id(
                vals[_PID],
                task.start_time,
                self.tick_ns,
            )
        if task.cwd is not None and not exiting:
            vals[_CWD] = task.cwd or None  # "": seen, but unknown
        env = task.env
        if env is not None:
            if self.max_env <= 0:
                vals[_ENV] = None
            elif env is self._env_in:  # a shell's children share theirs
                vals[_ENV] = self._env_out
            else:
                vals[_ENV] = self._env_out = truncate_env(env, self.max_env)
                self._env_in = env
        e.snap = None

    # -- entry leaders (upstream.md §4.8) ------------------------------------
    def _entry_leaders_from_roots(self) -> None:
        children: dict[int, list[int]] = {}
        roots: list[int] = []
        for pid, e in self._procs.items():
            ppid = e.vals[_PPID]
            if not ppid or ppid not in self._procs:
                roots.append(pid)
            else:
                children.setdefault(ppid, []).append(pid)
        queue = deque(sorted(roots))
        while queue:
            pid = queue.popleft()
            self._entry_leader(self._procs[pid])
            queue.extend(sorted(children.get(pid, ())))

    def _entry_leader(self, e: _Entry) -> None:
        leader, kind = self._compute_entry_leader(e)
        vals = e.vals
        if vals[_EL] != leader or vals[_ELT] != kind:
            vals[_EL] = leader
            vals[_ELT] = kind
            e.snap = None

    def _compute_entry_leader(
        self, e: _Entry
    ) -> tuple[int | None, int | None]:
        vals = e.vals
        pid = vals[_PID]
        ppid = vals[_PPID]
        if pid == 1:
            return 1, ELT.INIT
        is_sl = vals[_SID] == pid
        if pid == 2 or ppid == 2:
            return (pid if is_sl else 2), ELT.KTHREAD
        tty = _tty_kind(vals[_TTY_MAJ], vals[_TTY_MIN])
        name = _basename(vals)
        if is_sl and (tty == "tty" or (tty == "console" and name == "login")):
            return pid, ELT.TERM
        parent = self._procs.get(ppid) if ppid is not None else None
        if parent is None:
            return None, None
        # entering a container: its cgroup names another container than
        # its parent's (quark.container), whatever runs it
        container = container_of(vals[_CGROUP])
        if container is not None and container != container_of(
            parent.vals[_CGROUP]
        ):
            return pid, ELT.CONTAINER
        p_leader = parent.vals[_EL]
        p_kind = parent.vals[_ELT]
        if p_kind is None or p_kind == ELT.UNKNOWN:
            return None, None
        if not is_sl:
            return p_leader, p_kind
        if name.startswith(
            (
                "runc",
                "containerd-shim",
                "calico-node",
                "check-status",
                "pause",
                "conmon",
            )
        ):
            return p_leader, p_kind
        pname = _basename(parent.vals)
        if tty == "pts" and pname == "ssm-session-worker":
            return pid, ELT.SSM
        if pname == "sshd" and name != "sshd":
            return pid, ELT.SSHD
        if pname.startswith(("containerd-shim", "runc", "conmon")):
            return pid, ELT.CONTAINER
        return p_leader, p_kind


def _basename(vals: list[Any]) -> str:
    exe = vals[_EXE]
    if isinstance(exe, str) and exe:
        return exe.rsplit("/", 1)[-1]
    comm = vals[_COMM]
    return comm if isinstance(comm, str) else ""


def _tty_kind(major: int | None, minor: int | None) -> str:
    """upstream ``tty_type``: pts, console, tty or unknown."""
    if major is None or minor is None:
        return "unknown"
    if 136 <= major <= 143:
        return "pts"
    if major == 4:
        if minor <= 63:
            return "console"
        if minor <= 255:
            return "tty"
    return "unknown"
