"""QQ.BYPASS on the real kernel (root, EBPF): the ring's records handed over
as they are, one event each, with nothing scraped or cached."""

from __future__ import annotations

import os
import time

import pytest

import quark
from quark import EV, QQ
from quark.backends.ebpf import object_path
from quark.backends.ebpf_layout import object_layout

from .conftest import require

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


@pytest.fixture(autouse=True)
def _needs_ebpf() -> None:
    require("ebpf")


def _header(data: bytes) -> dict[str, object]:
    """A record's struct q_event, read with the object's own layout."""
    rec = object_layout(object_path()).record("q_event")
    assert len(data) >= rec.size, len(data)
    return dict(zip(rec.names, rec.fmt.unpack_from(data), strict=True))


def test_a_fork_record_comes_raw_and_nothing_is_cached() -> None:
    lay = object_layout(object_path())
    with quark.Queue(backend="ebpf", flags=QQ.BYPASS) as qq:
        assert qq.capabilities()[QQ.BYPASS] is None
        assert list(qq.processes()) == []  # no /proc scrape
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        os.waitpid(pid, 0)
        events: list[quark.Event] = []
        fork: dict[str, object] | None = None
        deadline = time.monotonic() + 10
        while fork is None and time.monotonic() < deadline:
            ev = qq.get_event()
            if ev is None:
                qq.block(0.1)
                continue
            events.append(ev)
            data = ev.bypass
            assert isinstance(data, bytes)
            kind, pid_at = (
                int.from_bytes(data[o : o + 4], "little")
                for o in (
                    lay.record("q_event").offsets["kind"],
                    lay.record("q_event").offsets["pid"],
                )
            )
            if kind == lay.const("Q_FORK") and pid_at == pid:
                fork = _header(data)
        assert fork is not None, f"no fork record of {pid} in {len(events)}"
        # the header parses: the child, its parent, our name, its size
        assert fork["pid"] == fork["tid"] == pid
        assert fork["ppid"] == os.getpid()
        assert isinstance(fork["size"], int)
        assert lay.record("q_event").size <= fork["size"]
        with open("/proc/self/comm", "rb") as f:
            comm = f.read().strip()
        assert isinstance(fork["comm"], bytes)
        assert fork["comm"].rstrip(b"\0") == comm
        for ev in events:
            # exactly one record per event, nothing else on it
            assert ev.events == EV.BYPASS
            assert ev.process is None and ev.file is None
            assert ev.bypass is not None
            assert ev.time == _time_of(ev.bypass)
        assert list(qq.processes()) == []
        assert qq.lookup(pid) is None
        assert qq.stats().cache_size == 0


def _time_of(data: bytes) -> int:
    rec = object_layout(object_path()).record("q_event")
    at = rec.offsets["time"]
    return int.from_bytes(data[at : at + 8], "little")


def test_bypass_with_auto_is_ebpf() -> None:
    with quark.Queue(backend="auto", flags=QQ.BYPASS) as qq:
        assert qq.backend == "ebpf"
