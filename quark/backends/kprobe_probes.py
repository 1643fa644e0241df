"""The KPROBE backend's probes: ``kprobe_events`` fetch arguments built
from struct offsets (from BTF or the shipped table,
:func:`quark.btf.kernel_offsets`), within the kernel's limits. Pure code:
no syscalls.

Probes (all entry kprobes, the task in the first argument register):

``fork``  on ``wake_up_new_task(child)``: the child's task fields (with
          the executable's inode number) and cwd.
``exit``  on ``taskstats_exit(task, group_dead)``, or ``exit_files(task)``
          where CONFIG_TASKSTATS is off; both run after ``exit_code`` is
          set and before the task's files, fs and namespaces are released.
``exec``  on ``proc_exec_connector(task)``, right after the
          ``sched_process_exec`` tracepoint: task fields, cwd and the
          executable's path.
``setid``  on ``proc_id_connector(task, which)``, which the set*id calls
          run after committing the new credentials (``which`` is
          PROC_EVENT_UID or PROC_EVENT_GID): the task with its new ids.
``setsid`` on ``proc_sid_connector(task)``, which setsid runs once the
          new session is set: the task with its new sid and pgid.
          Both are ID_CHANGE; a kernel without the process connector
          (CONFIG_PROC_EVENTS off) lists them in the skipped probes.
``args0`` .. ``args3`` on the same function: the new stack's pointer
          slots after ``argc`` (argv's pointers, a NULL, the environment's
          pointers, a NULL), 16 per probe, each with the string it points
          to at its exact length. Reading fixed-size areas instead would
          fault on every read past the top of the stack, hundreds of times
          per exec; strings fetched at their length never do. The decoder
          (:mod:`quark.backends.kprobe_decode`) joins the parts of one exec
          again. A part the kernel could not record (a perf trace record is
          capped at 8 KiB) is counted as lost.

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
from collections.abc import Mapping
from dataclasses import dataclass

from quark.errors import NotSupportedError

__all__ = [
    "MAX_ARGSTR",
    "MAX_DEPTH",
    "SLOTS",
    "SLOTS_PER_PROBE",
    "Arg",
    "Depths",
    "ProbeSpec",
    "probe_specs",
]

MAX_ARGSTR = 63  # MAX_ARGSTR_LEN in kernel/trace/trace_probe.h
MAX_DEPTH = 16  # path components tried per path (the text limit decides)
# argv and the environment: pointer slots of the new stack, 16 per probe
SLOTS_PER_PROBE = 16
SLOT_PROBES = 4
SLOTS = SLOTS_PER_PROBE * SLOT_PROBES

FIRST_ARG = {"x86_64": "%di", "aarch64": "%x0"}  # the task, in every probe
SECOND_ARG = {"x86_64": "%si", "aarch64": "%x1"}


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
        self.exe_inode()

    def exe_inode(self) -> None:
        """``exe_ino``: task->mm->exe_file->f_inode->i_ino, where the
        offsets know both f_inode and i_ino (older tables do not). The
        kernel records 0 where it faults (no mm: a kernel thread, or an
        exit past exit_mm), which the decoder reads as unknown."""
        o = self.o
        f_inode, i_ino = o.get("file.f_inode"), o.get("inode.i_ino")
        if f_inode is None or i_ino is None:
            return
        mm = _d(o["task_struct.mm"], self.reg)
        exe = _d(o["mm_struct.exe_file"], mm)
        self.add("exe_ino", _d(i_ino, _d(f_inode, exe)), "u64")

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

    idc = _Builder(offsets, reg)
    idc.task()
    idc.add("which", SECOND_ARG[arch], "u32")
    sid = _Builder(offsets, reg)
    sid.task()

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
    specs += [
        ProbeSpec("setid", ("proc_id_connector",), tuple(idc.args),
                  required=False,
                  what="ID_CHANGE of set*id (proc_id_connector)"),
        ProbeSpec("setsid", ("proc_sid_connector",), tuple(sid.args),
                  required=False,
                  what="ID_CHANGE of setsid (proc_sid_connector)"),
    ]  # fmt: skip
    return specs, depths
