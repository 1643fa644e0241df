"""Public records: the flags, the event and process snapshots, the stats.

``Event`` and ``Process`` are immutable snapshots. They are built once per
delivered event on the hot path, so they are small tuple-backed records rather
than dataclasses: one tuple and one object per snapshot, read through
attribute accessors. List members (``cmdline``, ``env``) are stored as tuples
and handed out as fresh lists, so nobody can change a snapshot in place.
"""

from __future__ import annotations

import enum
import ipaddress
import socket as _socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeAlias, TypeVar

from quark.container import Container, container_of
from quark.fields import Dump, F, Field, Src, table

__all__ = [
    "ELT",
    "EV",
    "ID_CHANGE",
    "QQ",
    "Event",
    "File",
    "FileChange",
    "FileOp",
    "Packet",
    "PacketDirection",
    "Process",
    "QueueAttr",
    "Shm",
    "ShmKind",
    "SockAddr",
    "SockOrigin",
    "Socket",
    "Stats",
]


class QQ(enum.IntFlag):
    """Queue flags; the bit values are upstream's ``QQ_*``."""

    THREAD_EVENTS = 1 << 0
    KPROBE = 1 << 1
    EBPF = 1 << 2
    MIN_AGG = 1 << 3
    ENTRY_LEADER = 1 << 4
    SOCK_CONN = 1 << 5
    DNS = 1 << 6
    BYPASS = 1 << 7
    FILE = 1 << 8
    SHM = 1 << 9
    TTY = 1 << 10
    PTRACE = 1 << 11
    MODULE_LOAD = 1 << 12
    GETPID = 1 << 13  # an event per getpid(2): for benchmarks
    ALL_BACKENDS = KPROBE | EBPF


class EV(enum.IntFlag):
    """Event kinds; the bit values are upstream's ``QUARK_EV_*``."""

    FORK = 1 << 0
    EXEC = 1 << 1
    EXIT = 1 << 2
    ID_CHANGE = 1 << 3
    SETPROCTITLE = 1 << 4
    SOCK_CONN_ESTABLISHED = 1 << 5
    SOCK_CONN_CLOSED = 1 << 6
    PACKET = 1 << 7
    BYPASS = 1 << 8
    FILE = 1 << 9
    PTRACE = 1 << 10
    MODULE_LOAD = 1 << 11
    SHM = 1 << 12
    TTY = 1 << 13
    GETPID = 1 << 14  # a getpid(2) returned (QQ.GETPID): for benchmarks


class ID_CHANGE(enum.IntFlag):
    """Bits of ``Event.id_change`` (upstream ``QUARK_ID_CHANGE_*``)."""

    SETSID = 1 << 0
    SETUID = 1 << 1
    SETGID = 1 << 2


class ELT(enum.IntEnum):
    """Entry leader types (upstream ``QUARK_ELT_*``)."""

    UNKNOWN = 0
    INIT = 1
    KTHREAD = 2
    SSHD = 3
    SSM = 4
    CONTAINER = 5
    TERM = 6
    CONSOLE = 7


_R = TypeVar("_R", bound="_Record")
_set_values = None  # replaced below by the slot's setter


class _Record:
    """An immutable record backed by one tuple (``_v``)."""

    __slots__ = ("_v",)
    FIELDS: ClassVar[tuple[str, ...]] = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _index: ClassVar[dict[str, int]] = {}
    _listy: ClassVar[frozenset[str]] = frozenset()

    if TYPE_CHECKING:
        _v: tuple[Any, ...]

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self._index)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown field(s) {sorted(unknown)}"
            )
        listy = self._listy
        _slot_set(
            self,
            tuple(
                _freeze(values.get(name))
                if name in listy
                else values.get(name)
                for name in self._fields
            ),
        )

    @classmethod
    def _make(cls: type[_R], values: tuple[Any, ...]) -> _R:
        """Build from a tuple in ``_fields`` order (no checks: hot path)."""
        obj = object.__new__(cls)
        _slot_set(obj, values)
        return obj

    def _replace(self: _R, **changes: Any) -> _R:
        vals = list(self._v)
        for name, value in changes.items():
            if name in self._listy:
                value = _freeze(value)
            vals[self._index[name]] = value
        return self._make(tuple(vals))

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(self._v == other._v)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._v))

    def __repr__(self) -> str:
        parts = (
            f"{name}={getattr(self, name)!r}"
            for name in self._fields
            if self._v[self._index[name]] is not None
        )
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._make, (self._v,))


