"""The EBPF decoder against the shipped object's own BTF layout.

Records are built from the layout that :mod:`quark.backends.ebpf_layout`
reads from the object, field by field, for every record kind, and the
layout itself is checked against clang's view of ``bpf/proto.h``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quark
from quark.backends.ebpf import object_path
from quark.backends.ebpf_layout import Layout, object_layout
from quark.backends.ebpf_proto import PROTO_VERSION, Decoder
from quark.raw.types import RawKind

BPF = pathlib.Path(__file__).resolve().parents[2] / "bpf"


@pytest.fixture(scope="module")
def layout() -> Layout:
    return object_layout(object_path())


def _record(
    layout: Layout,
    q_kind: str,
    areas: dict[str, bytes] | None = None,
    **v: Any,
) -> bytes:
    """A ring record of ``q_kind`` with members ``v`` (by name; array members
    as lists) and the variable areas ``areas`` (by Q_VAR_ name)."""
    ev = layout.record("q_event")
    areas = areas or {}
    order = sorted(
        (layout.const(f"Q_VAR_{n}"), n)
        for n in ("EXE", "ARGS", "ENV", "CWD", "CGROUP")
    )
    lens = [len(areas.get(n, b"")) for _, n in order]
    tail = b"".join(areas.get(n, b"") for _, n in order)
    values: dict[str, Any] = dict.fromkeys(ev.names, 0)
    values["comm"] = b""
    values["kind"] = layout.const(q_kind)
    values["size"] = ev.size + len(tail)
    for i, n in enumerate(lens):
        values[f"len_{i}"] = n
    for name, x in v.items():
        values[name] = x
    return ev.fmt.pack(*(values[n] for n in ev.names)) + tail


TASK = {
    "cap_inheritable": 1, "cap_permitted": 2, "cap_effective": 3,
    "cap_bset": 4, "cap_ambient": 5, "start_time": 6_000_000_007,
    "exe_inode": 8, "ppid": 9, "uid": 10, "gid": 11, "suid": 12,
    "sgid": 13, "euid": 14, "egid": 15, "pgid": 16, "sid": 17,
    "tty_major": 136, "tty_minor": 3, "uts_inonum": 20, "ipc_inonum": 21,
    "mnt_inonum": 22, "net_inonum": 23,
}  # fmt: skip


def _check_task(task: Any) -> None:
    for name, value in TASK.items():
        assert getattr(task, name) == value, name


def test_every_q_event_member_is_decoded_or_framing(layout: Layout) -> None:
    """A member the decoder would silently drop is a bug: each is either a
    task field of Process (copied by name) or the record's framing."""
    framing = {"kind", "size", "time", "pid", "tid", "id_change", "flags",
               "comm", "exit_code", "pad", "fork_time"}  # fmt: skip
    task = set(quark.raw.RawTask.FIELDS)
    for name in layout.record("q_event").names:
        base = name.rsplit("_", 1)[0] if name.startswith("len_") else name
        assert base == "len" or name in framing or name in task, name
    assert set(TASK) <= set(layout.record("q_event").names)


def test_fork(layout: Layout) -> None:
    dec = Decoder(layout).decode
    rec = _record(layout, "Q_FORK", {"CWD": b"tmp\0home\0", "CGROUP": b"a\0"},
                  time=99, pid=42, tid=42, comm=b"bash", **TASK)  # fmt: skip
    ev = dec(rec)
    assert (ev.kind, ev.time, ev.pid, ev.tid) == (RawKind.WAKE_UP_NEW_TASK,
                                                  99, 42, 42)  # fmt: skip
    _check_task(ev.task)
    assert ev.task.comm == "bash"
    assert ev.task.cwd == "/home/tmp"
    assert ev.task.cgroup == "/a"
    assert ev.task.exit_code is None and ev.exe is None


def test_exec(layout: Layout) -> None:
    dec = Decoder(layout).decode
    areas = {
        "EXE": b"true\0bin\0usr\0",
        "ARGS": b"/bin/true\0-x\0\xff\0",
        "ENV": b"A=1\0B=2\0",
        "CWD": b"",
        "CGROUP": b"",
    }
    ev = dec(_record(layout, "Q_EXEC", areas, time=5, pid=7, tid=7,
                     comm=b"true", **TASK))  # fmt: skip
    assert ev.kind == RawKind.EXEC
    assert ev.exe == "/usr/bin/true"
    assert ev.args == ("/bin/true", "-x", os.fsdecode(b"\xff"))
    assert ev.task.env == ("A=1", "B=2")
    assert ev.task.cwd == "/"
    _check_task(ev.task)
    # truncated exe and cwd: unknown (""), never a fragment; a cut
    # environment keeps whole entries
    flags = layout.const("Q_F_EXE_TRUNC") | layout.const("Q_F_CWD_TRUNC")
    flags |= layout.const("Q_F_ENV_TRUNC")
    areas["ENV"] = b"A=1\0B=2"
    cut = dec(_record(layout, "Q_EXEC", areas, flags=flags, pid=7, tid=7))
    assert cut.exe == "" and cut.task.cwd == ""
    assert cut.task.env == ("A=1",)


