"""Chaos tests of the EBPF backend on the host's kernel (issue 16; KPROBE's
run in the guests, quark-test's t_open_close_cycles and
t_sigkill_consumer): 100 open/close cycles grow nothing (descriptors, BPF
objects, RSS), and a consumer SIGKILLed mid-storm leaves nothing in the
kernel. A close waits for the kernel to detach each program (a grace
period per link), so the cycles take a minute or two on a loaded host."""

from __future__ import annotations

import pytest

from quark.selftest.chaos_cases import cycles, sigkill_consumer

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_hundred_ebpf_cycles_grow_nothing() -> None:
    require("ebpf")
    cycles("ebpf", 100)


def test_a_sigkilled_ebpf_consumer_leaves_nothing() -> None:
    require("ebpf")
    sigkill_consumer("ebpf")
