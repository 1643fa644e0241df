"""The KPROBE backend's pure half: probe definitions and record decoding.

No syscalls here. :func:`probe_specs` turns struct offsets (from BTF or the
shipped table, :func:`quark.btf.kernel_offsets`) into ``kprobe_events``
fetch arguments; :func:`parse_format` reads a tracefs ``format`` file;
:class:`Decoder` turns perf records into :class:`quark.raw.RawEvent`.

Probes (all entry kprobes, the task in the first argument register):

``fork``  on ``wake_up_new_task(child)``: the child's task fields and cwd.
``exit``  on ``taskstats_exit(task, group_dead)``, or ``exit_files(task)``
          where CONFIG_TASKSTATS is off; both run after ``exit_code`` is
          set and before the task's files, fs and namespaces are released.
``exec``  on ``proc_exec_connector(task)``, right after the
          ``sched_process_exec`` tracepoint: task fields, cwd and the
          executable's path.
``args0`` .. ``args3`` on the same function: the new stack's pointer
          slots after ``argc`` (argv's pointers, a NULL, the environment's
          pointers, a NULL), 16 per probe, each with the string it points
          to at its exact length. Reading fixed-size areas instead would
          fault on every read past the top of the stack, hundreds of times
          per exec; strings fetched at their length never do. The decoder
          joins the parts of one exec again. A part the kernel could not
          record (a perf trace record is capped at 8 KiB) is counted as
          lost.

Paths. A fetch argument is at most 63 characters, which bounds how many
``d_parent`` hops one argument can take (about 7 for the cwd). Each path is
fetched as names from the leaf up to the root of its filesystem, plus the
mount's id; the mount id maps to its mount point and root through
``mountinfo``, so crossing mounts costs nothing. A path deeper than the
fetched names is completed from ``/proc/PID/cwd`` (or ``exe``) only when that
link's last components are exactly the names the kernel gave; otherwise the
path is ``None`` (unknown), never a made-up fragment.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quark.errors import DecodeError, NotSupportedError
from quark.raw.types import RawEvent, RawKind, RawTask
from quark.raw.types import fsdecode as _fsdecode

__all__ = [
    "SLOTS",
    "Arg",
    "Decoder",
    "EventFormat",
    "ProbeSpec",
    "parse_format",
    "probe_specs",
]

Rec = dict[str, Any]  # a decoded record: field name -> int or bytes

MAX_ARGSTR = 63  # MAX_ARGSTR_LEN in kernel/trace/trace_probe.h
MAX_DEPTH = 16  # path components tried per path (the text limit decides)
# argv and the environment: pointer slots of the new stack, 16 per probe
SLOTS_PER_PROBE = 16
SLOT_PROBES = 4
SLOTS = SLOTS_PER_PROBE * SLOT_PROBES
PF_KTHREAD = 0x00200000
SIGNAL_GROUP_EXIT = 0x00000004

FIRST_ARG = {"x86_64": "%di", "aarch64": "%x0"}  # the task, in every probe


@dataclass(frozen=True)
class Arg:
    name: str
    fetch: str
    type: str

    def text(self) -> str:
        return f"{self.name}={self.fetch}:{self.type}"


@dataclass(frozen=True)
class ProbeSpec:
    """One kprobe event: ``name`` in our group, on the first of
    ``targets`` that the kernel accepts."""

    name: str
    targets: tuple[str, ...]
    args: tuple[Arg, ...]
    required: bool = True
    what: str = ""

    def line_args(self) -> str:
        return " ".join(a.text() for a in self.args)


def _d(off: int, inner: str) -> str:
    return f"{off:+d}({inner})"


class _Builder:
    def __init__(self, o: Mapping[str, int], reg: str) -> None:
        self.o = o
        self.reg = reg
        self.args: list[Arg] = []

    def add(self, name: str, fetch: str, typ: str) -> None:
        if len(f"{fetch}:{typ}") > MAX_ARGSTR:
            raise NotSupportedError(
                f"kprobe fetch argument {name} is longer than the kernel's "
                f"{MAX_ARGSTR}-character limit: {fetch}:{typ}"
            )
        self.args.append(Arg(name, fetch, typ))

    def fits(self, fetch: str, typ: str) -> bool:
        return len(f"{fetch}:{typ}") <= MAX_ARGSTR

    def task(self) -> None:
        o, b = self.o, self.reg
        self.add("tgid", _d(o["task_struct.tgid"], b), "s32")
        self.add("tid", _d(o["task_struct.pid"], b), "s32")
        self.add("flags", _d(o["task_struct.flags"], b), "u32")
        leader = _d(o["task_struct.group_leader"], b)
        parent = _d(o["task_struct.real_parent"], leader)
        self.add("ppid", _d(o["task_struct.tgid"], parent), "s32")
        self.add("start", _d(o["task_struct.start_boottime"], b), "u64")
        self.add("comm", _d(o["task_struct.comm"], b), "string")
        cred = _d(o["task_struct.cred"], b)
        for cap in ("inheritable", "permitted", "effective", "bset",
                    "ambient"):  # fmt: skip
            self.add(f"cap_{cap}", _d(o[f"cred.cap_{cap}"], cred), "u64")
        for ident in ("uid", "gid", "suid", "sgid", "euid", "egid"):
            self.add(ident, _d(o[f"cred.{ident}"], cred), "u32")
        signal = _d(o["task_struct.signal"], b)
        if "signal_struct.pids" in o:
            nr = o["pid.numbers"] + o["upid.nr"]
            for name, kind in (("pgid", "PGID"), ("sid", "SID")):
                slot = (
                    o["signal_struct.pids"] + 8 * o[f"pid_type.PIDTYPE_{kind}"]
                )
                self.add(name, _d(nr, _d(slot, signal)), "s32")
        tty = _d(o["signal_struct.tty"], signal)
        driver = _d(o["tty_struct.driver"], tty)
        self.add("tty_major", _d(o["tty_driver.major"], driver), "s32")
        self.add("tty_minor_start", _d(o["tty_driver.minor_start"], driver),
                 "s32")  # fmt: skip
        self.add("tty_index", _d(o["tty_struct.index"], tty), "s32")
        nsp = _d(o["task_struct.nsproxy"], b)
        for ns in ("uts", "ipc", "mnt", "net"):
            ptr = _d(o[f"nsproxy.{ns}_ns"], nsp)
            self.add(f"{ns}_inum", _d(o[f"{ns}_namespace.proc_inum"], ptr),
                     "u32")  # fmt: skip

    def exit(self) -> None:
        o, b = self.o, self.reg
        signal = _d(o["task_struct.signal"], b)
        self.add("exit_code", _d(o["task_struct.exit_code"], b), "s32")
        self.add("sig_flags", _d(o["signal_struct.flags"], signal), "u32")
        self.add("group_exit", _d(o["signal_struct.group_exit_code"], signal),
                 "s32")  # fmt: skip
        self.add("live", _d(o["signal_struct.live"], signal), "s32")

    def path(self, prefix: str, dentry: str, vfsmount: str) -> int:
        """Names from ``dentry`` up, as many as fit; returns how many."""
        o = self.o
        mnt_id = o["mount.mnt_id"] - o["mount.mnt"]
        self.add(f"{prefix}_mnt", _d(mnt_id, vfsmount), "s32")
        n = 0
        cur = dentry
        while n < MAX_DEPTH:
            fetch = "+0(" + _d(o["dentry.d_name.name"], cur) + ")"
            if not self.fits(fetch, "string"):
                break
            self.add(f"{prefix}{n}", fetch, "string")
            cur = _d(o["dentry.d_parent"], cur)
            n += 1
        if n < 2:
            raise NotSupportedError(
                f"kprobe fetch arguments too short for any {prefix} path"
            )
        return n

    def cwd(self) -> int:
        o = self.o
        fs = _d(o["task_struct.fs"], self.reg)
        return self.path(
            "cwd",
            _d(o["fs_struct.pwd.dentry"], fs),
            _d(o["fs_struct.pwd.mnt"], fs),
        )

    def exe(self) -> int:
        o = self.o
        mm = _d(o["task_struct.mm"], self.reg)
        f = _d(o["mm_struct.exe_file"], mm)
        return self.path(
            "exe", _d(o["file.f_path.dentry"], f), _d(o["file.f_path.mnt"], f)
        )

    def arg_slots(self, part: int) -> None:
        """``argc`` (part 0) and 16 slots: ``p<i>`` the pointer at
        start_stack + 8 + 8i, ``s<i>`` the user string it points to."""
        o, b = self.o, self.reg
        self.add("tid", _d(o["task_struct.pid"], b), "s32")
        mm = _d(o["task_struct.mm"], b)
        stack = _d(o["mm_struct.start_stack"], mm)
        if part == 0:
            self.add("argc", f"+u0({stack})", "u64")
        first = part * SLOTS_PER_PROBE
        for i in range(SLOTS_PER_PROBE):
            ptr = f"+u{8 + 8 * (first + i)}({stack})"
            self.add(f"p{i}", ptr, "u64")
            self.add(f"s{i}", f"+u0({ptr})", "ustring")


@dataclass
class Depths:
    cwd: int = 0
    exe: int = 0


def probe_specs(
    offsets: Mapping[str, int],
    *,
    machine: str | None = None,
) -> tuple[list[ProbeSpec], Depths]:
    """The probes, their fetch arguments built from ``offsets``."""
    arch = machine or os.uname().machine
    reg = FIRST_ARG.get(arch)
    if reg is None:
        raise NotSupportedError(
            f"the kprobe backend knows the argument registers of "
            f"{', '.join(FIRST_ARG)}, not {arch}"
        )
    depths = Depths()

    fork = _Builder(offsets, reg)
    fork.task()
    depths.cwd = fork.cwd()

    ex = _Builder(offsets, reg)
    ex.task()
    ex.exit()

    exe = _Builder(offsets, reg)
    exe.task()
    exe.cwd()
    depths.exe = exe.exe()

    specs = [
        ProbeSpec("fork", ("wake_up_new_task",), tuple(fork.args),
                  what="fork (wake_up_new_task)"),
        ProbeSpec("exit", ("taskstats_exit", "exit_files"), tuple(ex.args),
                  what="exit (taskstats_exit or exit_files)"),
        ProbeSpec("exec", ("proc_exec_connector",), tuple(exe.args),
                  required=False,
                  what="exec details: cwd, exe, ids (proc_exec_connector)"),
    ]  # fmt: skip
    for part in range(SLOT_PROBES):
        b = _Builder(offsets, reg)
        b.arg_slots(part)
        specs.append(
            ProbeSpec(f"args{part}", ("proc_exec_connector",), tuple(b.args),
                      required=False,
                      what=f"argv and environment, part {part} "
                      "(proc_exec_connector)")
        )  # fmt: skip
    return specs, depths


# -- tracefs format files -----------------------------------------------------

_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d+);)?"
)


@dataclass
class Field:
    name: str
    offset: int
    size: int
    signed: bool
    kind: str  # "int", "str" (__data_loc), "bytes" (array)


@dataclass
class EventFormat:
    """A trace event's record layout, from its ``format`` file."""

    name: str
    id: int
    fields: dict[str, Field] = field(default_factory=dict)
    _struct: struct.Struct | None = None

    def compile(self, names: tuple[str, ...]) -> None:
        """Prepare :meth:`unpack` for ``names``, in that order."""
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise DecodeError(
                f"the format of {self.name} lacks field(s) {missing}"
            )
        order = sorted((self.fields[n] for n in names), key=lambda f: f.offset)
        fmt = "<"
        pos = 0
        for f in order:
            if f.offset < pos:
                raise DecodeError(f"{self.name}: fields overlap at {f.name}")
            fmt += f"{f.offset - pos}x" if f.offset > pos else ""
            if f.kind == "int":
                code = {1: "b", 2: "h", 4: "i", 8: "q"}.get(f.size)
                if code is None:
                    raise DecodeError(
                        f"{self.name}.{f.name}: integer of {f.size} bytes"
                    )
                fmt += code if f.signed else code.upper()
            elif f.kind == "str":
                fmt += "I"
            else:
                fmt += f"{f.size}s"
            pos = f.offset + f.size
        self._struct = struct.Struct(fmt)
        self._names = tuple(f.name for f in order)
        self._strings = tuple(
            i for i, f in enumerate(order) if f.kind == "str"
        )

    @property
    def size(self) -> int:
        assert self._struct is not None
        return self._struct.size

    def unpack(self, raw: bytes) -> Rec:
        """The compiled fields of one record; strings resolved (without
        their NUL; a fault and an empty string both read as b"")."""
        st = self._struct
        assert st is not None
        n = len(raw)
        if n < st.size:
            raise DecodeError(
                f"{self.name} record of {n} bytes, shorter than "
                f"its {st.size}-byte layout"
            )
        values = list(st.unpack_from(raw))
        for i in self._strings:
            loc = values[i]
            off = loc & 0xFFFF
            end = off + (loc >> 16)
            if end > n:
                raise DecodeError(
                    f"{self.name}.{self._names[i]}: string at "
                    f"{off}+{loc >> 16} beyond the {n}-byte record"
                )
            if end == off:
                values[i] = b""
            elif raw[end - 1] == 0:
                values[i] = raw[off : end - 1]
            else:
                values[i] = raw[off:end]
        return dict(zip(self._names, values, strict=True))


