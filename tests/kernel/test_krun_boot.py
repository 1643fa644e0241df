"""krun.py against a real kernel under qemu (marker ``qemu``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def _krun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "krun.py"), "--quiet", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_exit_status_is_the_commands() -> None:
    r = _krun("6.1", "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr


def test_arguments_reach_the_guest_without_a_shell() -> None:
    r = _krun("6.1", "/bin/sh", "-c", 'test "$1" = "a b;\'c"', "sh",
              "a b;'c")  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_panic_is_a_failure_with_a_reason() -> None:
    r = _krun("6.1", "/bin/sh", "-c", "echo c > /proc/sysrq-trigger")
    assert r.returncode == 250
    assert "panic" in r.stderr


def test_a_hung_command_hits_the_timeout() -> None:
    r = _krun("--timeout", "25", "6.1", "/bin/sleep", "600")
    assert r.returncode == 124
    assert "timed out" in r.stderr


# a flavour the manifest does not hold (rt: another config, another
# task_struct), fetched through the system's configured Debian source
OTHER_FLAVOUR = "linux-image-6.1.0-50-rt-amd64-unsigned"


def test_any_kernel_image_with_its_modules_beside_it() -> None:
    """An unpacked package's vmlinuz: release from its header, modules
    from lib/modules/RELEASE beside it, and nothing else fetched."""
    sys.path.insert(0, ROOT)
    from kernel_images import debian, manifest

    assert OTHER_FLAVOUR not in {
        p for k in manifest.kernels() for p in k.packages
    }
    root = debian.unpacked(OTHER_FLAVOUR)
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    r = _krun(str(vmlinuz), "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    assert "downloading" not in r.stderr, r.stderr


def test_a_corrupt_image_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "vmlinuz-6.1.0-50-amd64"
    bad.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 4096)
    r = _krun(str(bad), "/bin/true")
    assert r.returncode == 2
    assert r.stderr.startswith("krun: ") and r.stderr.count("\n") == 1


def test_an_arm64_guest_runs_its_own_userland_with_the_checkout() -> None:
    """The arm64 manifest kernel boots under qemu-system-aarch64 with a
    Debian arm64 userland as its root and this checkout at its own path:
    the command's status comes back, and quark imports there."""
    r = _krun("--timeout", "600", "6.1-arm64", "/bin/sh", "-c",
              'test "$(uname -m)" = aarch64 && cd "$1" && '
              '/usr/bin/python3 -c "import quark.engine" && exit 3',
              "sh", ROOT, timeout=900)  # fmt: skip
    assert r.returncode == 3, r.stderr
