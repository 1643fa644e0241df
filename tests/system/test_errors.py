"""Missing privileges and bad arguments give a QuarkError that says what,
never a traceback from deep inside."""

from __future__ import annotations

import subprocess
import sys

import pytest

import quark

from .conftest import require, why_not

AS_NOBODY = """
import os, sys
import quark, quark.backends.ebpf  # before: nobody may not read the stdlib
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    quark.Queue(backend="ebpf")
except quark.PrivilegeError as e:
    print("PrivilegeError:", e); sys.exit(0)
except quark.QuarkError as e:
    print(type(e).__name__, e); sys.exit(1)
sys.exit(2)
"""


@pytest.mark.root
@pytest.mark.ebpf
def test_not_root_is_a_privilege_error() -> None:
    require("ebpf")
    r = subprocess.run([sys.executable, "-c", AS_NOBODY],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "root" in r.stdout
    assert "Traceback" not in r.stderr


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(quark.ConfigError, match="unknown backend"):
        quark.Queue(backend="nope")
    with pytest.raises(quark.ConfigError, match="hold_time"):
        quark.Queue(backend="replay", path="/dev/null", hold_time=5)
    with pytest.raises(quark.ConfigError, match="max_length"):
        quark.Queue(backend="replay", path="/dev/null", max_length=0)
    with pytest.raises(quark.ConfigError, match="needs path"):
        quark.Queue(backend="replay")


def test_bad_kprobe_options_are_config_errors() -> None:
    with pytest.raises(quark.ConfigError, match="power of 2"):
        quark.Queue(backend="kprobe", ring_pages=3)
    with pytest.raises(quark.ConfigError, match="unknown option"):
        quark.Queue(backend="kprobe", nope=1)


def test_ebpf_told_to_ignore_btf_declines() -> None:
    """EBPF relocates against the kernel's BTF: told to ignore it, it says
    so (and backend="auto" goes on to KPROBE)."""
    with pytest.raises(quark.NotSupportedError, match="ignore the kernel BTF"):
        quark.Queue(backend="ebpf", ignore_btf=True)


KPROBE_HERE = """
import logging, sys
import quark
from quark.backends.tracefs import find_tracefs
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
try:
    find_tracefs()
except quark.NotSupportedError:
    pass
else:
    print("has kprobe_events"); sys.exit(3)
try:
    quark.Queue(backend="kprobe")
except quark.NotSupportedError as e:
    print("kprobe:", e)
else:
    sys.exit(1)
with quark.Queue(backend="auto") as q:
    print("auto:", q.stats().backend)
sys.exit(0)
"""


@pytest.mark.root
def test_kprobe_on_a_kernel_without_kprobes_says_so() -> None:
    """On the CI host (no CONFIG_KPROBE_EVENTS) KPROBE names what is
    missing, and auto still opens with EBPF."""
    if why_not("kprobe") is None:
        pytest.skip("this kernel has kprobes: nothing to say")
    require("ebpf")
    r = subprocess.run([sys.executable, "-c", KPROBE_HERE],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "kprobe_events" in r.stdout
    assert "auto: ebpf" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.root
@pytest.mark.ebpf
def test_an_fentry_hook_the_kernel_cannot_serve_says_why() -> None:
    """FILE's VFS hooks are probed one by one before the object loads: a
    function missing from the kernel is named as such, and a kernel
    without BPF trampolines (the CI host) is said to refuse fentry; a
    kernel with them (every guest) accepts the probe."""
    require("ebpf")
    from quark import libbpf_ctypes as bpf

    missing = bpf.fentry_refusal("quark_no_such_function")
    assert missing is not None
    assert "quark_no_such_function is not in this kernel's BTF" in missing
    why = bpf.fentry_refusal("security_file_permission")
    assert why is None or "refuses fentry programs" in why, why