def parse_format(text: str) -> EventFormat:
    """A tracefs ``format`` file."""
    m = re.search(r"^name:\s*(\S+)", text, re.M)
    i = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not m or not i:
        raise DecodeError("a trace format without name or ID")
    ev = EventFormat(m.group(1), int(i.group(1)))
    for fm in _FIELD.finditer(text):
        decl = fm.group("decl").strip()
        off, size = int(fm.group("off")), int(fm.group("size"))
        signed = fm.group("signed") == "1"
        if decl.startswith("__data_loc"):
            name = decl.split()[-1].split("[")[0]
            ev.fields[name] = Field(name, off, size, signed, "str")
            continue
        name = decl.split()[-1]
        if "[" in name:
            ev.fields[name.split("[")[0]] = Field(
                name.split("[")[0], off, size, signed, "bytes"
            )
        else:
            ev.fields[name] = Field(name, off, size, signed, "int")
    return ev


# -- perf records -> raw events ----------------------------------------------

# PERF_SAMPLE_TID | TIME | CPU | RAW: pid, tid, time, cpu, res, raw size
SAMPLE = struct.Struct("<IIQIII")
SAMPLE_ID = struct.Struct("<IIQII")  # sample_id_all: pid, tid, time, cpu, res
LOST = struct.Struct("<QQ")
COMM_HEAD = struct.Struct("<II")
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_SAMPLE = 9
MISC_COMM_EXEC = 1 << 13

