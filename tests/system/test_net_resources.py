"""The network kinds leave nothing behind: no descriptor after close, and no
program attached to the cgroup v2 root after close or after the owner was
SIGKILLed (the programs hang on BPF links, which die with their process).

``bpftool cgroup show`` is the kernel's own account of what is attached.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import quark
from quark import QQ
from quark.backends.cgroup import cgroup2_root

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

NET = QQ.SOCK_CONN | QQ.DNS


def _ours_attached() -> list[str]:
    root = cgroup2_root()
    assert root is not None, "no cgroup v2 mount on this host"
    bpftool = shutil.which("bpftool")
    assert bpftool is not None, "bpftool is missing (scripts/setup.sh)"
    out = subprocess.run(
        [bpftool, "cgroup", "show", root],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        ln for ln in out.splitlines() if "dns__" in ln or "sock__" in ln
    ]


def _fds() -> set[str]:
    return {
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }


def test_close_detaches_everything() -> None:
    require("ebpf")
    with quark.Queue(backend="ebpf", flags=NET, hold_time=100):
        pass  # warm up: libraries load once
    assert _ours_attached() == []
    before = _fds()
    for _ in range(3):
        with quark.Queue(backend="ebpf", flags=NET, hold_time=100) as q:
            attached = _ours_attached()
            assert q.capabilities()[QQ.DNS] is None
        assert len(attached) >= 4, attached  # sock_release, egress, ...
        assert _ours_attached() == []
    assert _fds() == before


def test_a_killed_owner_leaves_nothing_attached() -> None:
    require("ebpf")
    code = (
        "import sys, quark\n"
        f"q = quark.Queue(backend='ebpf', flags={int(NET)}, hold_time=100)\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        assert _ours_attached() != []
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # links are released with the last reference to them: the process's
    # descriptors, closed as it dies (and freed by RCU, so give it a beat)
    for _ in range(50):
        if not _ours_attached():
            break
        time.sleep(0.1)
    assert _ours_attached() == []
