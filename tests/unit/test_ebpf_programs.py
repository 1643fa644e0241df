"""Every program of the shipped BPF object has a role: core (its failure
fails the backend) or optional (skipped and reported). Opening the object
loads nothing into the kernel, so no root is needed."""

from __future__ import annotations

from quark import libbpf_ctypes as bpf
from quark.backends.ebpf import (
    CORE_BASES,
    OPTIONAL,
    _base,
    _program_names,
    object_path,
)


def test_every_program_is_core_or_optional() -> None:
    obj = bpf.BpfObject(object_path())
    try:
        names = [name for name, _ in obj.programs()]
    finally:
        obj.close()
    assert names
    for name in names:
        base = _base(name)
        assert (base in CORE_BASES) != (base in OPTIONAL), name
    for flavour in ("btf", "raw"):
        wanted = _program_names(flavour)
        assert set(wanted) <= set(names)
        # a backup is attached after its primary
        for core in ("q_fork", "q_exec", "q_exit"):
            assert wanted.index(f"{core}_{flavour}") < wanted.index(
                f"{core}b_{flavour}"
            )
    assert _base("q_exit_setuid") in OPTIONAL
