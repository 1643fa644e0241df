"""The KPROBE backend's perf records decoded into raw events (records are
laid out exactly as the kernel's format files describe them)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quark import ID_CHANGE
from quark.backends.kprobe_decode import (
    CGROUP_FIELDS,
    CGROUP_TP,
    CgroupMoves,
    Decoder,
    path_in_fs,
    task_of,
)
from quark.backends.kprobe_probes import SLOTS, Depths, ProbeSpec, probe_specs
from quark.backends.tracefs_format import parse_format
from quark.errors import DecodeError
from quark.raw.types import RawKind
from tests.unit.test_kprobe_probes import OFFSETS, SIZES

# with the exe's inode, which the shipped table may lack
EXE_OFFSETS = {**OFFSETS, "file.f_inode": 32, "inode.i_ino": 64}


def _specs() -> tuple[list[ProbeSpec], Depths]:
    return probe_specs(EXE_OFFSETS, machine="x86_64")


COMMON = (
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;"
    "\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
)


class Event:
    """A kprobe event's format text, and records built from values."""

    def __init__(self, eid: int, spec: ProbeSpec) -> None:
        self.id = eid
        self.spec = spec
        lines = ["\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;"
                 "\tsigned:0;\n"]  # fmt: skip
        off = 16
        self.layout: list[tuple[str, str, int]] = []
        for a in spec.args:
            size = SIZES[a.type]
            if a.type in ("string", "ustring"):
                decl = f"__data_loc char[] {a.name}"
            else:
                decl = f"{a.type} {a.name}"
            signed = 1 if a.type.startswith("s") else 0
            lines.append(
                f"\tfield:{decl};\toffset:{off};\tsize:{size};"
                f"\tsigned:{signed};\n"
            )
            self.layout.append((a.name, a.type, off))
            off += size
        self.fixed = off
        self.text = (
            f"name: {spec.name}\nID: {eid}\nformat:\n{COMMON}"
            + "".join(lines)
            + '\nprint fmt: "(%lx)"\n'
        )

    def raw(self, **values: object) -> bytes:
        head = bytearray(self.fixed)
        struct.pack_into("<HBBi", head, 0, self.id, 0, 0, 1)
        tail = bytearray()
        for name, typ, off in self.layout:
            v = values.get(name, 0)
            if typ in ("string", "ustring"):
                # the kernel records a fault, and an empty user string, as
                # a zero-length string
                s = (v + b"\0") if isinstance(v, bytes) and v else b""
                loc = (len(s) << 16) | (self.fixed + len(tail))
                struct.pack_into("<I", head, off, loc)
                tail += s
            else:
                fmt = {"s32": "<i", "u32": "<I", "u64": "<Q"}[typ]
                struct.pack_into(fmt, head, off, v)
        return bytes(head + tail)


EXEC_TP_FORMAT = (
    "name: sched_process_exec\nID: 300\nformat:\n" + COMMON
    + "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:1;\n"
    "\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n"
    "\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n"
)  # fmt: skip


def _sample(raw: bytes, pid: int, tid: int, time: int, cpu: int = 0) -> bytes:
    pad = (-(len(raw) + 4)) % 8
    return (
        struct.pack("<IIQIII", pid, tid, time, cpu, 0, len(raw) + pad)
        + raw
        + b"\0" * pad
    )


class Resolver:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int, list[bytes], int | None]] = []

    def __call__(
        self,
        pid: int,
        which: str,
        mnt: int,
        names: list[bytes],
        alt: int | None = None,
    ) -> str | None:
        self.calls.append((pid, which, mnt, names, alt))
        return path_in_fs(names)


def _formats() -> tuple[dict, dict[str, Event], Depths]:
    """The probes' formats as the kernel would write them, compiled."""
    specs, depths = _specs()
    events = {s.name: Event(100 + i, s) for i, s in enumerate(specs)}
    formats = {}
    for ev in events.values():
        fmt = parse_format(ev.text)
        fmt.compile(tuple(a.name for a in ev.spec.args))
        formats[ev.id] = (ev.spec.name, fmt)
    return formats, events, depths


@pytest.fixture
def world() -> tuple[Decoder, dict[str, Event], Resolver]:
    formats, events, depths = _formats()
    tp = parse_format(EXEC_TP_FORMAT)
    tp.compile(("filename",))
    formats[tp.id] = ("sched_process_exec", tp)
    resolver = Resolver()
    parts = ("exec", "args0", "args1", "args2", "args3")
    dec = Decoder(formats, depths, resolver, max_env=4096, exec_parts=parts)
    return dec, events, resolver


