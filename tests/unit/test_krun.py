"""The harness's pure pieces: cpio writer, module closure, console parser."""

from __future__ import annotations

import gzip
import os
import pathlib
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

import krun
from initramfs.build import module_closure, parse_modules_dep
from initramfs.cpio import Entry, write_newc
from kernel_images import image as kimage


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


def _summary(v: dict[str, tuple[bool, krun._Verdict]]) -> dict[str, Any]:
    return {
        be: (ok, x.seconds, [n for n, _ in x.failed])
        for be, (ok, x) in v.items()
    }


def test_one_boot_gives_each_backend_its_own_verdict() -> None:
    expected = {"ebpf": 2, "kprobe": 1}
    both = _boot(
        1,
        "t_a                  ebpf    pass (1.5s)",
        "t_b                  ebpf    pass (2.0s)",
        "Traceback (most recent call last):",
        "AssertionError: /",
        "t_a                  kprobe  FAIL (3.0s)",
        "2 passed, 1 failed",
    )
    v = krun._verdicts(both, ["ebpf", "kprobe"], expected)
    assert _summary(v) == {
        "ebpf": (True, 3.5, []),
        "kprobe": (False, 3.0, ["t_a"]),
    }
    # what the console showed before the failed case's line is kept
    assert v["kprobe"][1].failed[0][1] == [
        b"Traceback (most recent call last):",
        b"AssertionError: /",
    ]
    note = krun._failure_note(both, v["kprobe"][1], 1)
    assert note == "failed; failed: t_a", note
    # a guest that died half way fails the backend it had not finished
    died = _boot(124, "t_a                  ebpf    pass (1.5s)")
    v = krun._verdicts(died, ["ebpf", "kprobe"], expected)
    assert _summary(v) == {
        "ebpf": (False, 1.5, []),
        "kprobe": (False, 0.0, []),
    }
    assert krun._failure_note(died, v["ebpf"][1], 2) == (
        "failed; 1 case(s) never reported"
    )
    assert krun._expected_cases()["ebpf"] > krun._expected_cases()["kprobe"]


# -- kernel images: release, architecture, modules beside -----------------


def _bzimage(
    path: pathlib.Path, version: bytes, *, syssize: int = 0x10
) -> pathlib.Path:
    """A file with a bzImage setup header (boot protocol: setup_sects at
    0x1F1, syssize at 0x1F4, HdrS at 0x202, version pointer at 0x20E)."""
    data = bytearray(0x200 * 5 + syssize * 16)
    data[0x1F1] = 4
    struct.pack_into("<I", data, 0x1F4, syssize)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x400 - 0x200)
    data[0x400 : 0x400 + len(version) + 1] = version + b"\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_release_comes_from_the_bzimage_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = _bzimage(
        tmp_path / "bzImage",
        b"6.1.0-54-rt-amd64 (debian-kernel@lists.debian.org) #1 SMP",
    )
    img = kimage.inspect(p)
    assert (img.arch, img.release, img.release_from) == (
        "x86_64", "6.1.0-54-rt-amd64", "header",
    )  # fmt: skip


def test_a_corrupt_or_truncated_image_is_one_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = _bzimage(tmp_path / "vmlinuz-6.1.0-1-amd64", b"6.1.0-1-amd64 x")
    short = tmp_path / "short"
    short.write_bytes(p.read_bytes()[:0x600])
    with pytest.raises(kimage.ImageError, match="truncated bzImage"):
        kimage.inspect(short)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(kimage.ImageError, match="not a kernel image"):
        kimage.inspect(junk)
    bad = _bzimage(tmp_path / "bad", b"\xff\xfe garbage")
    with pytest.raises(kimage.ImageError, match="names no release"):
        kimage.inspect(bad)
    with pytest.raises(kimage.ImageError, match="No such file"):
        kimage.inspect(tmp_path / "absent")


def test_arm64_release_comes_from_the_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    head = bytearray(0x40)
    head[0x38:0x3C] = b"ARM\x64"
    p = tmp_path / "boot" / "vmlinuz-6.12.57+deb13-arm64"
    p.parent.mkdir()
    p.write_bytes(gzip.compress(bytes(head) + b"\0" * 1024))
    img = kimage.inspect(p)
    assert (img.arch, img.release, img.release_from) == (
        "arm64", "6.12.57+deb13-arm64", "file name",
    )  # fmt: skip
    anon = tmp_path / "Image"
    anon.write_bytes(bytes(head))
    with pytest.raises(kimage.ImageError, match="carries no release"):
        kimage.inspect(anon)


