"""EBPF's open loop under ``probe_kinds``, over a scripted object: a kind
whose program cannot load or attach is left out, all of its programs with
it, and its reason kept; without ``probe_kinds`` the same refusal fails the
open. No kernel: loading and attaching are played by the script."""

from __future__ import annotations

import pytest

import quark
from quark import QQ
from quark.backends.ebpf import (
    EbpfBackend,
    _KindFailed,
    _ProgramFailed,
    _verifier_reason,
)
from quark.backends.ebpf_layout import object_layout
from quark.backends.ebpf_programs import Program, parse, wanted
from quark.events import QueueAttr

PROGRAMS = [
    parse(name, section)
    for name, section in (
        ("core__fork__btf", "tp_btf/sched_process_fork"),
        ("core__fork__raw", "raw_tp/sched_process_fork"),
        ("sock__connect__tp", "tracepoint/syscalls/sys_exit_connect"),
        ("dns__egress__cg", "cgroup_skb/egress"),
        ("file__write__tp", "tracepoint/syscalls/sys_exit_write"),
        ("fileopt__splice__tp", "tracepoint/syscalls/sys_exit_splice"),
        ("fs__openat__tp", "tracepoint/syscalls/sys_exit_openat"),
        ("shm__shmget__tp", "tracepoint/syscalls/sys_exit_shmget"),
    )
]


class Scripted(EbpfBackend):
    """EbpfBackend's ``_open`` with loading and attaching played: a program
    named in ``fail_load`` fails the object's load (as the verifier's
    refusal does), one in ``fail_attach`` fails to attach."""

    def __init__(
        self,
        attr: QueueAttr,
        *,
        probe: bool,
        fail_load: tuple[str, ...] = (),
        fail_attach: tuple[str, ...] = (),
        programs: list[Program] = PROGRAMS,
    ) -> None:
        self._reset(attr, probe)
        self.script = programs
        self.fail_load = fail_load
        self.fail_attach = fail_attach
        self.loads: list[list[str]] = []  # the programs of each attempt
        self.attached: list[str] = []
        self._open(attr)

    def _try_load(
        self, path: str, attr: QueueAttr, flavour: str, disabled: set[str]
    ) -> None:
        self._layout = object_layout(path)
        self._programs = {p.name: p for p in self.script}
        chosen = wanted(self.script, flavour, self._kinds)
        self._unserved(chosen, disabled, flavour)
        names = [p.name for p in chosen if p.name not in disabled]
        self.loads.append(names)
        for name in names:
            if name in self.fail_load:
                raise _ProgramFailed(name, f"{name}: invalid mem access")

    def _attach_all(self, flavour: str, disabled: set[str]) -> None:
        self.attached = []
        for p in wanted(self.script, flavour, self._kinds):
            if p.name in disabled:
                continue
            if p.name in self.fail_attach:
                raise _KindFailed(p, "attach failed: No such file")
            self.attached.append(p.name)

    def close(self) -> None:
        pass


# the kinds the script has programs for
SCRIPTED = QQ.SOCK_CONN | QQ.DNS | QQ.FILE | QQ.SHM


def _probe(**kw: tuple[str, ...]) -> Scripted:
    return Scripted(QueueAttr(flags=QQ.EBPF), probe=True, **kw)


def _kernel_refused(be: Scripted) -> dict[QQ, str]:
    """The refusals, less those of the kinds the script has no program
    for (the object's roles may name more kinds than the script)."""
    return {k: v for k, v in be.refused_kinds().items() if k & SCRIPTED}


def test_everything_loads_and_every_kind_is_live() -> None:
    be = _probe()
    assert be.kinds() == SCRIPTED | QQ.BYPASS
    assert _kernel_refused(be) == {}
    for why in be.refused_kinds().values():
        assert "has no program for it" in why
    assert len(be.loads) == 1
    assert set(be.attached) == {p.name for p in PROGRAMS} - {"core__fork__raw"}


def test_a_kind_that_fails_to_load_is_left_out_with_its_reason() -> None:
    be = _probe(fail_load=("sock__connect__tp",))
    assert not be.kinds() & QQ.SOCK_CONN
    assert be.kinds() & (QQ.DNS | QQ.FILE | QQ.SHM)
    why = be.refused_kinds()[QQ.SOCK_CONN]
    assert why.startswith("QQ.SOCK_CONN cannot be served on this kernel")
    assert "sock__connect__tp" in why and "invalid mem access" in why
    # loaded again without it, the rest as before
    assert len(be.loads) == 2
    assert "sock__connect__tp" not in be.loads[1]
    assert "sock__connect__tp" not in be.attached


