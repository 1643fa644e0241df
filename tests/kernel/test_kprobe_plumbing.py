"""The KPROBE backend's plumbing in a guest (the host has no kprobes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.kprobe]


@pytest.mark.parametrize(
    ("kernel", "ignore_btf"), [("5.10", False), ("7.2", False), ("6.1", True)]
)
def test_kprobe_perf_and_tracefs_in_a_guest(
    kernel: str, ignore_btf: bool
) -> None:
    """With ignore_btf the fetch offsets come from the shipped table."""
    env = dict(os.environ)
    env.pop("QUARK_IGNORE_BTF", None)
    if ignore_btf:
        env["QUARK_IGNORE_BTF"] = "1"  # krun passes it into the guest
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "krun.py"), "--quiet", kernel,
         sys.executable, os.path.join(ROOT, "tests", "kernel",
                                      "kprobe_smoke.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])


@pytest.mark.parametrize("kernel", ["6.1"])
def test_damaged_perf_records_are_counted_and_skipped(kernel: str) -> None:
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "krun.py"), "--quiet", kernel,
         sys.executable, os.path.join(ROOT, "tests", "kernel",
                                      "kprobe_corrupt.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
