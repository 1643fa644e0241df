"""The KPROBE backend's perf records decoded into :class:`quark.raw.RawEvent`.

The records are laid out as the probes' tracefs ``format`` files say
(:mod:`quark.backends.tracefs_format`); the probes and what they fetch are
described in :mod:`quark.backends.kprobe_probes`. Pure code: no syscalls.

The cgroup path. A task record carries no cgroup (its path is a walk of
kernfs names that fetch arguments cannot make), so the path comes from the
``cgroup:cgroup_attach_task`` tracepoint, which reports every move with the
destination's whole path. :class:`CgroupMoves` keeps the last move of each
process on the hierarchy that the /proc scrape reads, and gives it to that
process's later events (a fork's child takes its parent's); one never moved
since the queue opened keeps what the /proc scrape and fork inheritance gave
it. Each move is also a CGROUP raw event, which the engine folds into the
process's held event: a move made right after an exec is on that exec's
event.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quark.backends.kprobe_probes import MAX_DEPTH, SLOTS_PER_PROBE, Depths
from quark.backends.tracefs_format import EventFormat, Rec
from quark.errors import DecodeError
from quark.events import ID_CHANGE
from quark.raw.types import RawEvent, RawKind, RawTask
from quark.raw.types import fsdecode as _fsdecode
from quark.raw.types import memo as _memo
from quark.sys.perf import (
    PERF_RECORD_COMM,
    PERF_RECORD_LOST,
    PERF_RECORD_MISC_COMM_EXEC,
    PERF_RECORD_SAMPLE,
)

__all__ = [
    "CGROUP_TP",
    "CgroupMoves",
    "Decoder",
    "PathResolver",
    "path_in_fs",
    "task_of",
]

PF_KTHREAD = 0x00200000
SIGNAL_GROUP_EXIT = 0x00000004
# include/uapi/linux/cn_proc.h: proc_id_connector's which_id
PROC_EVENT_UID = 0x00000004
PROC_EVENT_GID = 0x00000040
_ID_OF_WHICH = {
    PROC_EVENT_UID: ID_CHANGE.SETUID,
    PROC_EVENT_GID: ID_CHANGE.SETGID,
}
CGROUP_TP = ("cgroup", "cgroup_attach_task")
CGROUP_FIELDS = ("dst_root", "pid", "dst_path")
CGROUP2_HIERARCHY = 0  # cgrp_dfl_root's hierarchy id: cgroup v2

# PERF_SAMPLE_TID | TIME | CPU | RAW: pid, tid, time, cpu, res, raw size
SAMPLE = struct.Struct("<IIQIII")
SAMPLE_ID = struct.Struct("<IIQII")  # sample_id_all: pid, tid, time, cpu, res
LOST = struct.Struct("<QQ")
COMM_HEAD = struct.Struct("<II")

PathResolver = Callable[[int, str, int, list[bytes], int | None], str | None]
"""``(pid, "cwd"|"exe", mount id, names leaf first, another pid that shares
the path or None) -> path or None``."""


_NAME_KEYS = {
    which: tuple(f"{which}{i}" for i in range(MAX_DEPTH))
    for which in ("cwd", "exe")
}


def _names(rec: Rec, prefix: str, depth: int) -> list[bytes]:
    return [rec[k] for k in _NAME_KEYS[prefix][:depth]]


def _split(joined: bytes) -> tuple[str, ...]:
    return tuple(_fsdecode(joined).split("\0"))


# Each distinct argv, environment, path and name decoded once, and shared
# (see memo): the same ones come with every exec of a shell's children.
_strs = _memo(_split, 2 << 20)
_path = _memo(_fsdecode, 1 << 20)
_name = _memo(_fsdecode, 1 << 18)


def _decode_all(values: list[bytes]) -> tuple[str, ...]:
    """Decode many strings in one call (NUL cannot occur inside them, and
    surrogateescape decodes byte by byte)."""
    if not values:
        return ()
    return _strs(b"\0".join(values))


def path_in_fs(names: list[bytes]) -> str | None:
    """Leaf-first names up to the filesystem's root (``/``) -> the path
    inside that filesystem; None if the root is not among them."""
    parts: list[bytes] = []
    for n in names:
        if n == b"/":
            parts.reverse()
            return _path(b"/" + b"/".join(parts))
        if not n or b"/" in n:
            return None  # unreadable (a fault) or not a name
        parts.append(n)
    return None


_SLOT_KEYS = tuple((f"p{i}", f"s{i}") for i in range(SLOTS_PER_PROBE))


def stack_strings(
    parts: list[Rec | None],
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """argv and the environment from the slot parts of one exec, in order
    (a missing part ends what is known): ``(argv, env)``; argv is None
    without part 0, env None where it could not be reached, and both keep
    only what was read whole."""
    first = parts[0] if parts else None
    if first is None:
        return None, None
    argc = first["argc"]
    slots: list[tuple[int, bytes]] = []
    for rec in parts:
        if rec is None:
            break  # after a gap the slots no longer line up
        slots += [(rec[p], rec[s]) for p, s in _SLOT_KEYS]
    n = min(argc, len(slots))
    argv = _decode_all([v for _, v in slots[:n]])
    env: tuple[str, ...] | None = None
    if argc < len(slots) and slots[argc][0] == 0:
        out = []
        for ptr, val in slots[argc + 1 :]:
            if ptr == 0:
                break
            out.append(val)
        env = _decode_all(out)
    return argv, env


class CgroupMoves:
    """The last cgroup move of each process, shared by the rings'
    decoders, and handed to that process's events in time order.

    Only moves on ``hierarchy`` count: the one :attr:`quark.Process.cgroup`
    is read from (0, cgroup v2; a legacy layout's v1 controller's; None:
    none a tracepoint tells, see :class:`quark.procfs.CgroupSource`).
    """

    MAX = 8192  # moves of threads (threaded cgroups) are never claimed

    def __init__(self, hierarchy: int | None = CGROUP2_HIERARCHY) -> None:
        self.hierarchy = hierarchy
        self._moves: dict[int, tuple[int, str]] = {}
        self._new = False

    def note(self, pid: int, time: int, path: str) -> None:
        moves = self._moves
        moves.pop(pid, None)
        moves[pid] = (time, path)
        if len(moves) > self.MAX:
            del moves[next(iter(moves))]
        self._new = True

    def apply(self, events: list[RawEvent]) -> None:
        """Give each task event the cgroup of the last move before it
        (a fork's child: its own, else its parent's); a process's exit
        forgets it."""
        moves = self._moves
        if not moves:
            return
        if self._new:  # moves read from other rings after these events
            events.sort(key=_time_of)
            self._new = False
        get = moves.get
        for ev in events:
            task = ev.task
            if task is None:
                continue
            pid = ev.pid
            m = get(pid)
            if m is None:
                if ev.kind is not _FORK or task.ppid is None:
                    continue
                m = get(task.ppid)
                if m is None:
                    continue
            if m[0] <= ev.time:
                task.cgroup = m[1]
            if ev.kind is _EXIT and ev.tid == pid:
                del moves[pid]

    def __len__(self) -> int:
        return len(self._moves)


_FORK = RawKind.WAKE_UP_NEW_TASK
_EXIT = RawKind.EXIT_THREAD
_CGROUP = RawKind.CGROUP


def _time_of(ev: RawEvent) -> int:
    return ev.time


@dataclass
class _Pending:
    tid: int
    time: int
    parts: dict[str, Rec]


class Decoder:
    """Perf records of one ring -> raw events.

    ``formats`` maps each trace event id to ``(probe name, format)``;
    ``resolve`` completes paths (mount points, /proc checks).
    """

    def __init__(
        self,
        formats: Mapping[int, tuple[str, EventFormat]],
        depths: Depths,
        resolve: PathResolver,
        *,
        thread_events: bool = False,
        max_env: int = 4096,
        exec_parts: tuple[str, ...] = ("exec", "args0", "args1"),
        cgroups: CgroupMoves | None = None,
    ) -> None:
        self.formats = formats
        self.depths = depths
        self.resolve = resolve
        self.thread_events = thread_events
        self.max_env = max_env
        self.exec_parts = frozenset(exec_parts)
        self._slots = sorted(p for p in exec_parts if p.startswith("args"))
        self._lost_while_pending = False
        self.lost = 0
        self.unpaired = 0  # execs delivered without all their parts
        self._pending: _Pending | None = None
        self.cgroups = cgroups if cgroups is not None else CgroupMoves()

    # -- records ---------------------------------------------------------
    def record(
        self, rtype: int, misc: int, body: bytes, out: list[RawEvent]
    ) -> None:
        if rtype == PERF_RECORD_SAMPLE:
            self._sample(body, out)
        elif rtype == PERF_RECORD_LOST:
            if len(body) < LOST.size:
                raise DecodeError(f"LOST record of {len(body)} bytes")
            self.lost += LOST.unpack_from(body)[1]
            self._lost_while_pending = True
        elif rtype == PERF_RECORD_COMM:
            self._comm(misc, body, out)

    def _comm(self, misc: int, body: bytes, out: list[RawEvent]) -> None:
        if misc & PERF_RECORD_MISC_COMM_EXEC:
            return  # the exec's own rename: the exec event carries it
        if len(body) < COMM_HEAD.size + SAMPLE_ID.size:
            raise DecodeError(f"COMM record of {len(body)} bytes")
        pid, tid = COMM_HEAD.unpack_from(body)
        if pid != tid and not self.thread_events:
            return
        name = body[COMM_HEAD.size : len(body) - SAMPLE_ID.size]
        _, _, time, cpu, _ = SAMPLE_ID.unpack_from(
            body, len(body) - SAMPLE_ID.size
        )
        self.flush(out)
        out.append(
            RawEvent(RawKind.COMM, time, pid, tid, cpu=cpu,
                     comm=_fsdecode(name.split(b"\0", 1)[0]))
        )  # fmt: skip

    def _sample(self, body: bytes, out: list[RawEvent]) -> None:
        if len(body) < SAMPLE.size:
            raise DecodeError(f"sample of {len(body)} bytes")
        pid, tid, time, cpu, _, size = SAMPLE.unpack_from(body)
        raw = body[SAMPLE.size : SAMPLE.size + size]
        if len(raw) < size or size < 2:
            raise DecodeError(
                f"sample says {size} raw bytes, {len(raw)} arrived"
            )
        etype = raw[0] | raw[1] << 8
        entry = self.formats.get(etype)
        if entry is None:
            raise DecodeError(f"sample of unknown trace event {etype}")
        probe, fmt = entry
        rec = fmt.unpack(raw)
        if probe in self.exec_parts:
            self._exec_part(probe, rec, time, out)
            return
        self.flush(out)
        if probe == "sched_process_exec":
            fn = rec["filename"]
            assert isinstance(fn, bytes)
            name = _fsdecode(fn)
            # the name as given: kept if absolute (the connector's resolved
            # path replaces it), else the exe is unknown until then
            out.append(
                RawEvent(RawKind.EXEC, time, pid, tid, cpu=cpu,
                         exe=name if name.startswith("/") else "")
            )  # fmt: skip
        elif probe == "fork":
            ev = self._task_event(RawKind.WAKE_UP_NEW_TASK, rec, time, cpu)
            if ev is not None:
                assert ev.task is not None
                # the parent shares the child's cwd at fork
                ev.task.cwd = self._path(ev.pid, "cwd", rec, pid) or ""
                out.append(ev)
        elif probe == "exit":
            self._exit(rec, time, cpu, out)
        elif probe == "setid":
            which = _ID_OF_WHICH.get(rec["which"])
            ev = self._task_event(RawKind.ID_CHANGE, rec, time, cpu)
            if ev is not None and which is not None:
                ev.id_change = int(which)
                out.append(ev)
        elif probe == "setsid":
            ev = self._task_event(RawKind.ID_CHANGE, rec, time, cpu)
            if ev is not None:
                ev.id_change = int(ID_CHANGE.SETSID)
                out.append(ev)
        elif (
            probe == CGROUP_TP[1]
            and rec["dst_root"] == self.cgroups.hierarchy
        ):
            moved, path = rec["pid"], _fsdecode(rec["dst_path"])
            assert isinstance(moved, int)
            self.cgroups.note(moved, time, path)
            # the move itself too, so that one made right after an exec is
            # on that exec's event (the engine folds it into the held one)
            task = RawTask(cgroup=path)
            out.append(RawEvent(_CGROUP, time, moved, cpu=cpu, task=task))

    def _task_event(
        self, kind: RawKind, rec: Rec, time: int, cpu: int
    ) -> RawEvent | None:
        flags = rec["flags"]
        assert isinstance(flags, int)
        if flags & PF_KTHREAD:
            return None
        tgid, tid = rec["tgid"], rec["tid"]
        assert isinstance(tgid, int) and isinstance(tid, int)
        if tgid != tid and not self.thread_events:
            return None
        return RawEvent(kind, time, tgid, tid, cpu=cpu, task=task_of(rec))

    def _exit(
        self,
        rec: Rec,
        time: int,
        cpu: int,
        out: list[RawEvent],
    ) -> None:
        flags, live = rec["flags"], rec["live"]
        assert isinstance(flags, int) and isinstance(live, int)
        if flags & PF_KTHREAD:
            return
        if live != 0 and not self.thread_events:
            return  # a thread, not the last one: not the process's exit
        tgid, tid = rec["tgid"], rec["tid"]
        assert isinstance(tgid, int) and isinstance(tid, int)
        code, sig_flags = rec["exit_code"], rec["sig_flags"]
        if isinstance(sig_flags, int) and sig_flags & SIGNAL_GROUP_EXIT:
            code = rec["group_exit"]
        assert isinstance(code, int)
        task = task_of(rec)
        task.exit_code = code
        # the last thread to go is the process's exit
        out.append(
            RawEvent(RawKind.EXIT_THREAD, time, tgid,
                     tgid if live == 0 else tid, cpu=cpu, task=task)
        )  # fmt: skip

    # -- exec parts --------------------------------------------------------
    def _exec_part(
        self,
        probe: str,
        rec: Rec,
        time: int,
        out: list[RawEvent],
    ) -> None:
        tid = rec["tid"]
        assert isinstance(tid, int)
        p = self._pending
        if p is not None and (p.tid != tid or probe in p.parts):
            self.flush(out)
            p = None
        if p is None:
            p = self._pending = _Pending(tid, time, {})
            self._lost_while_pending = False
        p.parts[probe] = rec
        if len(p.parts) == len(self.exec_parts):
            self.flush(out)

    def pending_since(self) -> int | None:
        return self._pending.time if self._pending is not None else None

    def flush(self, out: list[RawEvent]) -> None:
        """Emit the exec being assembled with what arrived of it."""
        p, self._pending = self._pending, None
        if p is None:
            return
        missing = len(self.exec_parts) - len(p.parts)
        if missing:
            self.unpaired += 1
            if not self._lost_while_pending:
                # no LOST record covers them: the kernel refused to record
                # them (too big for a perf trace record); count them here
                self.lost += missing
        rec = p.parts.get("exec")
        if rec is None:
            return  # its task part was lost (and counted by perf)
        ev = self._task_event(RawKind.EXEC_CONNECTOR, rec, p.time, -1)
        if ev is None:
            return
        ev.cpu = None
        task = ev.task
        assert task is not None
        task.cwd = self._path(ev.pid, "cwd", rec) or ""
        ev.exe = self._path(ev.pid, "exe", rec)
        parts = p.parts
        argv, env = stack_strings([parts.get(n) for n in self._slots])
        ev.args = argv
        if self.max_env > 0:
            task.env = env
        out.append(ev)

    def _path(
        self, pid: int, which: str, rec: Rec, alt: int | None = None
    ) -> str | None:
        depth = self.depths.cwd if which == "cwd" else self.depths.exe
        mnt = rec[f"{which}_mnt"]
        assert isinstance(mnt, int)
        return self.resolve(pid, which, mnt, _names(rec, which, depth), alt)


def task_of(rec: Rec) -> RawTask:
    g = rec.get
    major = g("tty_major") or 0
    minor = (g("tty_minor_start") or 0) + (g("tty_index") or 0)
    comm = g("comm")
    return RawTask(
        cap_inheritable=g("cap_inheritable"),
        cap_permitted=g("cap_permitted"),
        cap_effective=g("cap_effective"),
        cap_bset=g("cap_bset"),
        cap_ambient=g("cap_ambient"),
        start_time=g("start"),
        ppid=g("ppid"),
        uid=g("uid"), gid=g("gid"), suid=g("suid"),
        sgid=g("sgid"), euid=g("euid"), egid=g("egid"),
        pgid=g("pgid"), sid=g("sid"),
        tty_major=major if major else 0,
        tty_minor=minor if major else 0,
        uts_inonum=g("uts_inum"), ipc_inonum=g("ipc_inum"),
        mnt_inonum=g("mnt_inum"), net_inonum=g("net_inum"),
        comm=_name(comm) if isinstance(comm, bytes) else None,
        # 0: no mm (a kernel thread, an exit past exit_mm) or a fault
        exe_inode=g("exe_ino") or None,
    )  # fmt: skip
