#!/usr/bin/env python3
"""Boot a kernel under qemu and run a command inside, against the host's files.

    python krun.py [options] KERNEL COMMAND [ARG...]
    python krun.py --matrix [--backends ebpf,kprobe] [--probe-out FILE]

KERNEL is a vmlinuz path or a name from kernel_images/manifest.json (fetched
on first use). The guest mounts the host's root read-only over virtio-9p,
runs COMMAND (no shell: argv is passed as JSON) from the current directory
with QUARK_TEST_STRICT=1, prints one sentinel line ``quark-init: exit N``
and powers off. krun streams the guest's console and exits with N.

A kernel panic, soft lockup or RCU stall (exit 250), a missing (251) or
repeated (252) sentinel, a qemu failure (253) or a timeout (124) end the run
with a one-line reason on stderr.

``--matrix`` runs ``quark-test`` on every manifest kernel for every backend
(``-b`` EBPF, ``-k`` KPROBE), plus the host (EBPF), prints a kernel x
backend table with the command that reproduces each failure, and exits
non-zero on any failure. The boot that runs EBPF and KPROBE first runs
``quark-mon --probe -E`` (its document is one console line behind
``quark-probe: ``); the matrix prints each kernel's table of the event
kinds it can serve, per backend, and ``--probe-out FILE`` writes their
documents to FILE as one JSON object, ``{"kernels": {NAME: DOCUMENT}}``
(a kernel whose probe printed nothing has ``{"error": WHY}``). ``--vng``
runs virtme-ng instead of the generated initramfs, for interactive
debugging (``pip install virtme-ng``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from initramfs import build as initramfs  # noqa: E402
from kernel_images import debian, manifest  # noqa: E402

SENTINEL = re.compile(rb"^quark-init: exit (\d+)\s*$")
READY = re.compile(rb"^quark-init: \S+ ready\s*$")
CONSOLE_TAIL = 40  # console lines shown with a fatal error under --quiet
FATAL = re.compile(
    rb"(Kernel panic - not syncing|BUG: soft lockup|rcu_sched self-detected"
    rb"|rcu: INFO: rcu_(pre)?sched detected stalls|watchdog: BUG:)"
)
EXIT_FATAL, EXIT_NO_SENTINEL, EXIT_TWO_SENTINELS, EXIT_QEMU = (
    250,
    251,
    252,
    253,
)
EXIT_TIMEOUT = 124
NO_ROOT = b"quark-init: cannot mount the host root"  # initramfs/init
EXIT_KVM_HUNG = -1  # internal: the KVM probe saw no progress
EXIT_USAGE = 2  # a kernel krun cannot use, or bad arguments
PASS_ENV = ("LANG", "TERM", "QUARK_IGNORE_BTF", "QUARK_VERBOSE")


@dataclass
class Outcome:
    status: int
    reason: str
    # whether the guest's init said it was ready (the command could run)
    booted: bool = field(default=True, compare=False)
    # the console, line by line
    lines: list[bytes] = field(default_factory=list, compare=False, repr=False)


def parse_console(lines: list[bytes], qemu_status: int | None) -> Outcome:
    """The run's outcome from the guest's console lines."""
    sentinels = [m for ln in lines if (m := SENTINEL.match(ln.strip()))]
    booted = any(READY.match(ln.strip()) for ln in lines)
    for ln in lines:
        if FATAL.search(ln):
            return Outcome(
                EXIT_FATAL,
                "guest kernel failed: " + ln.strip().decode(errors="replace"),
                booted,
            )
    if len(sentinels) > 1:
        return Outcome(EXIT_TWO_SENTINELS, "more than one sentinel line")
    if not sentinels:
        if qemu_status not in (0, None):
            return Outcome(EXIT_QEMU, f"qemu exited with {qemu_status}")
        return Outcome(
            EXIT_NO_SENTINEL, "no sentinel line: the guest did not boot or run"
        )
    return Outcome(int(sentinels[0].group(1)), "")


#: the guest's cgroup layouts: "v2" mounts cgroup2 at /sys/fs/cgroup; "v1"
#: a legacy layout (tmpfs there, the pids controller's v1 hierarchy in
#: it, cgroup2 never mounted, so /proc/PID/cgroup has no 0:: line)
CGROUP_LAYOUTS = ("v2", "v1")


def kernel_cmdline(
    cgroup: str = "v2", arch: str = "x86_64", checkout: str | None = None
) -> str:
    console = "ttyAMA0" if arch == "arm64" else "ttyS0"
    line = f"console={console} quiet panic=-1 loglevel=4 rdinit=/init"
    # read by initramfs/init
    if cgroup != "v2":
        line += f" quark.cgroup={cgroup}"
    if checkout is not None:  # shared apart, mounted at the same path
        line += f" quark.checkout={checkout}"
    return line


class KrunError(Exception):
    """A kernel krun cannot boot, or bad arguments: one line, no traceback."""


# the guest architectures krun boots (kernel_images.image's names): x86_64
# with the host's own files as its root, arm64 under qemu-system-aarch64
# with a Debian arm64 userland of its own (kernel_images.userland) and the
# checkout shared beside it
ARCHES = ("x86_64", "arm64")
_ARCH_OF_DEBIAN = {"amd64": "x86_64", "arm64": "arm64"}


@dataclass(frozen=True)
class Resolved:
    """The kernel to boot: its image, modules (None: drivers built in)."""

    vmlinuz: pathlib.Path
    modules: pathlib.Path | None
    release: str
    how: str  # one line: where the image, release and modules came from
    arch: str = "x86_64"  # or "arm64": booted with a userland of its own


# The drivers the guest needs to mount the host's root over virtio-9p:
# kernel config option -> the module that provides it when it is =m.
NEEDED_CONFIG = {
    "VIRTIO_PCI": "virtio_pci",
    "NET_9P": "9pnet",
    "NET_9P_VIRTIO": "9pnet_virtio",
    "9P_FS": "9p",
}


def _ensure_modules_dep(moddir: pathlib.Path, release: str) -> None:
    """modules.dep is made at install time, not shipped in the package:
    make it (``depmod -b`` reads BASE/lib/modules/RELEASE, which holds for
    both lib/modules and usr/lib/modules layouts)."""
    if (moddir / "modules.dep").exists():
        return
    base = moddir.parent.parent.parent
    r = subprocess.run(
        ["depmod", "-b", str(base), release], capture_output=True, text=True
    )
    if r.returncode != 0 or not (moddir / "modules.dep").exists():
        raise KrunError(
            f"depmod -b {base} {release} failed: "
            + (r.stderr.strip().splitlines() or ["no modules.dep made"])[-1]
        )


def resolve(kernel: str, modules: str | None = None) -> Resolved:
    """A manifest name (fetched on first use: that kernel only) or a
    kernel image path, with its modules: ``modules`` if given, else the
    unpacked package's beside the image, else the manifest kernel of the
    same release, else none (when its config says the drivers are built
    in, or there is no config to ask)."""
    from kernel_images import image as kimage

    if not os.path.exists(kernel):
        if os.sep in kernel or kernel.startswith("."):
            raise KrunError(f"{kernel}: no such file")
        try:
            fetched = manifest.fetch(manifest.lookup(kernel))
        except debian.FetchError as e:
            raise KrunError(str(e)) from None
        return Resolved(
            fetched.vmlinuz, fetched.modules, fetched.kernel.release,
            f"manifest kernel {fetched.kernel.name}",
            _ARCH_OF_DEBIAN.get(fetched.kernel.arch, fetched.kernel.arch),
        )  # fmt: skip
    try:
        img = kimage.inspect(kernel)
    except kimage.ImageError as e:
        raise KrunError(str(e)) from None
    if img.arch not in ARCHES:
        raise KrunError(
            f"{kernel}: an {img.arch} kernel; krun boots "
            f"{' and '.join(ARCHES)} guests only"
        )
    how = f"release {img.release} (from the {img.release_from})"
    moddir: pathlib.Path | None = None
    if modules is not None:
        moddir = pathlib.Path(modules).resolve()
        if not moddir.is_dir():
            raise KrunError(f"--modules {modules}: not a directory")
        how += f", modules from --modules {moddir}"
    else:
        moddir = kimage.modules_beside(img)
        if moddir is not None:
            how += f", modules beside it in {moddir}"
    if moddir is None:
        same = [k for k in manifest.kernels() if k.release == img.release]
        if same:
            try:
                moddir = manifest.fetch(same[0]).modules
            except debian.FetchError as e:
                raise KrunError(str(e)) from None
            how += f", modules of manifest kernel {same[0].name}"
    for option, module in NEEDED_CONFIG.items():
        value = kimage.config_value(img, option)
        if value == "":
            raise KrunError(
                f"{img.release} cannot run krun's guest: CONFIG_{option} is "
                "not set (krun shares the host's files over virtio-9p)"
            )
        if value == "m" and moddir is None:
            raise KrunError(
                f"{img.release} needs module {module} (CONFIG_{option}=m) "
                f"and no modules were found beside {kernel}: pass "
                "--modules DIR (the package's lib/modules/RELEASE)"
            )
    if moddir is not None:
        _ensure_modules_dep(moddir, img.release)
    else:
        how += ", no modules (drivers built in, or no config to tell)"
    return Resolved(img.path.resolve(), moddir, img.release, how, img.arch)


def _guest_env(
    modules: pathlib.Path | None, arch: str = "x86_64"
) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    own = arch == "x86_64"  # the guest's root is the host's
    if modules is not None and own:
        # the guest kernel's modules, on the host's files (t_module_load)
        env["QUARK_GUEST_MODULES"] = str(modules)
    first = [str(pathlib.Path(sys.executable).parent)] if own else []
    env.update(
        PATH=os.pathsep.join(
            [*first,
             "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
             "/sbin", "/bin"]
        ),
        QUARK_TEST_STRICT="1",
        QUARK_IN_GUEST="1",
        PYTHONDONTWRITEBYTECODE="1",
        HOME="/tmp",
    )  # fmt: skip
    return env


# console output that shows the kernel is executing (a kernel line, our
# init): a KVM boot that prints none of it within the probe's seconds is
# hung. SeaBIOS's "Booting from ROM" is not enough: on a nested-KVM host
# (2026-12-01) a boot printed it and then spun without a kernel line for
# minutes. A healthy KVM boot reaches our init in a few seconds, quiet
# kernel command line and all.
PROGRESS = re.compile(rb"^\[\s*\d+\.\d+\]|quark-init:")
KVM_PROBE_SECONDS = 20.0


def _kvm_hung_stamp() -> pathlib.Path:
    """A file that records a hung KVM probe for this host boot."""
    try:
        boot = pathlib.Path("/proc/sys/kernel/random/boot_id").read_text()
    except OSError:
        boot = "unknown"
    return debian.cache_dir() / f"kvm-hung-{boot.strip()}"


def choose_accel(asked: str) -> str:
    """The accelerator, kvm or tcg, for ``--accel auto|kvm|tcg``: auto
    takes KVM when /dev/kvm opens read-write and KVM has not failed at this
    host boot."""
    if asked != "auto":
        return asked
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    if _kvm_hung_stamp().exists():
        print(
            "krun: KVM hung at an earlier probe since this host booted: "
            "using TCG (--accel kvm to try it again)",
            file=sys.stderr,
        )
        return "tcg"
    return "kvm"


def qemu_argv(
    accel: str, memory: str, smp: int, vmlinuz: pathlib.Path,
    initrd: pathlib.Path, cgroup: str = "v2",
) -> list[str]:  # fmt: skip
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KrunError(
            "qemu-system-x86_64 not found (apt install qemu-system-x86)"
        )
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    return [
        qemu, "-accel", accel, *cpu, "-m", memory, "-smp", str(smp),
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(vmlinuz), "-initrd", str(initrd),
        "-append", kernel_cmdline(cgroup),
        "-fsdev",
        "local,id=r,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=r,mount_tag=hostroot",
    ]  # fmt: skip


def qemu_argv_arm64(
    memory: str, smp: int, k: Resolved, initrd: pathlib.Path,
    root: pathlib.Path, checkout: str, cgroup: str = "v2",
) -> list[str]:  # fmt: skip
    """An arm64 guest under TCG (an x86 host has no KVM for it): the
    userland ``root`` as its root, the ``checkout`` at its own path, and
    the kernel's modules at /lib/modules/RELEASE."""
    qemu = shutil.which("qemu-system-aarch64")
    if qemu is None:
        raise KrunError(
            "qemu-system-aarch64 not found (apt install qemu-system-arm)"
        )
    share = "security_model=none,readonly=on,multidevs=remap"
    shares = {"hostroot": root, "checkout": checkout}
    line = kernel_cmdline(cgroup, "arm64", checkout)
    if k.modules is not None:
        shares["modules"] = k.modules
        line += " quark.modules=1"
    argv = [
        qemu, "-M", "virt", "-cpu", "max,pauth-impdef=on", "-accel", "tcg",
        "-m", memory, "-smp", str(smp),
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(k.vmlinuz), "-initrd", str(initrd), "-append", line,
    ]  # fmt: skip
    for i, (tag, path) in enumerate(shares.items()):
        argv += [
            "-fsdev", f"local,id=s{i},path={path},{share}",
            "-device", f"virtio-9p-pci,fsdev=s{i},mount_tag={tag}",
        ]  # fmt: skip
    return argv