_slot_set = _Record.__dict__["_v"].__set__


def _freeze(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _list_getter(i: int) -> property:
    def get(self: _Record) -> list[str] | None:
        v = self._v[i]
        return None if v is None else list(v)

    return property(get)


def _getter(i: int) -> property:
    def get(self: _Record) -> Any:
        return self._v[i]

    return property(get)


def _install(
    cls: type[_Record], fields: tuple[str, ...], listy: set[str]
) -> None:
    cls.FIELDS = cls._fields = fields
    cls._index = {name: i for i, name in enumerate(fields)}
    cls._listy = frozenset(listy)
    for i, name in enumerate(fields):
        prop = _list_getter(i) if name in listy else _getter(i)
        setattr(cls, name, prop)


_Int: TypeAlias = "int | None"
_Str: TypeAlias = "str | None"
_Strs: TypeAlias = "list[str] | None"


class Process(_Record):
    """What is known about one process (a thread-group leader).

    Every member that is not known is ``None``. ``start_time`` is in ns
    since boot; ``exit_code`` follows :mod:`subprocess`: the exit status, or
    ``-N`` when the process was killed by signal N. ``exe_inode`` is the
    inode number of the executable (``stat(exe).st_ino`` when it was
    opened).

    The class body is the table of process fields (:mod:`quark.fields`):
    each line declares a member's type, where its value comes from, and how
    quark-mon's dump and the ECS document show it.
    """

    __slots__ = ()

    TABLE: ClassVar[tuple[Field, ...]]

    # fmt: off
    # name: Annotated[type, F(source, inherit, dump=Dump(line, tag, ...),
    #                         ecs=(key under "process", rule))]
    pid: Annotated[int, F(Src.PID, ecs=("pid", "copy"))]
    ppid: Annotated[_Int, F(Src.TASK, dump=Dump(2, "PROC", gate=True),
                            ecs=("parent", "parent"))]
    uid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                           ecs=("real_user", "user"))]
    gid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                           ecs=("real_group", "group"))]
    suid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                            ecs=("saved_user", "user"))]
    sgid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                            ecs=("saved_group", "group"))]
    euid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                            ecs=("user", "user"))]
    egid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"),
                            ecs=("group", "group"))]
    pgid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"))]
    sid: Annotated[_Int, F(Src.TASK, dump=Dump(3, "PROC"))]
    cap_inheritable: Annotated[_Int, F(Src.TASK,
                                       dump=Dump(4, "PROC", fmt="hex"))]
    cap_permitted: Annotated[_Int, F(Src.TASK, dump=Dump(4, "PROC", fmt="hex"),
                                     ecs=("permitted", "caps"))]
    cap_effective: Annotated[_Int, F(Src.TASK, dump=Dump(4, "PROC", fmt="hex"),
                                     ecs=("effective", "caps"))]
    cap_bset: Annotated[_Int, F(Src.TASK, dump=Dump(5, "PROC", fmt="hex"))]
    cap_ambient: Annotated[_Int, F(Src.TASK, dump=Dump(5, "PROC", fmt="hex"))]
    start_time: Annotated[_Int, F(Src.START,
                                  dump=Dump(6, "PROC", label="time_boot"),
                                  ecs=("start", "boot_time"))]
    tty_major: Annotated[_Int, F(Src.TASK, dump=Dump(6, "PROC"),
                                 ecs=("tty", "tty"))]
    tty_minor: Annotated[_Int, F(Src.TASK, dump=Dump(6, "PROC"))]
    uts_inonum: Annotated[_Int, F(Src.TASK, dump=Dump(7, "PROC"))]
    ipc_inonum: Annotated[_Int, F(Src.TASK, dump=Dump(7, "PROC"))]
    mnt_inonum: Annotated[_Int, F(Src.TASK, dump=Dump(8, "PROC"))]
    net_inonum: Annotated[_Int, F(Src.TASK, dump=Dump(8, "PROC"))]
    entity_id: Annotated[_Str, F(Src.ENGINE, dump=Dump(9, "PROC"),
                                 ecs=("entity_id", "copy"))]
    entry_leader_type: Annotated[_Int, F(Src.ENGINE,
                                         dump=Dump(9, "PROC", fmt="elt"))]
    entry_leader: Annotated[_Int, F(Src.ENGINE, dump=Dump(9, "PROC"))]
    comm: Annotated[_Str, F(Src.TASK_OPT, inherit=True,
                            dump=Dump(0, "COMM", gate=True),
                            ecs=("name", "copy"))]
    exe: Annotated[_Str, F(Src.EXEC, inherit=True,
                           dump=Dump(11, "EXE", gate=True),
                           ecs=("executable", "copy"))]
    exe_inode: Annotated[_Int, F(Src.TASK_OPT, inherit=True,
                                 dump=Dump(11, "EXE"))]
    cmdline: Annotated[_Strs, F(Src.EXEC, inherit=True,
                                dump=Dump(1, "CMDL", gate=True, fmt="list"),
                                ecs=("args", "args"))]
    cwd: Annotated[_Str, F(Src.CWD, inherit=True,
                           dump=Dump(10, "CWD", gate=True),
                           ecs=("working_directory", "copy"))]
    cgroup: Annotated[_Str, F(Src.TASK_OPT, inherit=True,
                              dump=Dump(13, "CGRP", gate=True))]
    env: Annotated[_Strs, F(Src.ENV, inherit=True,
                            dump=Dump(12, "ENV", label="env_len", gate=True,
                                      fmt="size"))]
    exit_code: Annotated[_Int, F(Src.EXIT_STATUS, dump=Dump(14, "EXIT"),
                                 ecs=("exit_code", "exit"))]
    exit_time: Annotated[_Int, F(Src.EXIT_TIME,
                                 dump=Dump(14, "EXIT", gate=True),
                                 ecs=("end", "mono_time"))]
    poison_tag: Annotated[_Int, F(Src.ENGINE, inherit=True)]
    # fmt: on

    @property
    def exited(self) -> bool:
        """True once the process's exit has been seen."""
        return self.exit_time is not None

    @property
    def container(self) -> Container | None:
        """The container the process runs in, derived from ``cgroup``
        alone (:func:`quark.container.container_of`); ``None`` outside
        containers and when the cgroup is not known."""
        return container_of(self.cgroup)