def test_a_program_of_two_kinds_refuses_both_each_by_its_name() -> None:
    be = _probe(fail_load=("fs__openat__tp",))
    refused = _kernel_refused(be)
    assert set(refused) == {QQ.FILE, QQ.SHM}
    assert refused[QQ.FILE].startswith("QQ.FILE cannot")
    assert refused[QQ.SHM].startswith("QQ.SHM cannot")
    # all of their programs go, not only the one that failed
    assert not {"file__write__tp", "shm__shmget__tp"} & set(be.attached)
    assert be.kinds() & (QQ.SOCK_CONN | QQ.DNS) == QQ.SOCK_CONN | QQ.DNS


def test_a_kind_that_fails_to_attach_is_left_out_with_its_reason() -> None:
    be = _probe(fail_attach=("dns__egress__cg",))
    assert not be.kinds() & QQ.DNS
    assert "attach failed: No such file" in be.refused_kinds()[QQ.DNS]
    assert "dns__egress__cg" not in be.attached
    assert "sock__connect__tp" in be.attached


def test_an_optional_hook_never_refuses_its_kind() -> None:
    be = _probe(fail_load=("fileopt__splice__tp",))
    assert be.kinds() & QQ.FILE
    assert _kernel_refused(be) == {}
    assert be.skipped_probes() and "sys_exit_splice" in be.skipped_probes()[0]


def test_without_probe_kinds_a_refusal_fails_the_open() -> None:
    attr = QueueAttr(flags=QQ.EBPF | QQ.SOCK_CONN | QQ.FILE)
    with pytest.raises(quark.NotSupportedError) as caught:
        Scripted(attr, probe=False, fail_load=("fs__openat__tp",))
    # the kinds asked for, not every kind the program serves
    assert str(caught.value).startswith("QQ.FILE cannot be served")
    with pytest.raises(quark.NotSupportedError, match=r"QQ\.DNS cannot"):
        Scripted(
            QueueAttr(flags=QQ.DNS),
            probe=False,
            fail_attach=("dns__egress__cg",),
        )


def test_the_reason_probed_is_the_error_asking_gives() -> None:
    probed = _probe(fail_load=("sock__connect__tp",)).refused_kinds()
    with pytest.raises(quark.NotSupportedError) as caught:
        Scripted(
            QueueAttr(flags=QQ.SOCK_CONN),
            probe=False,
            fail_load=("sock__connect__tp",),
        )
    assert str(caught.value) == probed[QQ.SOCK_CONN]


def test_programs_of_kinds_not_asked_for_are_not_loaded() -> None:
    be = Scripted(QueueAttr(flags=QQ.EBPF), probe=False)
    assert be.kinds() == QQ(0)
    assert be.loads == [["core__fork__btf"]]
    assert be.refused_kinds() == {}


def test_a_kind_with_no_program_is_refused_too() -> None:
    """Roles name more kinds than the object may have programs for: such
    a kind is refused, never opened without anything serving it."""
    no_dns = [p for p in PROGRAMS if p.kind != QQ.DNS]
    be = Scripted(QueueAttr(flags=QQ.EBPF), probe=True, programs=no_dns)
    assert not be.kinds() & QQ.DNS
    why = be.refused_kinds()[QQ.DNS]
    assert why.startswith("QQ.DNS cannot be served on this kernel")
    assert "has no program for it" in why
    with pytest.raises(quark.NotSupportedError, match="has no program"):
        Scripted(QueueAttr(flags=QQ.DNS), probe=False, programs=no_dns)


def test_a_hook_missing_from_the_kernel_is_the_reason() -> None:
    """Where the kernel was never asked (a tp_btf hook it does not have),
    the reason is libbpf's word about the program, not the object's."""
    prog = "module__module_load__btf"
    lines = [
        f"libbpf: prog '{prog}': relo #6: patched insn #92 imm 64 -> 192",
        "libbpf: prog 'ptrace__ptrace__tp': skipped loading",
        f"libbpf: prog '{prog}': failed to find kernel BTF type ID of "
        "'module_load': -3",
        f"libbpf: prog '{prog}': failed to prepare load attributes: -3",
        f"libbpf: prog '{prog}': failed to load: -3",
        "libbpf: failed to load object '/x/quark.bpf.o'",
    ]
    why = _verifier_reason(lines, prog)
    assert why == (
        "the kernel has no module_load in its BTF (failed to find kernel "
        "BTF type ID of 'module_load': -3)"
    )
    # the verifier's own words win when there are any
    verifier = [*lines[:2], "R0 invalid mem access 'scalar'", *lines[2:]]
    assert _verifier_reason(verifier, prog) == (
        "R0 invalid mem access 'scalar'"
    )
