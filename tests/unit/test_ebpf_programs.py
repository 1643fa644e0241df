"""Every program of the shipped BPF object has a role that its name says
(ROLE__HOOK__FLAVOUR, stamped by bpf/quark.bpf.c's hook macros). Opening the
object loads nothing into the kernel, so no root is needed."""

from __future__ import annotations

import pytest

from quark import libbpf_ctypes as bpf
from quark.backends.ebpf import object_path
from quark.backends.ebpf_programs import FLAVOURS, Program, parse, wanted
from quark.errors import ProtocolError


def _programs() -> list[Program]:
    obj = bpf.BpfObject(object_path())
    try:
        return [parse(name, obj.section(name)) for name, _ in obj.programs()]
    finally:
        obj.close()


def test_every_program_has_a_role() -> None:
    progs = _programs()
    core = {p.hook for p in progs if p.role == "core"}
    assert core == {"fork", "exec", "exit"}
    # every core hook has a backup, in both flavours, and nothing else does
    for flavour in FLAVOURS:
        backups = [p for p in progs if p.role == "backup"]
        assert {p.hook for p in backups if p.flavour == flavour} == core
    assert {p.hook for p in progs if p.optional} >= {
        "rename", "setuid", "setsid", "enter_execve", "exit_execveat",
    }  # fmt: skip


def test_wanted_loads_one_flavour_and_backups_after_primaries() -> None:
    progs = _programs()
    for flavour in FLAVOURS:
        order = wanted(progs, flavour)
        assert {p.flavour for p in order} == {flavour, "tp"}
        names = [p.name for p in order]
        for hook in ("fork", "exec", "exit"):
            assert names.index(f"core__{hook}__{flavour}") < names.index(
                f"backup__{hook}__{flavour}"
            )


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("q_fork_btf", "tp_btf/sched_process_fork"),
        ("core__fork__btf", "raw_tp/sched_process_fork"),
        ("main__fork__btf", "tp_btf/sched_process_fork"),
        ("core__fork", "tp_btf/sched_process_fork"),
    ],
)
def test_a_name_that_says_no_role_is_refused(name: str, section: str) -> None:
    with pytest.raises(ProtocolError, match="ROLE__HOOK__FLAVOUR"):
        parse(name, section)


def test_file_asks_for_the_vfs_hooks_which_are_all_optional() -> None:
    """The fentry programs go with either flavour, only for FILE, and each
    may be skipped (a kernel without trampolines or the function)."""
    from quark import QQ

    progs = _programs()
    for flavour in FLAVOURS:
        assert not [p for p in wanted(progs, flavour) if p.flavour == "fe"]
        fe = [p for p in wanted(progs, flavour, QQ.FILE) if p.flavour == "fe"]
        assert {p.what for p in fe} >= {
            "security_file_permission", "security_mmap_file",
            "security_path_truncate",
        }  # fmt: skip
        assert all(p.optional and p.kind == QQ.FILE for p in fe)