Process.TABLE = table(Process)
_install(
    Process,
    tuple(f.name for f in Process.TABLE),
    {f.name for f in Process.TABLE if f.listy},
)


class SockOrigin(enum.IntEnum):
    """How the socket cache learned of a connection (upstream
    ``enum sock_conn``, without its INVALID and CLOSE)."""

    ACCEPT = 2
    CONNECT = 3
    SCRAPE = 4


class PacketDirection(enum.IntEnum):
    """Which way a captured packet went (upstream ``QUARK_PACKET_DIR_*``)."""

    EGRESS = 1
    INGRESS = 2


@dataclass(frozen=True, slots=True)
class SockAddr:
    """One end of a connection: ``family`` is ``socket.AF_INET`` or
    ``socket.AF_INET6``, ``address`` the address as :mod:`ipaddress` prints
    it (an IPv4-mapped IPv6 address stays IPv6: ``"::ffff:127.0.0.1"``),
    ``port`` in host order."""

    family: int
    address: str
    port: int

    @classmethod
    def of(cls, address: str | bytes, port: int) -> SockAddr:
        """From an address in either family (a string, or 4 or 16 bytes in
        network order), normalised: an IPv4-mapped IPv6 address prints its
        IPv4 part dotted (``::ffff:10.0.0.1``) on every Python."""
        ip = ipaddress.ip_address(address)
        if ip.version == 4:
            return cls(_socket.AF_INET, str(ip), port)
        mapped = ip.ipv4_mapped
        text = f"::ffff:{mapped}" if mapped is not None else str(ip)
        return cls(_socket.AF_INET6, text, port)

    def __str__(self) -> str:
        if self.family == _socket.AF_INET6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Socket:
    """A TCP connection as the socket cache knows it.

    ``pid_origin`` is the process that connected or accepted it (for a
    scraped one, the first process found holding it, or None),
    ``pid_last_use`` the last process seen using it (the one that closed
    it, once closed). Times are ns on the events' monotonic clock;
    ``close_time`` is None until closed, and ``bytes_sent`` and
    ``bytes_received`` are known (not None) only at close. ``net_inonum``
    is the network namespace's inode number, when known.
    """

    local: SockAddr
    remote: SockAddr
    pid_origin: int | None
    pid_last_use: int | None
    established_time: int | None
    close_time: int | None
    conn_origin: SockOrigin | None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    net_inonum: int | None = None

    @property
    def closed(self) -> bool:
        return self.close_time is not None


