"""The network kinds leave nothing behind: no descriptor after close, and no
program attached to the cgroup v2 root after close or after the owner was
SIGKILLed (the programs hang on BPF links, which die with their process).

``bpftool cgroup show`` is the kernel's own account of what is attached;
the queue's own programs are told from others' by the ids behind the links
its process holds.
"""

from __future__ import annotations

import json
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


def _attached() -> set[int]:
    """Ids of the programs attached to the cgroup v2 root, any owner's."""
    root = cgroup2_root()
    assert root is not None, "no cgroup v2 mount on this host"
    bpftool = shutil.which("bpftool")
    assert bpftool is not None, "bpftool is missing (scripts/setup.sh)"
    out = subprocess.run(
        [bpftool, "-j", "cgroup", "show", root],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {int(p["id"]) for p in json.loads(out.strip() or "[]")}


def _links(pid: int | str = "self") -> set[int]:
    """Ids of the programs behind the cgroup BPF links process ``pid``
    holds (other tests may run queues of their own at the same time: only
    these are ours)."""
    ids = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                lines = f.read().splitlines()
            info = dict(ln.split(":", 1) for ln in lines if ":" in ln)
        except OSError:
            continue
        if info.get("link_type", "").strip() == "cgroup":
            ids.add(int(info["prog_id"]))
    return ids


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
    before = _fds()
    for _ in range(3):
        with quark.Queue(backend="ebpf", flags=NET, hold_time=100) as q:
            ours = _links()
            assert q.capabilities()[QQ.DNS] is None
            # sock_release, egress, ingress, sock_create, ...
            assert len(ours) >= 4, ours
            assert ours <= _attached()
        assert not ours & _attached()
        assert _links() == set()
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
        theirs = _links(child.pid)
        assert len(theirs) >= 4 and theirs <= _attached()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # a link goes with the last reference to it, the dead process's
    # descriptors (then freed after an RCU grace period: give it a beat)
    for _ in range(50):
        if not theirs & _attached():
            break
        time.sleep(0.1)
    assert not theirs & _attached()