def test_exit_comm_and_id_change(layout: Layout) -> None:
    dec = Decoder(layout).decode
    ex = dec(_record(layout, "Q_EXIT", pid=3, tid=3, exit_code=9, **TASK))
    assert ex.kind == RawKind.EXIT_THREAD and ex.task.exit_code == 9
    _check_task(ex.task)
    comm = dec(_record(layout, "Q_COMM", pid=3, tid=4, comm=b"newname"))
    assert comm.kind == RawKind.COMM and comm.comm == "newname"
    assert comm.tid == 4 and comm.task.comm is None
    idc = dec(_record(layout, "Q_ID_CHANGE", pid=3, tid=3,
                      id_change=layout.const("Q_ID_SETUID")))  # fmt: skip
    assert idc.kind == RawKind.ID_CHANGE
    assert idc.id_change == quark.ID_CHANGE.SETUID


def test_a_folded_fork_comes_first_with_the_records_task(
    layout: Layout,
) -> None:
    """An EXEC or EXIT record that carries its process's kept-back fork
    (fork_time) decodes to that FORK, at the fork's time, then the record's
    own raw event; an EXIT's areas are then the fork's cwd and cgroup."""
    dec = Decoder(layout).decode
    areas = {"EXE": b"true\0bin\0", "ARGS": b"true\0", "CWD": b"tmp\0",
             "CGROUP": b"a\0"}  # fmt: skip
    fork, ex = dec(_record(layout, "Q_EXEC", areas, time=50, fork_time=40,
                           pid=7, tid=7, comm=b"true", **TASK))  # fmt: skip
    assert (fork.kind, fork.time, fork.pid, fork.tid) == (
        RawKind.WAKE_UP_NEW_TASK, 40, 7, 7)  # fmt: skip
    assert (ex.kind, ex.time, ex.exe) == (RawKind.EXEC, 50, "/bin/true")
    assert fork.task is ex.task and fork.task.cwd == "/tmp"
    _check_task(fork.task)
    fork, ex = dec(_record(layout, "Q_EXIT", {"CWD": b"tmp\0",
                                              "CGROUP": b"a\0"},
                           time=60, fork_time=55, pid=8, tid=8,
                           exit_code=256, **TASK))  # fmt: skip
    assert (fork.kind, fork.time, ex.kind, ex.time) == (
        RawKind.WAKE_UP_NEW_TASK, 55, RawKind.EXIT_THREAD, 60)  # fmt: skip
    assert ex.task.exit_code == 256
    assert (ex.task.cwd, ex.task.cgroup) == ("/tmp", "/a")
    # without fork_time: the record alone, and an exit carries no cwd
    ex = dec(_record(layout, "Q_EXIT", pid=8, tid=8, **TASK))
    assert ex.kind == RawKind.EXIT_THREAD and ex.task.cwd is None


def test_a_folded_short_process_is_one_event(layout: Layout) -> None:
    """Two records, the EXEC carrying the fork, and the EXIT: one event
    FORK|EXEC|EXIT at the fork's time, the parent's values inherited."""
    from quark.engine import Engine
    from quark.raw.types import Seed

    dec = Decoder(layout).decode
    eng = Engine(hold_time=10)
    eng.seed([Seed(9, quark.raw.RawTask(ppid=1, comm="sh", cwd="/"),
                   exe="/bin/sh", args=("sh",))])
    areas = {"EXE": b"true\0bin\0", "ARGS": b"true\0x\0",
             "CWD": b"tmp\0"}  # fmt: skip
    for raw in (*dec(_record(layout, "Q_EXEC", areas, time=50, fork_time=40,
                             pid=7, tid=7, comm=b"true", **TASK)),
                dec(_record(layout, "Q_EXIT", time=70, pid=7, tid=7,
                            comm=b"true", exit_code=0, **TASK))):  # fmt: skip
        eng.push(raw)
    out = list(eng.drain(10**9))
    assert len(out) == 1, out
    ev = out[0]
    assert ev.events == quark.EV.FORK | quark.EV.EXEC | quark.EV.EXIT
    assert ev.time == 40
    p = ev.process
    assert p is not None
    assert (p.pid, p.ppid, p.comm, p.exe, p.cwd, list(p.cmdline)) == (
        7, 9, "true", "/bin/true", "/tmp", ["true", "x"])  # fmt: skip


