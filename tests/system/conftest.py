"""Policy of the system tests (root, the real kernel).

- KPROBE cases run only where tracefs has ``kprobe_events``; elsewhere they
  are skipped with that reason (the host of CI has no kprobes), never
  counted as passed.
- On a host where the EBPF backend should work (root and kernel BTF), an
  EBPF case that reports the feature as unsupported FAILS; and the session
  fails if any EBPF test was skipped there.
- With QUARK_TEST_STRICT=1 (set inside the qemu guests) nothing may skip.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("QUARK_TEST_STRICT") == "1"


def _kprobe_events() -> bool:
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(f"{root}/kprobe_events"):
            return True
    if os.path.isdir("/sys/kernel/tracing"):
        try:
            from quark.backends.ebpf import ensure_mounts

            ensure_mounts()
        except OSError:
            return False
        return os.path.exists("/sys/kernel/tracing/kprobe_events")
    return False


def ebpf_expected() -> bool:
    return os.geteuid() == 0 and os.path.exists("/sys/kernel/btf/vmlinux")


def why_not(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or None if it should."""
    if os.geteuid() != 0:
        return "needs root"
    if backend == "ebpf" and not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "no kernel BTF (/sys/kernel/btf/vmlinux)"
    if backend == "kprobe" and not _kprobe_events():
        return (
            "no kprobe_events in tracefs: this kernel has no "
            "CONFIG_KPROBE_EVENTS (the qemu guests run these)"
        )
    return None


def require(backend: str) -> None:
    """Skip when ``backend`` cannot run here (with the reason), but fail
    under QUARK_TEST_STRICT=1, where every backend must work."""
    reason = why_not(backend)
    if reason is None:
        return
    if STRICT:
        pytest.fail(f"{backend} cannot run here: {reason}")
    pytest.skip(reason)


_skipped_ebpf: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "ebpf" in report.keywords:
        _skipped_ebpf.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped_ebpf and ebpf_expected():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            f"\nFAIL: {len(_skipped_ebpf)} EBPF test(s) were skipped on a "
            "host that supports BPF: " + ", ".join(_skipped_ebpf[:5])
        )