TASK = {
    "tgid": 500, "tid": 500, "ppid": 400, "start": 123456789,
    "comm": b"sh", "cap_inheritable": 0, "cap_permitted": 0x1FF,
    "cap_effective": 0x1FF, "cap_bset": 0x1FFFFFFFFFF, "cap_ambient": 0,
    "uid": 1000, "gid": 1000, "suid": 1000, "sgid": 1000, "euid": 1000,
    "egid": 1000, "pgid": 400, "sid": 300, "tty_major": 136,
    "tty_minor_start": 0, "tty_index": 3, "uts_inum": 11, "ipc_inum": 12,
    "mnt_inum": 13, "net_inum": 14, "exe_ino": 654321,
}  # fmt: skip
CWD = {
    "cwd0": b"work",
    "cwd1": b"home",
    "cwd2": b"/",
    "cwd3": b"/",
    "cwd_mnt": 21,
}


def test_a_fork_carries_the_childs_task_and_cwd(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, resolver = world
    out: list = []
    raw = ev["fork"].raw(**TASK, **CWD)
    dec.record(9, 0, _sample(raw, 400, 400, 1000), out)
    (fork,) = out
    assert fork.kind == RawKind.WAKE_UP_NEW_TASK
    assert (fork.pid, fork.tid, fork.time) == (500, 500, 1000)
    t = fork.task
    assert t.ppid == 400 and t.comm == "sh" and t.start_time == 123456789
    assert (t.uid, t.euid, t.pgid, t.sid) == (1000, 1000, 400, 300)
    assert (t.tty_major, t.tty_minor) == (136, 3)
    assert (t.uts_inonum, t.net_inonum) == (11, 14)
    assert t.cap_bset == 0x1FFFFFFFFFF
    assert t.exe_inode == 654321
    assert t.cwd == "/home/work"
    # the parent (the sample's pid) shares the cwd at fork
    assert resolver.calls[0][:3] == (500, "cwd", 21)
    assert resolver.calls[0][4] == 400


def test_the_exe_inode_is_unknown_where_the_kernel_read_0(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    out: list = []
    big = (1 << 63) + 5  # i_ino is an unsigned long
    raw = ev["fork"].raw(**{**TASK, "exe_ino": big}, **CWD)
    dec.record(9, 0, _sample(raw, 400, 400, 1), out)
    # an exit past exit_mm, or a fetch that faulted: the kernel wrote 0
    raw = ev["exit"].raw(**{**TASK, "exe_ino": 0}, live=0, exit_code=0)
    dec.record(9, 0, _sample(raw, 500, 500, 2), out)
    fork, ex = out
    assert fork.task.exe_inode == big
    assert ex.task.exe_inode is None
    # offsets without f_inode or i_ino: no such field in the records
    assert task_of({"tgid": 1, "tid": 1}).exe_inode is None


def test_threads_and_kernel_threads_are_not_processes(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    out: list = []
    thread = ev["fork"].raw(**{**TASK, "tid": 501}, **CWD)
    kthread = ev["fork"].raw(**{**TASK, "flags": 0x00200000}, **CWD)
    for raw in (thread, kthread):
        dec.record(9, 0, _sample(raw, 400, 400, 1000), out)
    assert out == []


def test_an_exit_keeps_the_signal_and_the_group_exit_code(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    out: list = []
    # a thread that is not the last: no process exit
    raw = ev["exit"].raw(**{**TASK, "tid": 501}, live=1, exit_code=0)
    dec.record(9, 0, _sample(raw, 500, 501, 10), out)
    assert out == []
    # killed by SIGKILL as a group: group_exit_code wins
    raw = ev["exit"].raw(
        **{**TASK, "tid": 502}, live=0, exit_code=0, sig_flags=0x4,
        group_exit=9,
    )  # fmt: skip
    dec.record(9, 0, _sample(raw, 500, 502, 20), out)
    (ex,) = out
    assert ex.kind == RawKind.EXIT_THREAD
    assert (ex.pid, ex.tid) == (500, 500)  # the process, not the thread
    assert ex.task.exit_code == 9
    out.clear()
    raw = ev["exit"].raw(**TASK, live=0, exit_code=7 << 8)
    dec.record(9, 0, _sample(raw, 500, 500, 30), out)
    assert out[0].task.exit_code == 7 << 8


def _stack(argv: list[bytes], env: list[bytes]) -> list[dict]:
    """The four slot parts of a new stack holding ``argv`` and ``env``:
    argv's pointers, NULL, env's pointers, NULL, then auxv-like words
    (small numbers that fault as string addresses)."""
    slots: list[tuple[int, bytes]] = [(0x7FF000 + i, a) for i, a in
                                      enumerate(argv)]  # fmt: skip
    slots.append((0, b""))
    slots += [(0x7FF800 + i, e) for i, e in enumerate(env)]
    slots.append((0, b""))
    while len(slots) < SLOTS:
        slots.append((6, b""))  # AT_PAGESZ-like: the string read faults
    parts = []
    for part in range(4):
        vals: dict[str, object] = {"tid": 500}
        if part == 0:
            vals["argc"] = len(argv)
        for i in range(16):
            ptr, val = slots[part * 16 + i]
            vals[f"p{i}"] = ptr
            vals[f"s{i}"] = val
        parts.append(vals)
    return parts


def test_an_exec_is_joined_from_its_parts_in_any_order(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    argv = [b"/bin/true", b"with space", b"", b"\xff-not-utf8",
            b"x" * 3000, b"end"]  # fmt: skip
    env = [b"A=1", b"B=", b"C=3"]
    exe = {
        "exe0": b"true",
        "exe1": b"bin",
        "exe2": b"usr",
        "exe3": b"/",
        "exe_mnt": 21,
    }
    st = _stack(argv, env)
    raws = [
        ev["args2"].raw(**st[2]),
        ev["exec"].raw(**TASK, **CWD, **exe),
        ev["args1"].raw(**st[1]),
        ev["args0"].raw(**st[0]),
        ev["args3"].raw(**st[3]),
    ]
    out: list = []
    tp = parse_format(EXEC_TP_FORMAT)
    fn = b"/bin/true\0"
    tp_raw = struct.pack("<HBBiIii", tp.id, 0, 0, 500,
                         (len(fn) << 16) | 20, 500, 500) + fn  # fmt: skip
    dec.record(9, 0, _sample(tp_raw, 500, 500, 99), out)
    for i, raw in enumerate(raws):
        dec.record(9, 0, _sample(raw, 500, 500, 100 + i), out)
    first, conn = out
    assert first.kind == RawKind.EXEC and first.exe == "/bin/true"
    assert conn.kind == RawKind.EXEC_CONNECTOR
    assert conn.exe == "/usr/bin/true"
    assert conn.task.exe_inode == 654321
    assert conn.args == tuple(os.fsdecode(a) for a in argv)
    assert conn.task.env == ("A=1", "B=", "C=3")
    assert conn.task.cwd == "/home/work"
    assert dec.unpaired == 0 and dec.lost == 0


def test_argv_longer_than_the_slots_is_cut_and_env_unknown(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    argv = [b"a%d" % i for i in range(70)]
    st = _stack(argv[:SLOTS], [])
    st[0]["argc"] = 70
    out: list = []
    for raw in [ev["exec"].raw(**TASK, **CWD)] + [
        ev[f"args{i}"].raw(**st[i]) for i in range(4)
    ]:
        dec.record(9, 0, _sample(raw, 500, 500, 5), out)
    (conn,) = out
    assert conn.args == tuple(os.fsdecode(a) for a in argv[:SLOTS])
    assert conn.task.env is None


def test_an_exec_missing_a_part_is_delivered_and_the_part_counted(
    world,
) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    argv = [b"a%d" % i for i in range(20)]
    st = _stack(argv, [b"E=1"])
    out: list = []
    for raw in (
        ev["exec"].raw(**TASK, **CWD),
        ev["args0"].raw(**st[0]),
        ev["args2"].raw(**st[2]),
        ev["args3"].raw(**st[3]),
    ):
        dec.record(9, 0, _sample(raw, 500, 500, 5), out)
    assert out == []  # still waiting for its parts
    dec.flush(out)
    (conn,) = out
    # args1 never came: argv stops where the known slots stop
    assert conn.args == tuple(os.fsdecode(a) for a in argv[:16])
    assert conn.task.env is None
    assert dec.unpaired == 1
    # no LOST record covered it: the decoder counts it
    assert dec.lost == 1
    # one that a LOST record covers is not counted twice
    dec.record(9, 0, _sample(ev["exec"].raw(**TASK, **CWD), 500, 500, 6), [])
    dec.record(2, 0, struct.pack("<QQ", 1, 4), [])
    dec.flush([])
    assert dec.lost == 1 + 4


def test_a_relative_exec_name_is_unknown_until_resolved(world) -> None:  # type: ignore[no-untyped-def]
    dec, _, _ = world
    tp = parse_format(EXEC_TP_FORMAT)
    fn = b"./x\0"
    raw = struct.pack("<HBBiIii", tp.id, 0, 0, 7, (len(fn) << 16) | 20,
                      7, 7) + fn  # fmt: skip
    out: list = []
    dec.record(9, 0, _sample(raw, 7, 7, 1), out)
    assert out[0].exe == ""  # replaces the parent's, as unknown


def test_comm_records(world) -> None:  # type: ignore[no-untyped-def]
    dec, _, _ = world
    sid = struct.pack("<IIQII", 500, 500, 4242, 1, 0)
    out: list = []
    body = struct.pack("<II", 500, 500) + b"renamed\0" + sid
    dec.record(3, 0, body, out)
    dec.record(3, 1 << 13, body, out)  # an exec's rename: skipped
    thread = struct.pack("<II", 500, 501) + b"worker\0\0" + sid
    dec.record(3, 0, thread, out)
    (comm,) = out
    assert comm.kind == RawKind.COMM and comm.comm == "renamed"
    assert comm.time == 4242


def test_lost_records_are_counted(world) -> None:  # type: ignore[no-untyped-def]
    dec, _, _ = world
    out: list = []
    dec.record(2, 0, struct.pack("<QQ", 1, 17), out)
    dec.record(2, 0, struct.pack("<QQ", 1, 3), out)
    assert dec.lost == 20 and out == []


def test_corrupt_samples_are_decode_errors(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    good = _sample(ev["fork"].raw(**TASK, **CWD), 1, 1, 1)
    bad = [
        good[:10],  # shorter than the sample header
        good[:40],  # the raw part cut short
        _sample(b"\x01\x00" + b"\0" * 30, 1, 1, 1),  # unknown event
        _sample(ev["fork"].raw(**TASK, **CWD)[:50], 1, 1, 1),  # short
        struct.pack("<QQ", 1, 2)[:8],  # LOST cut short
    ]
    kinds = [9, 9, 9, 9, 2]
    for rtype, body in zip(kinds, bad, strict=True):
        with pytest.raises(DecodeError):
            dec.record(rtype, 0, body, [])
    # a string whose location points outside the record
    raw = bytearray(ev["fork"].raw(**TASK, **CWD))
    comm_at = next(o for n, _, o in ev["fork"].layout if n == "comm")
    struct.pack_into("<I", raw, comm_at, (200 << 16) | 60000)
    with pytest.raises(DecodeError, match="beyond"):
        dec.record(9, 0, _sample(bytes(raw), 1, 1, 1), [])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_records_never_raise_anything_but_decode_errors(
    data: bytes,
) -> None:
    formats, _, depths = _formats()
    dec = Decoder(formats, depths, Resolver(), exec_parts=("exec",))
    for rtype in (2, 3, 9):
        try:
            dec.record(rtype, 0, data, [])
        except DecodeError:
            pass
    # a random payload behind a valid event id
    body = _sample(struct.pack("<H", 100) + data, 1, 1, 1)
    try:
        dec.record(9, 0, body, [])
    except DecodeError:
        pass


def test_set_id_and_setsid_are_id_changes_with_the_new_task(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    out: list = []
    new = {**TASK, "uid": 0, "euid": 0, "suid": 0, "sid": 500, "pgid": 500}
    for which in (0x4, 0x40, 0x80):  # UID, GID, then one that is neither
        raw = ev["setid"].raw(**new, which=which)
        dec.record(9, 0, _sample(raw, 500, 500, 10 + which), out)
    dec.record(9, 0, _sample(ev["setsid"].raw(**new), 500, 500, 300), out)
    # a thread's change is not the process's (without THREAD_EVENTS)
    raw = ev["setid"].raw(**{**new, "tid": 501}, which=0x4)
    dec.record(9, 0, _sample(raw, 500, 501, 400), out)
    assert [(e.kind, e.id_change) for e in out] == [
        (RawKind.ID_CHANGE, ID_CHANGE.SETUID),
        (RawKind.ID_CHANGE, ID_CHANGE.SETGID),
        (RawKind.ID_CHANGE, ID_CHANGE.SETSID),
    ]
    t = out[0].task
    assert (t.uid, t.euid, t.suid, t.gid) == (0, 0, 0, 1000)
    assert (out[2].task.sid, out[2].task.pgid) == (500, 500)


CGROUP_FORMAT = (
    "name: cgroup_attach_task\nID: 538\nformat:\n" + COMMON
    + "\tfield:int dst_root;\toffset:8;\tsize:4;\tsigned:1;\n"
    "\tfield:int dst_level;\toffset:12;\tsize:4;\tsigned:1;\n"
    "\tfield:u64 dst_id;\toffset:16;\tsize:8;\tsigned:0;\n"
    "\tfield:int pid;\toffset:24;\tsize:4;\tsigned:1;\n"
    "\tfield:__data_loc char[] dst_path;\toffset:28;\tsize:4;\tsigned:0;\n"
    "\tfield:__data_loc char[] comm;\toffset:32;\tsize:4;\tsigned:0;\n"
)  # fmt: skip


def _attach(root: int, pid: int, path: bytes) -> bytes:
    """A cgroup_attach_task record as the host's kernel lays it out."""
    p = path + b"\0"
    comm = b"sh\0"
    head = struct.pack("<HBBiiiQi", 538, 0, 0, 1, root, 2, 77, pid)
    fixed = len(head) + 8
    locs = struct.pack(
        "<II", (len(p) << 16) | fixed, (len(comm) << 16) | (fixed + len(p))
    )
    return head + locs + p + comm


def test_cgroup_moves_reach_the_moved_processes_later_events(world) -> None:  # type: ignore[no-untyped-def]
    dec, ev, _ = world
    tp = parse_format(CGROUP_FORMAT)
    tp.compile(CGROUP_FIELDS)
    dec.formats[tp.id] = (CGROUP_TP[1], tp)
    other = Decoder(dec.formats, dec.depths, dec.resolve,
                    cgroups=dec.cgroups)  # another CPU's ring  # fmt: skip
    out: list = []
    # process 500 forks before its move, 600 is moved on a v1 hierarchy
    dec.record(9, 0, _sample(ev["fork"].raw(**TASK, **CWD), 400, 400, 5), out)
    dec.record(9, 0, _sample(_attach(3, 600, b"/v1"), 1, 1, 8), out)
    # the exit of 500 comes first in this ring, read before the other
    raw = ev["exit"].raw(**TASK, live=0, exit_code=0)
    dec.record(9, 0, _sample(raw, 500, 500, 30), out)
    # on the other CPU: 500 moved at time 10 (before its exit)
    other.record(9, 0, _sample(_attach(0, 500, b"/box/a"), 1, 1, 10), out)
    assert out[0].kind == RawKind.WAKE_UP_NEW_TASK
    # a child forked (at 20) by the moved process inherits its move
    child = {**TASK, "tgid": 501, "tid": 501, "ppid": 500}
    other.record(9, 0, _sample(ev["fork"].raw(**child, **CWD), 500, 500, 20),
                 out)  # fmt: skip
    dec.cgroups.apply(out)
    assert [(e.kind, e.pid, e.time, e.task.cgroup) for e in out] == [
        (RawKind.WAKE_UP_NEW_TASK, 500, 5, None),  # what the cache knew
        # the move itself, which the engine folds into a held event
        (RawKind.CGROUP, 500, 10, "/box/a"),
        (RawKind.WAKE_UP_NEW_TASK, 501, 20, "/box/a"),
        (RawKind.EXIT_THREAD, 500, 30, "/box/a"),
    ]
    assert len(dec.cgroups) == 0  # the exit forgot the move


def test_cgroup_moves_count_on_the_scrapes_hierarchy_only(world) -> None:  # type: ignore[no-untyped-def]
    """On a legacy layout the moves that count are the v1 controller's
    whose path the scrape reads (hierarchy 3 here), not v2's; with none a
    tracepoint tells (a named hierarchy), no move counts."""
    dec, _, _ = world
    tp = parse_format(CGROUP_FORMAT)
    tp.compile(CGROUP_FIELDS)
    for hierarchy, want in ((3, ["/v1"]), (0, ["/v2"]), (None, [])):
        d = Decoder(dec.formats, dec.depths, dec.resolve,
                    cgroups=CgroupMoves(hierarchy))  # fmt: skip
        d.formats[tp.id] = (CGROUP_TP[1], tp)
        out: list = []
        d.record(9, 0, _sample(_attach(3, 600, b"/v1"), 1, 1, 8), out)
        d.record(9, 0, _sample(_attach(0, 600, b"/v2"), 1, 1, 9), out)
        assert [e.task.cgroup for e in out] == want, hierarchy
        assert len(d.cgroups) == len(want)
