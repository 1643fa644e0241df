"""A BPF load the kernel interrupts (EAGAIN: a signal was pending while the
verifier ran, as when a profiler stops the process to sample it) is made
again; one that stays interrupted is an error that says so."""

from __future__ import annotations

import errno

import pytest

import quark
from quark import libbpf_ctypes as bpf
from quark.errors import LibbpfError

from .conftest import require


def _interrupt(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    real = bpf.BpfObject.load
    calls: list[int] = []

    def load(self: bpf.BpfObject) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise LibbpfError(
                "bpf_object__load: Resource temporarily unavailable",
                errno=errno.EAGAIN, call="bpf_object__load",
            )  # fmt: skip
        real(self)

    monkeypatch.setattr(bpf.BpfObject, "load", load)
    return calls


@pytest.mark.root
@pytest.mark.ebpf
def test_an_interrupted_load_is_made_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("ebpf")
    calls = _interrupt(monkeypatch, 2)
    with quark.Queue(backend="ebpf", hold_time=100) as q:
        assert q.backend == "ebpf"
    assert len(calls) == 3


@pytest.mark.root
@pytest.mark.ebpf
def test_a_load_that_stays_interrupted_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("ebpf")
    _interrupt(monkeypatch, 1000)
    with pytest.raises(quark.NotSupportedError, match="interrupted 5 times"):
        quark.Queue(backend="ebpf", hold_time=100)