@dataclass(frozen=True, slots=True)
class Packet:
    """A captured packet: ``data`` starts at the IP header and holds at
    most 2048 bytes of the ``orig_len`` the packet had; ``origin`` says why
    it was captured (``"dns"``)."""

    direction: PacketDirection
    origin: str
    orig_len: int
    data: bytes


class FileOp(enum.IntFlag):
    """What happened to a file (upstream's ``QUARK_FILE_OP_*`` bits)."""

    CREATE = 1
    MODIFY = 2
    REMOVE = 4
    MOVE = 8


class FileChange(enum.IntFlag):
    """What a ``FileOp.MODIFY`` changed."""

    CONTENT = 1 << 0  # write, writev, pwrite, pwritev, truncate
    PERMISSIONS = 1 << 1  # the chmod family
    OWNER = 1 << 2  # the chown family
    XATTRS = 1 << 3
    TRUNCATE = 1 << 4  # truncate, ftruncate (with CONTENT)


_NO_CHANGE = FileChange(0)


@dataclass(frozen=True, slots=True)
class File:
    """A file operation, or several of one process on one file aggregated.

    ``path`` is absolute, as ``/proc/PID/root`` and ``/proc/PID/cwd`` would
    make it (a relative path joined to the cwd or the dirfd's directory,
    mount prefixes included, from the process's root); a path that could
    not be known whole is None, never a fragment. ``old_path`` is the name
    a ``MOVE`` moved from, ``sym_target`` a symlink's target as given. The
    stat members (``inode``, ``mode``, ``size``, ``uid``, ``gid``, and
    ``atime``, ``mtime``, ``ctime`` in ns since the epoch) are None where
    the hook could not reach the inode (a path-based remove or move).
    """

    op: FileOp
    path: str | None
    old_path: str | None = None
    sym_target: str | None = None
    inode: int | None = None
    mode: int | None = None
    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: int | None = None
    mtime: int | None = None
    ctime: int | None = None
    change: FileChange = _NO_CHANGE


class ShmKind(enum.IntEnum):
    """Which kind of shared memory was made (upstream ``QUARK_SHM_*``)."""

    SHMGET = 1
    SHM_OPEN = 2
    MEMFD_CREATE = 3


@dataclass(frozen=True, slots=True)
class Shm:
    """Shared memory a process made: ``key``, ``size`` and ``flags`` (the
    shmflg) of a SysV ``shmget``; ``path`` (``/dev/shm/NAME``) and
    ``flags`` (the open flags) of a POSIX ``shm_open``; ``path``
    (``memfd:NAME``) and ``flags`` of a ``memfd_create``."""

    kind: ShmKind
    key: int | None = None
    size: int | None = None
    flags: int | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Tty:
    """What a process wrote to a terminal: the terminal's ``major`` and
    ``minor`` (for a pty master, its slave's), its window (``cols``,
    ``rows``) and termios flags, the bytes written (consecutive writes of
    one process to one terminal joined, up to 4096 bytes) and how many
    bytes of them were not captured (``truncated``)."""

    major: int
    minor: int
    cols: int
    rows: int
    iflag: int
    oflag: int
    cflag: int
    lflag: int
    data: bytes
    truncated: int = 0


@dataclass(frozen=True, slots=True)
class Ptrace:
    """A ptrace(2) request: ``child_pid`` is the traced process's tgid in
    the queue's pid namespace, ``request`` the request number
    (``PTRACE_ATTACH`` 16, ``PTRACE_SEIZE`` 0x4206, ...), ``addr`` and
    ``data`` its arguments."""

    child_pid: int
    request: int
    addr: int
    data: int


@dataclass(frozen=True, slots=True)
class ModuleLoad:
    """A kernel module loaded: its ``name``, ``version`` and
    ``src_version`` (None when the module has none) and the kernel's
    ``taints`` mask for it."""

    name: str
    version: str | None
    src_version: str | None
    taints: int


