"""Raw events: what a backend turns kernel records into, the engine's input.

Times are ns on CLOCK_MONOTONIC (``bpf_ktime_get_ns``, perf's
``use_clockid=CLOCK_MONOTONIC``, :func:`time.monotonic_ns`). Strings from the
kernel are decoded with :func:`os.fsdecode` (surrogateescape), so bytes that
are not UTF-8 survive. Any member a backend does not know is ``None``.
"""

from __future__ import annotations

import enum
import sys
from typing import Any, ClassVar

__all__ = ["RawEvent", "RawKind", "RawTask", "Seed", "fsdecode"]

_FS_ENCODING = sys.getfilesystemencoding()


def fsdecode(b: bytes) -> str:
    """:func:`os.fsdecode` for bytes from the kernel, without its per-call
    type dispatch (backends call it per string of every record)."""
    return b.decode(_FS_ENCODING, "surrogateescape")


class RawKind(enum.IntEnum):
    """Raw event kinds, upstream's ``enum raw_types`` in upstream's order."""

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


RAW_NUM_TYPES = 15
FORK = RawKind.WAKE_UP_NEW_TASK  # the friendlier name for the same kind


class RawTask:
    """The task data a kernel record carries (upstream's ``raw_task``).

    ``start_time`` is ns since boot (``task->start_boottime``).
    ``exit_code`` is the raw wait status (``task->exit_code``: status << 8,
    or the signal number in the low 7 bits), ``None`` unless an exit.
    ``env`` is a tuple of ``NAME=value`` strings. ``cwd`` is ``""`` when
    the backend saw a cwd it could not resolve: unknown, which replaces
    what the process had (``None`` leaves it as it was).
    """

    FIELDS: ClassVar[tuple[str, ...]] = (
        "cap_inheritable", "cap_permitted", "cap_effective", "cap_bset",
        "cap_ambient", "start_time", "ppid",
        "uid", "gid", "suid", "sgid", "euid", "egid", "pgid", "sid",
        "tty_major", "tty_minor",
        "uts_inonum", "ipc_inonum", "mnt_inonum", "net_inonum",
        "exit_code", "comm", "cwd", "cgroup", "env",
    )  # fmt: skip
    __slots__ = FIELDS

    cap_inheritable: int | None
    cap_permitted: int | None
    cap_effective: int | None
    cap_bset: int | None
    cap_ambient: int | None
    start_time: int | None
    ppid: int | None
    uid: int | None
    gid: int | None
    suid: int | None
    sgid: int | None
    euid: int | None
    egid: int | None
    pgid: int | None
    sid: int | None
    tty_major: int | None
    tty_minor: int | None
    uts_inonum: int | None
    ipc_inonum: int | None
    mnt_inonum: int | None
    net_inonum: int | None
    exit_code: int | None
    comm: str | None
    cwd: str | None
    cgroup: str | None
    env: tuple[str, ...] | None

    def __init__(
        self,
        *,
        cap_inheritable: int | None = None,
        cap_permitted: int | None = None,
        cap_effective: int | None = None,
        cap_bset: int | None = None,
        cap_ambient: int | None = None,
        start_time: int | None = None,
        ppid: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        suid: int | None = None,
        sgid: int | None = None,
        euid: int | None = None,
        egid: int | None = None,
        pgid: int | None = None,
        sid: int | None = None,
        tty_major: int | None = None,
        tty_minor: int | None = None,
        uts_inonum: int | None = None,
        ipc_inonum: int | None = None,
        mnt_inonum: int | None = None,
        net_inonum: int | None = None,
        exit_code: int | None = None,
        comm: str | None = None,
        cwd: str | None = None,
        cgroup: str | None = None,
        env: tuple[str, ...] | None = None,
    ) -> None:
        # Spelled out rather than a loop over FIELDS: backends build one of
        # these per kernel record, and this is several times faster.
        self.cap_inheritable = cap_inheritable
        self.cap_permitted = cap_permitted
        self.cap_effective = cap_effective
        self.cap_bset = cap_bset
        self.cap_ambient = cap_ambient
        self.start_time = start_time
        self.ppid = ppid
        self.uid = uid
        self.gid = gid
        self.suid = suid
        self.sgid = sgid
        self.euid = euid
        self.egid = egid
        self.pgid = pgid
        self.sid = sid
        self.tty_major = tty_major
        self.tty_minor = tty_minor
        self.uts_inonum = uts_inonum
        self.ipc_inonum = ipc_inonum
        self.mnt_inonum = mnt_inonum
        self.net_inonum = net_inonum
        self.exit_code = exit_code
        self.comm = comm
        self.cwd = cwd
        self.cgroup = cgroup
        self.env = env

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.FIELDS:
            v = getattr(self, name)
            if v is not None:
                out[name] = list(v) if name == "env" else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RawTask:
        unknown = set(d) - set(cls.FIELDS)
        if unknown:
            raise TypeError(f"unknown task field(s) {sorted(unknown)}")
        d = dict(d)
        if d.get("env") is not None:
            d["env"] = tuple(d["env"])
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawTask):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RawTask({self.to_dict()!r})"


class RawEvent:
    """One raw event (upstream's ``raw_event``).

    - ``pid`` is the tgid, ``tid`` the thread id.
    - EXEC: ``exe`` (the resolved path), ``args`` (argv), and ``task``.
    - EXEC_CONNECTOR: ``exe``, ``args`` and ``task`` (KPROBE's second exec
      half).
    - ``exe`` is ``""`` when the new executable's path is unknown (it then
      replaces the old one); ``None`` carries nothing.
    - WAKE_UP_NEW_TASK (fork), EXIT_THREAD, ID_CHANGE, GETPID: ``task``.
    - COMM: ``comm``, the new name (SETPROCTITLE).
    - ID_CHANGE: ``id_change``, an ``ID_CHANGE`` mask.

    ``agg`` and ``dead`` belong to the engine (aggregated children; lazily
    deleted from the time queue).
    """

    __slots__ = (
        "agg", "args", "comm", "cpu", "dead", "exe", "id_change", "kind",
        "pid", "task", "tid", "time",
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
        self.agg: list[RawEvent] | None = None
        self.dead = False

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
        return d

    def __repr__(self) -> str:
        return f"RawEvent({self.to_dict()!r})"


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
