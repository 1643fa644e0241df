"""Raw events: what a backend turns kernel records into, the engine's input.

Times are ns on CLOCK_MONOTONIC (``bpf_ktime_get_ns``, perf's
``use_clockid=CLOCK_MONOTONIC``, :func:`time.monotonic_ns`). Strings from the
kernel are decoded with :func:`os.fsdecode` (surrogateescape), so bytes that
are not UTF-8 survive. Any member a backend does not know is ``None``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from quark.events import (
    File,
    FileChange,
    FileOp,
    ModuleLoad,
    PacketDirection,
    Process,
    Ptrace,
    Shm,
    SockAddr,
    Tty,
)
from quark.fields import Field

__all__ = [
    "TASK_FIELDS",
    "RawEvent",
    "RawKind",
    "RawPacket",
    "RawSock",
    "RawTask",
    "Seed",
    "SockOp",
    "fsdecode",
    "memo",
    "task_event",
]

_T = TypeVar("_T")

_FS_ENCODING = sys.getfilesystemencoding()


def fsdecode(b: bytes) -> str:
    """:func:`os.fsdecode` for bytes from the kernel, without its per-call
    type dispatch (backends call it per string of every record)."""
    return b.decode(_FS_ENCODING, "surrogateescape")


def memo(fn: Callable[[bytes], _T], budget: int) -> Callable[[bytes], _T]:
    """``fn`` remembered by its argument, for the strings of kernel records.

    The same bytes come again and again: every child of a shell has its
    environment, most processes share a handful of working directories,
    cgroups and names. Decoding each distinct value once and handing out
    the same immutable object costs a dict lookup per string instead of a
    decode and a split, and every cached process shares that one object
    instead of holding its own copy. Bounded: once the remembered
    arguments pass ``budget`` bytes, everything is forgotten and it starts
    over (the next lookups decode anew).
    """
    seen: dict[bytes, _T] = {}
    held = 0

    def get(b: bytes) -> _T:
        nonlocal held
        v = seen.get(b)
        if v is None:
            v = fn(b)
            held += len(b) + 64
            if held > budget:
                seen.clear()
                held = len(b) + 64
            seen[b] = v
        return v

    return get


class RawKind(enum.IntEnum):
    """Raw event kinds, upstream's ``enum raw_types`` in upstream's order,
    then ours (CGROUP)."""

    INVALID = 0
    EXEC = 1
    WAKE_UP_NEW_TASK = 2
    EXIT_THREAD = 3
    ID_CHANGE = 4
    COMM = 5
    EXEC_CONNECTOR = 6
    SOCK_CONN = 7
    PACKET = 8
    FILE = 9
    PTRACE = 10
    MODULE_LOAD = 11
    SHM = 12
    TTY = 13
    GETPID = 14
    CGROUP = 15  # moved to another cgroup: enriches, no event of its own


RAW_NUM_TYPES = 16
FORK = RawKind.WAKE_UP_NEW_TASK  # the friendlier name for the same kind


class _RawTaskMethods:
    """What :class:`RawTask` adds to its generated members."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.FIELDS:
            v = getattr(self, name)
            if v is not None:
                out[name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RawTask:
        unknown = set(d) - set(cls.FIELDS)
        if unknown:
            raise TypeError(f"unknown task field(s) {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return RawTask(**d)

    def __repr__(self) -> str:
        return f"RawTask({self.to_dict()!r})"


#: The task fields: :class:`quark.Process`'s fields that a kernel record or
#: the /proc scrape carries (``quark.fields.TASK_SOURCES``), in its order.
TASK_FIELDS: tuple[Field, ...] = tuple(f for f in Process.TABLE if f.in_task)

if TYPE_CHECKING:

    class RawTask(_RawTaskMethods):
        """The task data a kernel record carries (upstream's ``raw_task``);
        its members are :data:`TASK_FIELDS`, each ``None`` unless known."""

        def __init__(self, **values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

else:
    # A slotted dataclass: its generated __init__ is as fast as a written
    # one, and backends build one of these per kernel record.
    RawTask = dataclasses.make_dataclass(
        "RawTask",
        [(f.name, Any, dataclasses.field(default=None)) for f in TASK_FIELDS],
        bases=(_RawTaskMethods,),
        kw_only=True,
        slots=True,
        repr=False,
    )
    RawTask.__module__ = __name__
    RawTask.FIELDS = tuple(f.name for f in TASK_FIELDS)
    RawTask.__doc__ = """The task data a kernel record carries (upstream's
    ``raw_task``): the members :data:`TASK_FIELDS` names, each ``None`` unless
    known. ``start_time`` is ns since boot (``task->start_boottime``);
    ``exit_code`` the raw wait status (``task->exit_code``: status << 8, or
    the signal number in the low 7 bits), ``None`` unless an exit; ``env``
    a tuple of ``NAME=value`` strings; ``cwd`` is ``""`` when the backend
    saw a cwd it could not resolve: unknown, which replaces what the process
    had (``None`` leaves it as it was)."""


class SockOp(enum.IntEnum):
    """What a SOCK_CONN raw event saw happen to a TCP socket."""

    CONNECT = 1  # connect() succeeded or is in progress
    ACCEPT = 2  # accept() returned it
    CLOSE = 3  # its last reference went (close(), exit, SIGKILL)


@dataclasses.dataclass(frozen=True, slots=True)
class RawSock:
    """A SOCK_CONN raw event's payload.

    ``bytes_sent``/``bytes_received`` are read from the socket at CLOSE
    (None otherwise); ``at_exit`` is True for a CLOSE the kernel made while
    the calling thread was exiting (its files released by ``exit``): the
    engine delivers it before that thread's exit.
    """

    op: SockOp
    local: SockAddr
    remote: SockAddr
    bytes_sent: int | None = None
    bytes_received: int | None = None
    net_inonum: int | None = None
    at_exit: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RawPacket:
    """A PACKET raw event's payload: ``data`` from the IP header, at most
    what the kernel captured of the ``orig_len`` bytes."""

    direction: PacketDirection
    origin: str
    orig_len: int
    data: bytes


#: What a raw event of a kind beyond the process kinds carries.
Payload = RawSock | RawPacket | File | Shm | Tty | Ptrace | ModuleLoad

#: A recorded ``file``'s members besides ``op`` and ``change``, in order.
_FILE_MEMBERS = (
    "path", "old_path", "sym_target", "inode", "mode", "size", "uid", "gid",
    "atime", "mtime", "ctime",
)  # fmt: skip
#: A recorded ``shm``'s members besides ``kind``.
_SHM_MEMBERS = ("key", "size", "flags", "path")
#: A recorded ``tty``'s, ``ptrace``'s and ``module_load``'s members (a
#: tty's ``data`` is hex).
TTY_MEMBERS = tuple(
    f.name for f in dataclasses.fields(Tty) if f.name != "data"
)
PTRACE_MEMBERS = tuple(f.name for f in dataclasses.fields(Ptrace))
MODULE_MEMBERS = tuple(f.name for f in dataclasses.fields(ModuleLoad))


def _flag_names(cls: type[enum.IntFlag], value: int) -> list[str]:
    """The names of the members of ``cls`` set in ``value``, in bit order."""
    return [m.name for m in cls if value & m and m.name is not None]


class RawEvent:
    """One raw event (upstream's ``raw_event``).

    - ``pid`` is the tgid, ``tid`` the thread id.
    - EXEC: ``exe`` (the resolved path), ``args`` (argv), and ``task``.
    - EXEC_CONNECTOR: ``exe``, ``args`` and ``task`` (KPROBE's second exec
      half).
    - ``exe`` is ``""`` when the new executable's path is unknown (it then
      replaces the old one); ``None`` carries nothing.
    - WAKE_UP_NEW_TASK (fork), EXIT_THREAD, ID_CHANGE, GETPID: ``task``.
    - CGROUP: ``task``, with the process's new ``cgroup`` (and, from EBPF,
      the rest of its task fields). No event of its own: it joins the
      process's held event (a move right after an exec is on that exec's
      event) or updates the cache when released alone.
    - COMM: ``comm``, the new name (SETPROCTITLE).
    - ID_CHANGE: ``id_change``, an ``ID_CHANGE`` mask.
    - SOCK_CONN: ``payload``, a :class:`RawSock`.
    - PACKET: ``payload``, a :class:`RawPacket`.
    - FILE: ``payload``, a :class:`quark.File` (one operation; the engine
      merges a process's operations on one file).
    - SHM: ``payload``, a :class:`quark.Shm`.
    - TTY: ``payload``, a :class:`quark.Tty` (one write; the engine joins
      a process's consecutive writes to one terminal).
    - PTRACE: ``payload``, a :class:`quark.Ptrace` (``child_pid`` a tgid).
    - MODULE_LOAD: ``payload``, a :class:`quark.ModuleLoad`.

    The engine never changes a raw event: what it keeps while holding one
    is its own (:class:`quark.engine.Held`).
    """

    __slots__ = (
        "args", "comm", "cpu", "exe", "id_change", "kind", "payload", "pid",
        "task", "tid", "time",
    )  # fmt: skip

    def __init__(
        self,
        kind: RawKind,
        time: int,
        pid: int,
        tid: int | None = None,
        *,
        cpu: int | None = None,
        task: RawTask | None = None,
        exe: str | None = None,
        args: tuple[str, ...] | None = None,
        comm: str | None = None,
        id_change: int = 0,
        payload: Payload | None = None,
    ) -> None:
        self.kind = kind
        self.time = time
        self.pid = pid
        self.tid = pid if tid is None else tid
        self.cpu = cpu
        self.task = task
        self.exe = exe
        self.args = args
        self.comm = comm
        self.id_change = id_change
        self.payload = payload

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind.name,
            "time": self.time,
            "pid": self.pid,
        }
        if self.tid != self.pid:
            d["tid"] = self.tid
        if self.cpu is not None:
            d["cpu"] = self.cpu
        if self.task is not None:
            d["task"] = self.task.to_dict()
        if self.exe is not None:
            d["exe"] = self.exe
        if self.args is not None:
            d["args"] = list(self.args)
        if self.comm is not None:
            d["comm"] = self.comm
        if self.id_change:
            d["id_change"] = self.id_change
        p = self.payload
        if isinstance(p, RawSock):
            sock: dict[str, Any] = {
                "op": p.op.name,
                "local": [p.local.address, p.local.port],
                "remote": [p.remote.address, p.remote.port],
            }
            for key in ("bytes_sent", "bytes_received", "net_inonum"):
                v = getattr(p, key)
                if v is not None:
                    sock[key] = v
            if p.at_exit:
                sock["at_exit"] = True
            d["sock"] = sock
        elif isinstance(p, RawPacket):
            d["packet"] = {
                "direction": p.direction.name,
                "origin": p.origin,
                "orig_len": p.orig_len,
                "data": p.data.hex(),
            }
        elif isinstance(p, File):
            file: dict[str, Any] = {"op": _flag_names(FileOp, p.op)}
            for key in _FILE_MEMBERS:
                v = getattr(p, key)
                if v is not None:
                    file[key] = v
            if p.change:
                file["change"] = _flag_names(FileChange, p.change)
            d["file"] = file
        elif isinstance(p, Shm):
            shm: dict[str, Any] = {"kind": p.kind.name}
            for key in _SHM_MEMBERS:
                v = getattr(p, key)
                if v is not None:
                    shm[key] = v
            d["shm"] = shm
        elif isinstance(p, Tty):
            tty = {k: getattr(p, k) for k in TTY_MEMBERS}
            tty["data"] = p.data.hex()
            d["tty"] = tty
        elif isinstance(p, Ptrace):
            d["ptrace"] = {k: getattr(p, k) for k in PTRACE_MEMBERS}
        elif isinstance(p, ModuleLoad):
            d["module_load"] = {
                k: getattr(p, k) for k in MODULE_MEMBERS
                if getattr(p, k) is not None
            }  # fmt: skip
        return d

    def __repr__(self) -> str:
        return f"RawEvent({self.to_dict()!r})"


def _task_event_maker() -> Callable[
    [RawKind, int, int, int, RawTask | None], RawEvent
]:
    """``task_event`` written from ``RawEvent.__init__``'s own signature:
    the members the decoders pass, and every other one at its default,
    so the member list is declared once, in ``__init__``."""
    given = ("kind", "time", "pid", "tid", "task")
    params = inspect.signature(RawEvent.__init__).parameters
    lines = [f"def task_event({', '.join(given)}):", "    ev = new(RawEvent)"]
    for name in RawEvent.__slots__:
        value = name if name in given else repr(params[name].default)
        lines.append(f"    ev.{name} = {value}")
    lines.append("    return ev")
    ns: dict[str, Any] = {"new": object.__new__, "RawEvent": RawEvent}
    exec(compile("\n".join(lines), "<task_event>", "exec"), ns)
    made: Callable[[RawKind, int, int, int, RawTask | None], RawEvent]
    made = ns["task_event"]
    return made


#: ``task_event(kind, time, pid, tid, task)``: ``RawEvent(kind, time, pid,
#: tid, task=task)``, made without the class call. The decoders make one
#: per kernel record, and in CPython 3.11 a call to a class with a keyword
#: argument builds its arguments as a tuple and a dict first (0.36 against
#: 0.74 us, timeit; the EBPF decoder's costliest line in py-spy).
#: tests/unit/test_raw_types.py holds it to the same members as __init__.
task_event = _task_event_maker()


class Seed:
    """A process found by scraping /proc at open (or recorded as such)."""

    __slots__ = ("args", "exe", "pid", "task")

    def __init__(
        self,
        pid: int,
        task: RawTask,
        exe: str | None = None,
        args: tuple[str, ...] | None = None,
    ) -> None:
        self.pid = pid
        self.task = task
        self.exe = exe
        self.args = args

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pid": self.pid, "task": self.task.to_dict()}
        if self.exe is not None:
            d["exe"] = self.exe
        if self.args is not None:
            d["args"] = list(self.args)
        return d

    def __repr__(self) -> str:
        return f"Seed({self.to_dict()!r})"
