"""The harness's pure pieces: cpio writer, module closure, console parser."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

import krun
from initramfs.build import module_closure, parse_modules_dep
from initramfs.cpio import Entry, write_newc


def _entries() -> list[Entry]:
    return [
        Entry.dir("bin"),
        Entry.file("bin/tool", b"\x7fELF...", 0o755),
        Entry.file("etc-data", b"odd size 13\n"),
        Entry.symlink("bin/sh", "tool"),
        Entry.file("empty", b""),
    ]


def test_newc_layout_is_aligned_and_terminated() -> None:
    data = write_newc(_entries())
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data


def test_newc_reads_back_with_cpio(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # cpio is a set-up tool (scripts/setup.sh): its absence is a failure
    assert shutil.which("cpio"), "cpio missing: run scripts/setup.sh"
    archive = tmp_path / "a.cpio"
    archive.write_bytes(write_newc(_entries()))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "-F", str(archive)], cwd=out, check=True
    )
    assert (out / "bin" / "tool").read_bytes() == b"\x7fELF..."
    assert stat.S_IMODE((out / "bin" / "tool").stat().st_mode) == 0o755
    assert (out / "etc-data").read_bytes() == b"odd size 13\n"
    assert os.readlink(out / "bin" / "sh") == "tool"
    assert (out / "empty").read_bytes() == b""
    listing = subprocess.run(
        ["cpio", "-it", "--quiet", "-F", str(archive)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert listing == ["bin", "bin/tool", "etc-data", "bin/sh", "empty"]


def test_newc_refuses_duplicates_and_dirs_with_data() -> None:
    with pytest.raises(ValueError):
        write_newc([Entry.file("a", b"x"), Entry.file("a", b"y")])
    with pytest.raises(ValueError):
        write_newc([Entry("d", stat.S_IFDIR | 0o755, b"x")])


DEP = """\
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/fs/overlayfs/overlay.ko.xz:
"""


def test_module_closure_orders_dependencies_first() -> None:
    deps = parse_modules_dep(DEP)
    order = module_closure(deps, ["virtio_pci", "9pnet_virtio", "9p"])
    names = [p.rsplit("/", 1)[1] for p in order]
    # virtio_pci is built in here: not in modules.dep, skipped
    assert names == ["9pnet.ko.xz", "9pnet_virtio.ko.xz", "netfs.ko.xz",
                     "9p.ko.xz"]  # fmt: skip
    assert len(set(order)) == len(order)


def test_module_closure_detects_loops() -> None:
    deps = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(ValueError, match="loop"):
        module_closure(deps, ["a"])


def test_console_sentinel_gives_the_status() -> None:
    lines = [b"[ 1.0] booting", b"quark-init: exit 3", b"reboot"]
    assert krun.parse_console(lines, 0) == krun.Outcome(3, "")


def test_console_panic_wins() -> None:
    lines = [b"[ 4.0] Kernel panic - not syncing: sysrq triggered crash"]
    o = krun.parse_console(lines, None)
    assert o.status == krun.EXIT_FATAL and "panic" in o.reason


def test_console_tells_a_boot_failure_from_a_failure_of_the_command() -> None:
    """Only a panic before init's ready line may be booted again: after
    it, the command ran and its failure stands."""
    panic = b"[ 1.5] Kernel panic - not syncing: Fatal exception in interrupt"
    assert not krun.parse_console([panic], None).booted
    ready = b"quark-init: 7.2.13+deb14-amd64 ready"
    assert krun.parse_console([ready, panic], None).booted


@pytest.mark.parametrize(
    "line",
    [b"watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
     b"rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"],
)  # fmt: skip
def test_console_lockups_and_stalls_fail(line: bytes) -> None:
    assert krun.parse_console([line], None).status == krun.EXIT_FATAL


def test_console_missing_or_repeated_sentinel() -> None:
    assert krun.parse_console([b"nothing"], 0).status == (
        krun.EXIT_NO_SENTINEL
    )
    two = [b"quark-init: exit 0", b"quark-init: exit 0"]
    assert krun.parse_console(two, 0).status == krun.EXIT_TWO_SENTINELS
    assert krun.parse_console([b"x"], 1).status == krun.EXIT_QEMU


def _boot(status: int, *lines: str) -> krun.Outcome:
    o = krun.Outcome(status, "" if status == 0 else "failed")
    o.lines = [ln.encode() for ln in lines]
    return o


def test_one_boot_gives_each_backend_its_own_verdict() -> None:
    expected = {"ebpf": 2, "kprobe": 1}
    both = _boot(
        1,
        "t_a                  ebpf    pass (1.5s)",
        "t_b                  ebpf    pass (2.0s)",
        "t_a                  kprobe  FAIL (3.0s)",
        "2 passed, 1 failed",
    )
    v = krun._verdicts(both, ["ebpf", "kprobe"], expected)
    assert v == {"ebpf": (True, 3.5), "kprobe": (False, 3.0)}
    # a guest that died half way fails the backend it had not finished
    died = _boot(124, "t_a                  ebpf    pass (1.5s)")
    v = krun._verdicts(died, ["ebpf", "kprobe"], expected)
    assert v == {"ebpf": (False, 1.5), "kprobe": (False, 0.0)}
    assert krun._expected_cases()["ebpf"] > krun._expected_cases()["kprobe"]