def guest_python(arch: str) -> str:
    """The guest's interpreter: the host's own, or its userland's."""
    if arch == "x86_64":
        return sys.executable
    from kernel_images import userland

    return userland.PYTHON


def guest_base(k: Resolved, root: pathlib.Path | None) -> pathlib.Path:
    """The base initramfs for ``k``: with the userland ``root``'s busybox
    and interpreter when it has one of its own."""
    if root is None:
        return initramfs.base_image(k.modules, sys.executable)
    return initramfs.base_image(
        k.modules, guest_python(k.arch), busybox=root / "bin" / "busybox"
    )


def _arm64_root(cwd: str, release: str | None = None) -> pathlib.Path:
    """The arm64 userland, with mount points for the checkout ``cwd`` and
    the kernel ``release``'s modules."""
    from kernel_images import userland

    if any(c.isspace() for c in cwd):
        raise KrunError(
            f"an arm64 guest mounts the checkout at its path, and {cwd!r} "
            "has white space, which the kernel command line cannot carry"
        )
    try:
        root = userland.root("arm64")
    except debian.FetchError as e:
        raise KrunError(str(e)) from None
    (root / cwd.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if release is not None:
        (root / "lib" / "modules" / release).mkdir(parents=True, exist_ok=True)
    return root


def run(
    kernel: str,
    argv: list[str],
    *,
    timeout: float = 600.0,
    memory: str = "2G",
    smp: int = 2,
    quiet: bool = False,
    modules: str | None = None,
    accel: str = "auto",
    kvm_probe: float = KVM_PROBE_SECONDS,
    cgroup: str = "v2",
) -> Outcome:
    """Boot ``kernel`` and run ``argv``; KrunError for a kernel or set-up
    that cannot boot at all. ``cgroup``: one of :data:`CGROUP_LAYOUTS`."""
    if cgroup not in CGROUP_LAYOUTS:
        raise KrunError(f"cgroup layout {cgroup!r}: not in {CGROUP_LAYOUTS}")
    k = resolve(kernel, modules)
    cwd = os.getcwd()
    root = _arm64_root(cwd, k.release) if k.arch == "arm64" else None
    base = guest_base(k, root)
    extra = initramfs.command_archive(argv, cwd, _guest_env(k.modules, k.arch))
    chosen = "tcg" if root is not None else choose_accel(accel)
    with tempfile.TemporaryDirectory(prefix="krun-") as d:
        initrd = pathlib.Path(d) / "initrd.cpio"
        initramfs.assemble(base, extra, initrd)
        if root is not None:
            cmd = qemu_argv_arm64(memory, smp, k, initrd, root, cwd, cgroup)
        else:
            cmd = qemu_argv(chosen, memory, smp, k.vmlinuz, initrd, cgroup)
        probe = kvm_probe if chosen == "kvm" and accel == "auto" else None
        outcome = _watch(cmd, timeout, quiet, probe)
        if outcome.status == EXIT_KVM_HUNG:
            print(
                f"krun: {outcome.reason}: falling back to TCG",
                file=sys.stderr,
            )
            _kvm_hung_stamp().touch()
            cmd = qemu_argv("tcg", memory, smp, k.vmlinuz, initrd, cgroup)
            outcome = _watch(cmd, timeout, quiet)
        if outcome.status == EXIT_FATAL and not outcome.booted:
            # The kernel died while booting, before init ran anything of
            # ours (seen once with 7.2 under TCG): the command never ran.
            # Boot once more, and say so; a second failure stands.
            print(
                f"krun: {outcome.reason} before init was ready; booting "
                "once more",
                file=sys.stderr,
            )
            outcome = _watch(cmd, timeout, quiet)
        if any(NO_ROOT in ln for ln in outcome.lines):
            outcome.reason = (
                f"the guest could not mount the host's root over virtio-9p "
                f"({k.how})"
            )
        return outcome


def _watch(
    cmd: list[str], timeout: float, quiet: bool, probe: float | None = None
) -> Outcome:
    """Run qemu, stream and parse its console. With ``probe``, a boot that
    shows no PROGRESS within that many seconds is killed (EXIT_KVM_HUNG)."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[bytes] = []
    buf = b""
    deadline = time.monotonic() + timeout
    progress_by = None if probe is None else time.monotonic() + probe
    fd = proc.stdout.fileno()
    out = sys.stdout.buffer
    try:
        while True:
            if progress_by is not None and time.monotonic() > progress_by:
                proc.kill()
                proc.wait()
                return Outcome(
                    EXIT_KVM_HUNG,
                    f"KVM boot hung ({probe:.0f} s without a line of the "
                    "kernel or of init)",
                    False,
                )
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                return Outcome(
                    EXIT_TIMEOUT, f"timed out after {timeout:.0f} s"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(b"\n")
            if progress_by is not None and PROGRESS.search(buf):
                progress_by = None
            for ln in complete:
                ln = ln.rstrip(b"\r")
                lines.append(ln)
                if progress_by is not None and PROGRESS.search(ln):
                    progress_by = None
                if not quiet:
                    out.write(ln + b"\n")
                    out.flush()
                if FATAL.search(ln):
                    proc.kill()
                    proc.wait()
                    if quiet:  # what led to it, for the report
                        tail = lines[-CONSOLE_TAIL:]
                        sys.stderr.buffer.write(b"\n".join(tail) + b"\n")
                        sys.stderr.flush()
                    return _with_lines(parse_console(lines, None), lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if buf:
        lines.append(buf)
    status = proc.wait()
    if progress_by is not None:  # KVM died before the guest ran at all
        last = lines[-1].decode(errors="replace").strip() if lines else ""
        return Outcome(
            EXIT_KVM_HUNG,
            f"qemu under KVM exited with {status} before the guest ran"
            + (f" ({last})" if last else ""),
            False,
        )
    return _with_lines(parse_console(lines, status), lines)


def _with_lines(o: Outcome, lines: list[bytes]) -> Outcome:
    o.lines = lines
    return o


# -- the matrix ---------------------------------------------------------


def _quark_test(args: list[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "quark.cli.test", *args]


# "kprobe-table": KPROBE told to ignore the kernel's BTF, so that its
# offsets come from the shipped table; run on these kernels only. That
# boot also runs the chaos cases at their full counts (QUARK_CHAOS_FULL:
# the 2,000-process storm, 100 open/close cycles), which the other boots
# run reduced: it is the shortest, and runs alongside them (--jobs).
TABLE_KERNELS = ("6.1",)
TABLE_ENV = ("QUARK_IGNORE_BTF=1", "QUARK_CHAOS_FULL=1")

# "ebpf-v1", "kprobe-v1": both backends in a guest with a legacy cgroup
# layout (--cgroup v1: the pids controller's v1 hierarchy, no cgroup2),
# where their records must carry the path the /proc scrape reads. Only the
# cases that read cgroups run there, in one short boot alongside the others.
V1_KERNELS = ("6.1",)
V1_CASES = ("t_container_cgroup", "t_container_after_exec", "t_unshare")

# The cases an arm64 guest runs in the matrix: under TCG on this x86 host
# it is the slowest guest (the full set takes some 10 minutes, against
# CI's budget), so CI runs this fixed smoke set, one or more per part that
# differs by architecture (registers, syscall tables, trampolines,
# modules); the full set on demand: python krun.py 6.1-arm64
# /usr/bin/python3 -m quark.cli.test
ARM64_CASES = (
    "t_probe", "t_fork_exec_exit", "t_exit_signal", "t_exec_thread",
    "t_argv", "t_env", "t_cgroup_move", "t_container_after_exec",
    "t_fork_storm", "t_file_shm", "t_tty", "t_ptrace", "t_module_load",
    "t_sock_conn", "t_getpid", "t_kinds_refused",
)  # fmt: skip

# the matrix's pseudo-backends, and the backend each runs
BACKEND_OF = {
    "kprobe-table": "kprobe",
    "ebpf-v1": "ebpf",
    "kprobe-v1": "kprobe",
}


# quark-test's line for one case: NAME BACKEND RESULT (SECONDS s)
CASE_LINE = re.compile(
    rb"^(t_\w+)\s+(ebpf|kprobe)\s+(\w+)(?:\s+\(([0-9.]+)s\))?"
)


# the line of quark-mon --probe -E's document on a guest's console
PROBE_PREFIX = b"quark-probe: "


def _probe_argv(python: str = sys.executable) -> list[str]:
    return [python, "-m", "quark.cli.mon", "--probe", "-E"]


def _with_probe(argv: list[str], python: str = sys.executable) -> list[str]:
    """A guest command that prints the probe's document, prefixed, then
    runs ``argv`` in its place (whose status the boot's is)."""
    prefix = PROBE_PREFIX.decode()
    return [
        "/bin/sh",
        "-c",
        f"{shlex.join(_probe_argv(python))} | sed 's/^/{prefix}/'; "
        f"exec {shlex.join(argv)}",
    ]


def _probe_doc(lines: list[bytes]) -> dict[str, Any]:
    """The probe's document from a boot's console lines, or ``{"error":
    WHY}`` when it printed none that parses."""
    found = [
        ln.strip()[len(PROBE_PREFIX) :]
        for ln in lines
        if ln.strip().startswith(PROBE_PREFIX)
    ]
    if not found:
        return {"error": "quark-mon --probe printed nothing"}
    try:
        doc = json.loads(found[-1])
    except ValueError as e:
        return {"error": f"quark-mon --probe's line does not parse: {e}"}
    if not isinstance(doc, dict) or "backends" not in doc:
        return {"error": "quark-mon --probe's line is not its document"}
    return doc


def _probe_host() -> dict[str, Any]:
    r = subprocess.run(_probe_argv(), stdout=subprocess.PIPE, check=False)
    return _probe_doc([PROBE_PREFIX + r.stdout.strip()])


def _probe_tables(probes: dict[str, dict[str, Any]]) -> str:
    """The probe's table of each kernel, under a heading of its own."""
    from quark.cli.mon import format_probe

    out = []
    for name, doc in probes.items():
        out.append(f"== event kinds on {name} (quark-mon --probe)")
        if "error" in doc:
            out.append(f"no table: {doc['error']}")
        else:
            out.append(format_probe(doc).rstrip("\n"))
        out.append("")
    return "\n".join(out)


def _expected_cases(only: tuple[str, ...] = ()) -> dict[str, int]:
    """How many cases quark-test runs for each backend (of ``only``, when
    it names cases)."""
    from quark.selftest import load_cases

    counts: dict[str, int] = {}
    for c in load_cases().values():
        if only and c.name not in only:
            continue
        for be in c.backends:
            counts[be] = counts.get(be, 0) + 1
    return counts


@dataclass
class _Verdict:
    """One backend's cases in one boot."""

    passed: int = 0
    seconds: float = 0.0
    # each failed case's name and what the console showed before its line
    failed: list[tuple[str, list[bytes]]] = field(default_factory=list)


FAILURE_LINES = 30  # console lines kept before each failed case's line


def _verdicts(
    o: Outcome, backends: list[str], expected: dict[str, int]
) -> dict[str, tuple[bool, _Verdict]]:
    """(passed, its cases) per backend of one boot: a backend passed when
    every one of its cases printed pass (a guest that died half way fails
    the backends it had not finished)."""
    got = {be: _Verdict() for be in backends}
    since = 0  # the console lines since the last case's line
    for i, ln in enumerate(o.lines):
        m = CASE_LINE.match(ln.strip())
        if m is None:
            continue
        be = m.group(2).decode()
        v = got.get(be)
        if v is not None:
            if m.group(3) == b"pass":
                v.passed += 1
            else:
                shown = o.lines[max(since, i - FAILURE_LINES) : i]
                v.failed.append((m.group(1).decode(), shown))
            if m.group(4):
                v.seconds += float(m.group(4))
        since = i + 1
    return {
        be: (not v.failed and v.passed == expected.get(be, 0), v)
        for be, v in got.items()
    }


def _failure_note(o: Outcome, v: _Verdict, expected: int) -> str:
    """Why a backend failed, in a row: the cases that failed, or how many
    never reported, or the boot's own reason."""
    parts = [o.reason] if o.reason else []
    if v.failed:
        parts.append("failed: " + " ".join(n for n, _ in v.failed))
    missing = expected - v.passed - len(v.failed)
    if missing > 0:
        parts.append(f"{missing} case(s) never reported")
    return "; ".join(parts) or f"status {o.status}"


@dataclass(frozen=True)
class _Boot:
    """One boot of the matrix: a kernel, the backends it judges, the
    command, and whether the probe rides along."""

    kernel: str
    group: tuple[str, ...]
    argv: list[str]
    probing: bool
    cgroup: str = "v2"
    cases: tuple[str, ...] = ()  # all when empty
    python: str = sys.executable  # the guest's interpreter


def _boots(backends: list[str], kernels: list[str] | None) -> list[_Boot]:
    out = []
    for k in manifest.kernels():
        if kernels is not None and k.name not in kernels:
            continue
        # One boot serves EBPF and KPROBE (booting under TCG is a good part
        # of a run); kprobe-table and the v1 pair need their own (another
        # environment, another cgroup layout).
        arch = _ARCH_OF_DEBIAN.get(k.arch, k.arch)
        python = guest_python(arch)
        groups = [[be for be in backends if be in ("ebpf", "kprobe")]]
        if arch != "x86_64":  # its own userland: the main boot, its cases
            groups = [[*groups[0], "arm"]] if groups[0] else []
        if "kprobe-table" in backends and k.name in TABLE_KERNELS:
            groups.append(["kprobe-table"])
        if k.name in V1_KERNELS:
            groups.append([be for be in backends if be.endswith("-v1")])
        for group in groups:
            if not group:
                continue
            cases: tuple[str, ...] = ()
            if group[-1] == "arm":
                group = group[:-1]
                cases = ARM64_CASES
            runs = [BACKEND_OF.get(be, be) for be in group]
            flags = [{"ebpf": "-b"}.get(be, "-k") for be in runs]
            v1 = group[0].endswith("-v1")
            if v1:
                cases = V1_CASES
            argv = _quark_test([*sorted(set(flags)), *cases], python)
            probing = group[0] in ("ebpf", "kprobe")
            if group == ["kprobe-table"]:
                argv = ["/usr/bin/env", *TABLE_ENV, *argv]
            out.append(
                _Boot(
                    k.name, tuple(group), argv, probing,
                    cgroup="v1" if v1 else "v2", cases=cases, python=python,
                )
            )  # fmt: skip
    return out


def matrix(
    backends: list[str],
    timeout: float,
    probe_out: str | None = None,
    *,
    kernels: list[str] | None = None,
    jobs: int = 1,
    smp: int = 2,
    accel: str = "auto",
    kvm_probe: float = KVM_PROBE_SECONDS,
) -> int:
    """quark-test on every manifest kernel (or ``kernels``) and the host.
    ``jobs`` > 1 boots that many guests at once, their consoles not
    streamed (each guest's failure still shows its console's tail)."""
    rows: list[tuple[str, str, str, str]] = []
    probes: dict[str, dict[str, Any]] = {}
    expected = _expected_cases()
    boots = _boots(backends, kernels)
    if kernels is not None:
        unknown = set(kernels) - {k.name for k in manifest.kernels()}
        unknown.discard("host")
        if unknown:
            raise KrunError(f"--kernels: not in the manifest: {unknown}")

    def boot(b: _Boot) -> tuple[Outcome, float]:
        t0 = time.monotonic()
        # the probe rides along the boot that runs EBPF and KPROBE: the
        # live backends, in the kernel's own environment
        o = run(
            b.kernel,
            _with_probe(b.argv, b.python) if b.probing else b.argv,
            timeout=timeout,
            quiet=jobs > 1,
            smp=smp,
            cgroup=b.cgroup,
            accel=accel,
            kvm_probe=kvm_probe,
        )
        took = time.monotonic() - t0
        if jobs > 1:  # no console streamed: say when each guest is done
            print(
                f"== {b.kernel} {'+'.join(b.group)}: status {o.status} "
                f"after {took:.0f} s",
                flush=True,
            )
        return o, took

    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        # each kernel fetched and its base initramfs built once, before
        # the guests start (two boots of one kernel share the file)
        for name in dict.fromkeys(b.kernel for b in boots):
            k = resolve(name)
            arm = k.arch == "arm64"
            root = _arm64_root(os.getcwd(), k.release) if arm else None
            guest_base(k, root)
        for b in boots:
            print(f"== {b.kernel} {'+'.join(b.group)} (queued)", flush=True)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(boot, boots))
    else:
        results = []
        for b in boots:
            print(f"== {b.kernel} {'+'.join(b.group)}", flush=True)
            results.append(boot(b))
    for b, (o, took) in zip(boots, results, strict=True):
        if b.probing:
            probes[b.kernel] = _probe_doc(o.lines)
        names = [BACKEND_OF.get(be, be) for be in b.group]
        want = _expected_cases(b.cases) if b.cases else expected
        verdicts = _verdicts(o, names, want)
        repro = ["python", "krun.py"]
        if b.cgroup != "v2":
            repro += ["--cgroup", b.cgroup]
        # the boot's own cases give way to the failed ones
        repro += [b.kernel, *b.argv[: len(b.argv) - len(b.cases)]]
        # a run that failed with every case passed failed elsewhere
        # (the guest, quark-test itself): then each backend fails
        whole = o.status == 0 or not all(v[0] for v in verdicts.values())
        for be, name in zip(b.group, names, strict=True):
            ok, v = verdicts[name]
            ok = ok and whole
            verdict = "pass" if ok else f"FAIL({o.status})"
            note = ""
            if not ok:
                why = _failure_note(o, v, want.get(name, 0))
                cases = [n for n, _ in v.failed] or list(b.cases)
                note = f"{why} | {shlex.join([*repro, *cases])}"
                if jobs > 1:  # no console was streamed: show the failures
                    _show_failures(b, be, o, v)
            rows.append(
                (
                    b.kernel,
                    be,
                    f"{verdict} {v.seconds:.0f}s of {took:.0f}s boot",
                    note,
                )
            )
    if kernels is None or "host" in kernels:
        _host_rows(backends, rows, probes)
    return _report(rows, probes, probe_out)


def _show_failures(b: _Boot, be: str, o: Outcome, v: _Verdict) -> None:
    """What the console showed of a failed cell whose console was not
    streamed (--jobs): each failed case's lines, else the console's tail."""
    out = sys.stdout.buffer
    out.write(f"== {b.kernel} {be}: failed\n".encode())
    shown = [ln for _, lines in v.failed for ln in lines]
    for ln in shown or o.lines[-CONSOLE_TAIL:]:
        out.write(b"   | " + ln + b"\n")
    out.flush()


def _host_rows(
    backends: list[str],
    rows: list[tuple[str, str, str, str]],
    probes: dict[str, dict[str, Any]],
) -> None:
    """The host's cells: EBPF only (no kprobes here)."""
    print("== host probe", flush=True)
    probes["host"] = _probe_host()
    print("== host ebpf", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(_quark_test(["-b"]))
    rows.append(
        (
            "host",
            "ebpf",
            ("pass" if rc == 0 else f"FAIL({rc})")
            + f" {time.monotonic() - t0:.0f}s",
            "" if rc == 0 else shlex.join(_quark_test(["-b"])),
        )
    )
    if "kprobe" in backends:
        rows.append(
            (
                "host",
                "kprobe",
                "n/a",
                "no kprobe_events on this kernel (CONFIG_KPROBE_EVENTS off)",
            )
        )


def _report(
    rows: list[tuple[str, str, str, str]],
    probes: dict[str, dict[str, Any]],
    probe_out: str | None,
) -> int:
    print()
    print(_probe_tables(probes))
    if probe_out is not None:
        with open(probe_out, "w") as f:
            json.dump({"kernels": probes}, f, indent=1)
            f.write("\n")
        print(f"probe documents written to {probe_out}\n")
    print(f"{'kernel':<8} {'backend':<13} result")
    failed = 0
    for name, be, res, note in rows:
        print(f"{name:<8} {be:<13} {res}")
        if res.startswith("FAIL"):
            failed += 1
            print(f"    {note}")
    print(f"\nmatrix: {len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="krun.py",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: the command's, or 250 (guest kernel failure), "
        "251 (no sentinel), 252 (two sentinels), 253 (qemu failed), 124 "
        "(timeout), 2 (a kernel krun cannot use, or bad arguments).",
    )
    ap.add_argument(
        "--timeout", type=float, default=900.0, metavar="SECONDS",
        help="kill the guest after SECONDS (exit 124; default %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--memory", default="2G", help="guest memory (default %(default)s)"
    )
    ap.add_argument(
        "--smp", type=int, default=2, help="guest CPUs (default %(default)s)"
    )
    ap.add_argument(
        "--modules", metavar="DIR",
        help="the kernel's modules directory (lib/modules/RELEASE); default: "
        "the unpacked package's beside a KERNEL path, or the manifest's",
    )  # fmt: skip
    ap.add_argument(
        "--accel", choices=("auto", "kvm", "tcg"), default="auto",
        help="auto (default): KVM when /dev/kvm opens, falling back to TCG "
        "when the KVM boot shows no line of the kernel or of krun's init "
        "within --kvm-probe seconds; kvm or tcg: that one only",
    )  # fmt: skip
    ap.add_argument(
        "--kvm-probe", type=float, default=KVM_PROBE_SECONDS,
        metavar="SECONDS",
        help="with --accel auto: how long a KVM boot may go without a "
        "line of the kernel or of krun's init (default %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--quiet", action="store_true", help="do not stream the guest console"
    )
    ap.add_argument(
        "--cgroup", choices=CGROUP_LAYOUTS, default="v2",
        help="the guest's cgroup layout: v2 (default: cgroup2 at "
        "/sys/fs/cgroup) or v1 (legacy: the pids controller's v1 "
        "hierarchy at /sys/fs/cgroup/pids, cgroup2 never mounted)",
    )  # fmt: skip
    ap.add_argument(
        "--matrix", action="store_true",
        help="run quark-test on every manifest kernel and the host, and "
        "print a kernel x backend table",
    )  # fmt: skip
    ap.add_argument(
        "--probe-out",
        metavar="FILE",
        help="with --matrix: write every kernel's quark-mon --probe "
        "document to FILE (JSON)",
    )
    ap.add_argument(
        "--backends",
        default="ebpf,kprobe,kprobe-table,ebpf-v1,kprobe-v1",
        help="with --matrix: comma-separated backends (kprobe-table: "
        "KPROBE with offsets from the shipped table, on "
        + ", ".join(TABLE_KERNELS)
        + "; ebpf-v1, kprobe-v1: the cgroup cases on a legacy cgroup "
        "layout, on "
        + ", ".join(V1_KERNELS)
        + ")",
    )
    ap.add_argument(
        "--kernels", metavar="NAMES",
        help="with --matrix: only these comma-separated manifest kernels, "
        "and the host if named (one cell: --kernels 6.1 --backends kprobe)",
    )  # fmt: skip
    ap.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="with --matrix: boot N guests at once (consoles not "
        "streamed); on 2 CPUs, pair it with --smp 1",
    )  # fmt: skip
    ap.add_argument(
        "--vng",
        action="store_true",
        help="run the command under virtme-ng instead",
    )
    ap.add_argument(
        "kernel", nargs="?",
        help="a manifest name ("
        + ", ".join(k.name for k in manifest.kernels())
        + ") or the path of a vmlinuz/bzImage",
    )  # fmt: skip
    ap.add_argument(
        "command", nargs=argparse.REMAINDER,
        help="the command to run in the guest, and its arguments",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.matrix:
        try:
            return matrix(
                args.backends.split(","),
                args.timeout,
                args.probe_out,
                kernels=args.kernels.split(",") if args.kernels else None,
                jobs=args.jobs,
                smp=args.smp,
                accel=args.accel,
                kvm_probe=args.kvm_probe,
            )
        except KrunError as e:
            print(f"krun: {e}", file=sys.stderr)
            return EXIT_USAGE
    if args.kernels or args.jobs != 1:
        ap.error("--kernels and --jobs go with --matrix")
    if args.probe_out:
        ap.error("--probe-out goes with --matrix")
    if not args.kernel or not args.command:
        ap.error("KERNEL and COMMAND are required (or --matrix)")
    try:
        if args.vng:
            k = resolve(args.kernel, args.modules)
            return subprocess.call(
                ["vng", "-r", str(k.vmlinuz), "--disable-kvm", "--exec",
                 shlex.join(args.command)]
            )  # fmt: skip
        o = run(
            args.kernel,
            args.command,
            timeout=args.timeout,
            memory=args.memory,
            smp=args.smp,
            quiet=args.quiet,
            modules=args.modules,
            accel=args.accel,
            kvm_probe=args.kvm_probe,
            cgroup=args.cgroup,
        )
    except KrunError as e:
        print(f"krun: {e}", file=sys.stderr)
        return EXIT_USAGE
    if o.reason:
        print(f"krun: {o.reason}", file=sys.stderr)
    return o.status


if __name__ == "__main__":
    sys.exit(main())