def _package(root: pathlib.Path, release: str, config: str) -> pathlib.Path:
    """An unpacked kernel package: boot/vmlinuz-R, boot/config-R and
    lib/modules/R/kernel/."""
    img = _bzimage(root / "boot" / f"vmlinuz-{release}", release.encode())
    (root / "boot" / f"config-{release}").write_text(config)
    (root / "lib" / "modules" / release / "kernel").mkdir(parents=True)
    return img


NINE_P_MODULES = "".join(
    f"CONFIG_{o}=m\n" for o in krun.NEEDED_CONFIG
)  # fmt: skip


def test_modules_are_found_beside_the_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = kimage.inspect(_package(tmp_path, "6.1.0-99-amd64", NINE_P_MODULES))
    assert (
        kimage.modules_beside(img)
        == (tmp_path / "lib" / "modules" / "6.1.0-99-amd64").resolve()
    )
    assert kimage.config_value(img, "NET_9P") == "m"
    assert kimage.config_value(img, "NO_SUCH_OPTION") == ""


def test_a_kernel_without_9p_is_refused_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = _package(
        tmp_path,
        "6.1.0-99-cloud-amd64",
        "CONFIG_VIRTIO_PCI=m\n# CONFIG_NET_9P is not set\n",
    )
    with pytest.raises(krun.KrunError, match="CONFIG_NET_9P is not set"):
        krun.resolve(str(img))
    r = subprocess.run(
        [sys.executable, krun.__file__, str(img), "/bin/true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == krun.EXIT_USAGE
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "CONFIG_NET_9P is not set" in r.stderr


def test_modular_drivers_without_modules_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = _bzimage(
        tmp_path / "boot" / "vmlinuz-6.1.0-98-amd64", b"6.1.0-98-amd64"
    )
    (tmp_path / "boot" / "config-6.1.0-98-amd64").write_text(NINE_P_MODULES)
    with pytest.raises(krun.KrunError, match="--modules DIR"):
        krun.resolve(str(img))
    with pytest.raises(krun.KrunError, match="not a directory"):
        krun.resolve(str(img), str(tmp_path / "nowhere"))


def test_built_in_drivers_need_no_modules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = _bzimage(
        tmp_path / "boot" / "vmlinuz-6.1.0-97-amd64", b"6.1.0-97-amd64"
    )
    config = "".join(f"CONFIG_{o}=y\n" for o in krun.NEEDED_CONFIG)
    (tmp_path / "boot" / "config-6.1.0-97-amd64").write_text(config)
    k = krun.resolve(str(img))
    assert k.modules is None and k.release == "6.1.0-97-amd64"


def test_a_path_kernel_fetches_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Deciding what a path is must not fetch the manifest's kernels."""

    def refuse(kernel: object) -> None:
        raise AssertionError(f"fetched {kernel}")

    monkeypatch.setattr(krun.manifest, "fetch", refuse)
    img = _package(tmp_path, "6.1.0-99-amd64", NINE_P_MODULES)
    moddir = tmp_path / "lib" / "modules" / "6.1.0-99-amd64"
    (moddir / "modules.dep").write_text("")
    k = krun.resolve(str(img))
    assert k.modules == moddir.resolve()
    assert "from the header" in k.how


def test_a_silent_kvm_boot_is_cut_short() -> None:
    """The probe: a boot that prints nothing within its seconds ends at
    once (then krun boots again under TCG)."""
    t0 = time.monotonic()
    o = krun._watch(["sleep", "30"], 60, True, probe=1.0)
    assert o.status == krun.EXIT_KVM_HUNG
    assert time.monotonic() - t0 < 5
    died = krun._watch(["sh", "-c", "echo oops; exit 1"], 60, True, 5.0)
    assert died.status == krun.EXIT_KVM_HUNG and "oops" in died.reason
    # the firmware handing over is not progress: a guest can hang after it
    bios = krun._watch(
        ["sh", "-c", "echo 'Booting from ROM..'; sleep 30"],
        60, True, probe=1.0,
    )  # fmt: skip
    assert bios.status == krun.EXIT_KVM_HUNG
    # a line of the kernel or of our init ends the probe
    ok = krun._watch(
        ["sh", "-c", "echo 'Booting from ROM..'; echo 'quark-init: ready'; "
         "sleep 2; echo 'quark-init: exit 0'"],
        60, True, probe=1.0,
    )  # fmt: skip
    assert ok.status == 0


def test_help_explains_every_option() -> None:
    r = subprocess.run(
        [sys.executable, krun.__file__, "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    ap_options = re.findall(r"^\s+(--[\w-]+)(.*)$", r.stdout, re.M)
    assert len(ap_options) >= 10
    for name, rest in ap_options:
        # the help text is on the option's line or the next
        after = r.stdout.split(name + rest, 1)[1].split("\n", 2)
        assert rest.strip() or after[1].strip(), f"{name} has no help"


def test_matrix_boots_one_guest_per_kernel_for_both_backends() -> None:
    names = [k.name for k in krun.manifest.kernels()]
    boots = krun._boots(
        ["ebpf", "kprobe", "kprobe-table", "ebpf-v1", "kprobe-v1"], None
    )
    live = [b for b in boots if b.probing]
    assert [b.kernel for b in live] == names
    assert all(b.group == ("ebpf", "kprobe") for b in live)
    assert all("-b" in b.argv and "-k" in b.argv for b in live)
    table = [b for b in boots if b.group == ("kprobe-table",)]
    assert [b.kernel for b in table] == list(krun.TABLE_KERNELS)
    # the legacy cgroup layout: one boot of both backends, its cases only
    v1 = [b for b in boots if b.cgroup == "v1"]
    assert [b.kernel for b in v1] == list(krun.V1_KERNELS)
    for b in v1:
        assert b.group == ("ebpf-v1", "kprobe-v1") and not b.probing
        assert b.argv[-len(krun.V1_CASES) :] == list(krun.V1_CASES)
        assert "-b" in b.argv and "-k" in b.argv
        assert "QUARK_IGNORE_BTF=1" not in b.argv
        assert krun._expected_cases(b.cases) == {
            "ebpf": len(krun.V1_CASES),
            "kprobe": len(krun.V1_CASES),
        }
    assert len(boots) == len(live) + len(table) + len(v1)
    # a kernel of another architecture runs in its own userland's Python
    arm = [b for b in live if b.python != sys.executable]
    assert [b.kernel for b in arm] == [
        k.name for k in krun.manifest.kernels() if k.arch == "arm64"
    ]
    assert arm, "the matrix has an arm64 column"
    for b in arm:
        assert b.argv[0] == "/usr/bin/python3" and b.cases == krun.ARM64_CASES
        assert krun._with_probe(b.argv, b.python)[2].startswith(
            "/usr/bin/python3 -m quark.cli.mon --probe"
        )
    assert "quark.cgroup=v1" in krun.kernel_cmdline("v1")
    assert "quark.cgroup" not in krun.kernel_cmdline()
    assert all("QUARK_IGNORE_BTF=1" in b.argv for b in table)
    # the chaos cases' full counts ride along the short table boot, and
    # only there: the others keep CI's time
    assert all("QUARK_CHAOS_FULL=1" in b.argv for b in table)
    assert not any("QUARK_CHAOS_FULL=1" in b.argv for b in live)
    # one cell alone
    (cell,) = krun._boots(["kprobe"], ["6.1"])
    assert (cell.kernel, cell.group) == ("6.1", ("kprobe",))
    assert "-b" not in cell.argv and "-k" in cell.argv


def test_an_arm64_guest_shares_its_root_the_checkout_and_its_modules(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    k = krun.Resolved(
        tmp_path / "Image", tmp_path / "mods", "6.1.0-50-arm64", "test",
        "arm64",
    )  # fmt: skip
    argv = krun.qemu_argv_arm64(
        "2G", 2, k, tmp_path / "initrd", tmp_path / "root", "/work/q"
    )
    assert argv[0].endswith("qemu-system-aarch64")
    assert argv[argv.index("-accel") + 1] == "tcg"  # no KVM for arm64 here
    line = argv[argv.index("-append") + 1]
    assert "console=ttyAMA0" in line and "quark.checkout=/work/q" in line
    assert "quark.modules=1" in line
    shares = {
        dev.rsplit("mount_tag=", 1)[1]: fs.split("path=", 1)[1].split(",")[0]
        for fs, dev in zip(argv[argv.index("-fsdev") + 1 :: 4],
                           argv[argv.index("-device") + 1 :: 4], strict=True)
    }  # fmt: skip
    assert shares == {
        "hostroot": str(tmp_path / "root"),
        "checkout": "/work/q",
        "modules": str(tmp_path / "mods"),
    }
    # its userland's Python and PATH, not the host's venv or module paths
    env = krun._guest_env(k.modules, "arm64")
    assert "QUARK_GUEST_MODULES" not in env
    assert str(pathlib.Path(sys.executable).parent) not in env["PATH"]
    assert krun.guest_python("arm64") == "/usr/bin/python3"
    assert krun.guest_python("x86_64") == sys.executable
    # the checkout's path travels on the kernel command line
    with pytest.raises(krun.KrunError, match="white space"):
        krun._arm64_root("/work/a checkout")
