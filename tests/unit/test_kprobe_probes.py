"""The KPROBE backend's probes: fetch arguments follow the struct offsets
and stay within the kernel's limits."""

from __future__ import annotations

import json
import pathlib

import pytest

from quark.backends.kprobe_probes import (
    MAX_ARGSTR,
    SLOTS,
    Depths,
    ProbeSpec,
    probe_specs,
)
from quark.errors import NotSupportedError

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "btf"
OFFSETS = json.loads(
    (DATA / "debian-5.10.0-46-amd64.expected.json").read_text()
)["offsets"]

# sizes of the kprobe fetch types in a record's fixed part
SIZES = {"s32": 4, "u32": 4, "u64": 8, "string": 4, "ustring": 4}
MAX_PROBE_EVENT_SIZE = 3072  # kernel/trace/trace_probe.h
MAX_TRACE_ARGS = 128


def _specs() -> tuple[list[ProbeSpec], Depths]:
    return probe_specs(OFFSETS, machine="x86_64")


def test_every_fetch_argument_fits_the_kernels_limits() -> None:
    specs, depths = _specs()
    names = [s.name for s in specs]
    assert names == [
        "fork", "exit", "exec", "args0", "args1", "args2", "args3",
        "setid", "setsid",
    ]  # fmt: skip
    for spec in specs:
        assert len(spec.args) <= MAX_TRACE_ARGS
        assert len({a.name for a in spec.args}) == len(spec.args)
        fixed = 0
        for a in spec.args:
            assert len(f"{a.fetch}:{a.type}") <= MAX_ARGSTR, a
            fixed += SIZES[a.type]
        assert fixed + 8 <= MAX_PROBE_EVENT_SIZE, (spec.name, fixed)
    # deeper than upstream's 7 cwd components is impossible in 63
    # characters; what fits is used
    assert depths.cwd == 7 and depths.exe == 6
    assert SLOTS == 64


def test_fetch_arguments_follow_the_offsets() -> None:
    specs, _ = _specs()
    fork = {a.name: a for a in specs[0].args}
    tgid = OFFSETS["task_struct.tgid"]
    assert fork["tgid"].fetch == f"+{tgid}(%di)"
    parent = (
        f"+{tgid}(+{OFFSETS['task_struct.real_parent']}"
        f"(+{OFFSETS['task_struct.group_leader']}(%di)))"
    )
    assert fork["ppid"].fetch == parent
    name = OFFSETS["dentry.d_name.name"]
    pwd = OFFSETS["fs_struct.pwd.dentry"]
    fs = OFFSETS["task_struct.fs"]
    assert fork["cwd0"].fetch == f"+0(+{name}(+{pwd}(+{fs}(%di))))"
    assert fork["cwd0"].type == "string"
    # the mount id sits before or after the vfsmount inside struct mount
    delta = OFFSETS["mount.mnt_id"] - OFFSETS["mount.mnt"]
    assert fork["cwd_mnt"].fetch.startswith(f"{delta:+d}(")


def test_an_unknown_architecture_is_not_supported() -> None:
    with pytest.raises(NotSupportedError, match="riscv64"):
        probe_specs(OFFSETS, machine="riscv64")


def test_argument_slots_walk_the_new_stack() -> None:
    specs, _ = _specs()
    stack = (
        f"+{OFFSETS['mm_struct.start_stack']}"
        f"(+{OFFSETS['task_struct.mm']}(%di))"
    )
    a0 = {a.name: a for a in specs[3].args}
    assert a0["argc"].fetch == f"+u0({stack})"
    assert a0["p0"].fetch == f"+u8({stack})"
    assert (a0["s0"].fetch, a0["s0"].type) == (f"+u0(+u8({stack}))", "ustring")
    a1 = {a.name: a for a in specs[4].args}
    assert "argc" not in a1
    assert a1["p0"].fetch == f"+u{8 + 8 * 16}({stack})"


EXE_INODE = ("file.f_inode", "inode.i_ino")


def test_the_exe_inode_is_fetched_with_every_task() -> None:
    offsets = {**OFFSETS, "file.f_inode": 32, "inode.i_ino": 64}
    specs, _ = probe_specs(offsets, machine="x86_64")
    mm, exe_file = OFFSETS["task_struct.mm"], OFFSETS["mm_struct.exe_file"]
    want = f"+64(+32(+{exe_file}(+{mm}(%di))))"
    by_name = {s.name: {a.name: a for a in s.args} for s in specs}
    for probe in ("fork", "exit", "exec"):
        arg = by_name[probe]["exe_ino"]
        assert (arg.fetch, arg.type) == (want, "u64"), probe
        assert len(arg.text()) - len("exe_ino=") <= MAX_ARGSTR
    assert all("exe_ino" not in by_name[f"args{i}"] for i in range(4))
    # the largest offsets the kernel could have still fit the limit
    big = {**offsets, "task_struct.mm": 99999, "mm_struct.exe_file": 99999,
           "file.f_inode": 99999, "inode.i_ino": 99999}  # fmt: skip
    probe_specs(big, machine="x86_64")


@pytest.mark.parametrize("missing", [EXE_INODE, EXE_INODE[:1], EXE_INODE[1:]])
def test_without_its_offsets_the_exe_inode_is_not_fetched(
    missing: tuple[str, ...],
) -> None:
    offsets = {**OFFSETS, "file.f_inode": 32, "inode.i_ino": 64}
    for key in missing:
        del offsets[key]
    specs, _ = probe_specs(offsets, machine="x86_64")
    assert not [s.name for s in specs if "exe_ino" in {a.name for a in s.args}]


def test_id_change_probes_read_the_task_and_which_id() -> None:
    """setid and setsid fetch the same task fields as fork (the task in
    the first argument); setid also the connector's which_id, the second
    argument; both are optional (CONFIG_PROC_EVENTS may be off)."""
    specs = {s.name: s for s in _specs()[0]}
    task = [a for a in specs["fork"].args if not a.name.startswith("cwd")]
    setid, setsid = specs["setid"], specs["setsid"]
    assert setid.targets == ("proc_id_connector",)
    assert setsid.targets == ("proc_sid_connector",)
    assert not setid.required and not setsid.required
    assert list(setsid.args) == task
    assert list(setid.args[:-1]) == task
    assert setid.args[-1].text() == "which=%si:u32"
    arm = {s.name: s for s in probe_specs(OFFSETS, machine="aarch64")[0]}
    assert arm["setid"].args[-1].fetch == "%x1"
