"""``probe_kinds=True`` on the real kernel (root, EBPF): one open tells,
for every kind bit, whether this kernel can serve it and why not; and
what it says is what asking for the kind alone does."""

from __future__ import annotations

import pytest

import quark
from quark import QQ
from quark.backends import KIND_BITS

from .conftest import require

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

# what the CI host serves (kernel BTF, tracepoints, a cgroup v2 root)
LIVE_HERE = (QQ.SOCK_CONN, QQ.DNS, QQ.FILE, QQ.SHM, QQ.BYPASS)


@pytest.fixture(autouse=True)
def _needs_ebpf() -> None:
    require("ebpf")


@pytest.fixture(scope="module")
def probed() -> dict[QQ, str | None]:
    require("ebpf")
    with quark.Queue(backend="ebpf", probe_kinds=True) as qq:
        return qq.capabilities()


def test_every_kind_is_answered(probed: dict[QQ, str | None]) -> None:
    assert list(probed) == list(KIND_BITS)
    for kind in LIVE_HERE:
        assert probed[kind] is None, (kind, probed[kind])
    for kind, why in probed.items():
        assert why is None or (isinstance(why, str) and why), kind
        # every kind was asked for: none is "not asked for"
        assert why is None or "not asked for" not in why, (kind, why)


def test_a_kind_probed_refused_is_refused_at_open_with_that_reason(
    probed: dict[QQ, str | None],
) -> None:
    refused = [k for k, why in probed.items() if why is not None]
    for kind in refused:
        with pytest.raises(quark.NotSupportedError) as caught:
            quark.Queue(backend="ebpf", flags=kind)
        why = probed[kind]
        assert why is not None
        assert why in str(caught.value), (kind, str(caught.value))


def test_a_probing_queue_still_delivers_process_events() -> None:
    with quark.Queue(backend="ebpf", probe_kinds=True) as qq:
        assert qq.lookup(1) is not None  # /proc was scraped
        assert qq.stats().backend == "ebpf"


def test_probe_kinds_does_not_go_with_bypass() -> None:
    with pytest.raises(quark.ConfigError, match="BYPASS"):
        quark.Queue(backend="ebpf", flags=QQ.BYPASS, probe_kinds=True)