class Event(_Record):
    """One delivered event.

    ``events`` says what caused it (several bits when raw events were
    aggregated), ``time`` is the backend's monotonic stamp in ns of the first
    raw event, ``process`` the process snapshot after the event was applied
    (for a socket or packet event, the process that made the call, when
    known). ``id_change`` is an :class:`ID_CHANGE` mask for
    ``EV.ID_CHANGE`` events, ``socket`` the connection for
    ``EV.SOCK_CONN_*`` events, ``packet`` the packet for ``EV.PACKET``,
    ``file`` the file operation(s) for ``EV.FILE``, ``shm`` the shared
    memory for ``EV.SHM``, ``tty`` the terminal output for ``EV.TTY``,
    ``ptrace`` the request for ``EV.PTRACE``, ``module_load`` the module
    for ``EV.MODULE_LOAD``, ``bypass`` the raw record's bytes for
    ``EV.BYPASS``; each is None on events of other kinds.
    """

    __slots__ = ()

    events: EV
    time: int
    process: Process | None
    id_change: ID_CHANGE | None
    socket: Socket | None
    packet: Packet | None
    file: File | None
    shm: Shm | None
    tty: Tty | None
    ptrace: Ptrace | None
    module_load: ModuleLoad | None
    bypass: bytes | None

    @property
    def pid(self) -> int | None:
        """The process's pid, or None for an event with no process."""
        p = self.process
        return None if p is None else p.pid


_install(Event, tuple(Event.__annotations__), set())


@dataclass(frozen=True)
class Stats:
    """Counters of a queue. All are cumulative since open.

    ``lost`` counts raw events the kernel produced that never reached the
    engine (ring overruns, failed reservations, undecodable records);
    ``decode_errors`` the part of them that arrived but could not be decoded.
    ``late`` counts raw events that arrived after a newer event had already
    been delivered; they are stamped just after it, so ``Event.time`` never
    decreases. ``length`` is the number of raw events held now,
    ``cache_size`` the number of cached processes, ``dropped_by_rules`` the
    events a ruleset dropped, ``skipped_probes`` the optional kernel hooks
    that could not attach, each with its reason. ``scrape_skipped`` counts
    the processes that /proc listed but that vanished (or could not be
    read) before the scrape at open read them: they are left out of the
    cache, not an error.

    After a loss the process cache is reconciled against /proc:
    ``repairs`` counts those passes, ``repair_purged`` the cached
    processes found gone (their exit was lost), ``repair_added`` the ones
    found missing or replaced (their fork was lost, or their pid reused)
    and scraped. ``ring_size`` is the kernel ring's size in bytes (KPROBE:
    the CPUs' perf rings together; 0 for a replay), ``ring_high_water``
    the most of it ever found in use, ``ring_behind`` the times the
    consumer was found with the ring over three quarters full: the
    warning that comes before a loss.
    """

    insertions: int = 0
    removals: int = 0
    aggregations: int = 0
    non_aggregations: int = 0
    lost: int = 0
    garbage_collections: int = 0
    backend: str = ""
    length: int = 0
    max_length: int = 0
    cache_size: int = 0
    decode_errors: int = 0
    dropped_by_rules: int = 0
    late: int = 0
    skipped_probes: tuple[str, ...] = ()
    scrape_skipped: int = 0
    repairs: int = 0
    repair_purged: int = 0
    repair_added: int = 0
    ring_size: int = 0
    ring_high_water: int = 0
    ring_behind: int = 0


@dataclass
class QueueAttr:
    """Queue attributes, with upstream's ``quark_queue_default_attr``.

    ``hold_time`` and ``cache_grace_time`` are in milliseconds; ``max_env``
    in bytes (0: no environment is kept). ``ring_size`` is the kernel ring's
    size in bytes, a power of two multiple of the page size (EBPF: its one
    ring buffer; KPROBE: shared out among the CPUs' perf rings); 0 sizes it
    from the number of CPUs (EBPF: 4 MiB each, from 16 to 128 MiB).
    """

    flags: QQ = QQ.ALL_BACKENDS
    max_length: int = 10000
    cache_grace_time: int = 4000
    hold_time: int = 1000
    max_env: int = 4096
    ruleset: Any = field(default=None, repr=False)
    ring_size: int = 0
