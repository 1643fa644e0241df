"""100 open/close cycles of an EBPF queue on the host's kernel grow
nothing: descriptors, BPF objects, RSS (issue 16's chaos tests; the
guests run ten per backend, quark-test's t_open_close_cycles). A close
waits for the kernel to detach each program (a grace period per link),
so the cycles take a minute or two on a loaded host."""

from __future__ import annotations

import pytest

from quark.selftest.chaos_cases import cycles

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_a_hundred_ebpf_cycles_grow_nothing() -> None:
    require("ebpf")
    cycles("ebpf", 100)