def test_cgroup_move_and_getpid_carry_no_cwd(layout: Layout) -> None:
    """A cgroup move carries the task and its new cgroup area only, a
    getpid record no area at all: neither may tell a cwd (or cgroup) of
    "/" that would overwrite the process's in the cache."""
    dec = Decoder(layout).decode
    mv = dec(_record(layout, "Q_CGROUP", {"CGROUP": b"c.scope\0s.slice\0"},
                     pid=8, tid=8, comm=b"sleep", **TASK))  # fmt: skip
    assert mv.kind == RawKind.CGROUP
    assert mv.task.cgroup == "/s.slice/c.scope"
    assert mv.task.cwd is None and mv.exe is None
    _check_task(mv.task)
    trunc = layout.const("Q_F_CGROUP_TRUNC")
    cut = dec(_record(layout, "Q_CGROUP", {"CGROUP": b"c.scope\0"}, pid=8,
                      tid=8, flags=trunc))  # fmt: skip
    assert cut.task.cgroup is None  # a tail only: unknown
    gp = dec(_record(layout, "Q_GETPID", pid=8, tid=8, **TASK))
    assert gp.kind == RawKind.GETPID
    assert gp.task.cwd is None and gp.task.cgroup is None


def test_an_unknown_inode_is_none(layout: Layout) -> None:
    ev = Decoder(layout).decode(_record(layout, "Q_EXIT", pid=3, tid=3))
    assert ev.task.exe_inode is None  # 0: the kernel could not read it
    assert ev.task.uid == 0  # 0 is root for a field every record carries


def test_bad_records_are_decode_errors(layout: Layout) -> None:
    dec = Decoder(layout).decode
    good = _record(layout, "Q_EXEC", {"ARGS": b"a\0"}, pid=1, tid=1)
    with pytest.raises(quark.DecodeError, match="shorter than"):
        dec(good[:10])
    with pytest.raises(quark.DecodeError, match="arrived"):
        dec(good[:-1])
    with pytest.raises(quark.DecodeError, match="unknown kind"):
        dec(_record(layout, "Q_FORK", kind=77))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    dec = Decoder(object_layout(object_path())).decode
    try:
        dec(data)
    except quark.DecodeError:
        pass


def test_another_protocol_version_is_refused(layout: Layout) -> None:
    other = dataclasses.replace(layout, version=PROTO_VERSION + 1)
    with pytest.raises(quark.ProtocolError, match="wire protocol"):
        Decoder(other)
    consts = {k: v for k, v in layout.consts.items() if k != "Q_COMM"}
    with pytest.raises(quark.ProtocolError, match="Q_COMM"):
        Decoder(dataclasses.replace(layout, consts=consts))


def test_layout_equals_clangs_view_of_proto_h(
    layout: Layout, tmp_path: pathlib.Path
) -> None:
    """An independent oracle: clang's own offsetof, sizeof and enum values
    of proto.h, against what the decoder read from the object's BTF."""
    ev = layout.record("q_event")
    consts = sorted(layout.consts)
    src = ["#include <linux/types.h>", f'#include "{BPF}/proto.h"',
           "#include <stdio.h>", "#include <stddef.h>", "int main(void) {",
           'printf("sizeof %zu\\n", sizeof(struct q_event));']  # fmt: skip
    src += [
        f'printf("{n} %zu\\n", offsetof(struct q_event, {n}));'
        for n in ev.offsets
    ]
    src += [f'printf("{n} %ld\\n", (long){n});' for n in consts]
    src.append("return 0; }")
    c = tmp_path / "oracle.c"
    c.write_text("\n".join(src))
    exe = tmp_path / "oracle"
    clang = shutil.which("clang")
    assert clang is not None, "clang is part of the setup (scripts/setup.sh)"
    subprocess.run([clang, "-o", str(exe), str(c)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    out = {
        k: int(v) for k, v in (ln.split() for ln in run.stdout.splitlines())
    }
    assert out.pop("sizeof") == ev.size
    assert {n: out[n] for n in ev.offsets} == ev.offsets
    assert {n: out[n] for n in consts} == layout.consts
    assert len(ev.offsets) >= 30 and len(consts) >= 30