PathResolver = Callable[[int, str, int, list[bytes], int | None], str | None]
"""``(pid, "cwd"|"exe", mount id, names leaf first, another pid that shares
the path or None) -> path or None``."""


_NAME_KEYS = {
    which: tuple(f"{which}{i}" for i in range(MAX_DEPTH))
    for which in ("cwd", "exe")
}


def _names(rec: Rec, prefix: str, depth: int) -> list[bytes]:
    return [rec[k] for k in _NAME_KEYS[prefix][:depth]]


def _decode_all(values: list[bytes]) -> tuple[str, ...]:
    """Decode many strings in one call (NUL cannot occur inside them, and
    surrogateescape decodes byte by byte)."""
    if not values:
        return ()
    return tuple(_fsdecode(b"\0".join(values)).split("\0"))


def path_in_fs(names: list[bytes]) -> str | None:
    """Leaf-first names up to the filesystem's root (``/``) -> the path
    inside that filesystem; None if the root is not among them."""
    parts: list[bytes] = []
    for n in names:
        if n == b"/":
            parts.reverse()
            return _fsdecode(b"/" + b"/".join(parts))
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
        self.decode_errors = 0
        self.unpaired = 0  # execs delivered without all their parts
        self._pending: _Pending | None = None

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
        if misc & MISC_COMM_EXEC:
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
        comm=_fsdecode(comm) if isinstance(comm, bytes) else None,
    )  # fmt: skip
