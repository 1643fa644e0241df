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
from kernel_images import manifest  # noqa: E402

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


def kernel_cmdline() -> str:
    return "console=ttyS0 quiet panic=-1 loglevel=4 rdinit=/init"


def _resolve(kernel: str) -> manifest.Fetched:
    if os.path.exists(kernel):
        path = pathlib.Path(kernel).resolve()
        for k in manifest.kernels():
            fetched = manifest.fetch(k)
            if fetched.vmlinuz.resolve() == path:
                return fetched
        raise SystemExit(
            f"krun: {kernel} is not a manifest kernel: its modules are unknown"
        )
    return manifest.fetch(manifest.lookup(kernel))


def _guest_env(modules: pathlib.Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(
        # the guest kernel's modules, on the host's files (t_module_load)
        QUARK_GUEST_MODULES=str(modules),
        PATH=os.pathsep.join(
            [str(pathlib.Path(sys.executable).parent),
             "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
             "/sbin", "/bin"]
        ),
        QUARK_TEST_STRICT="1",
        QUARK_IN_GUEST="1",
        PYTHONDONTWRITEBYTECODE="1",
        HOME="/tmp",
    )  # fmt: skip
    return env


def run(
    kernel: str,
    argv: list[str],
    *,
    timeout: float = 600.0,
    memory: str = "2G",
    smp: int = 2,
    quiet: bool = False,
) -> Outcome:
    fetched = _resolve(kernel)
    base = initramfs.base_image(fetched.modules, sys.executable)
    extra = initramfs.command_archive(
        argv, os.getcwd(), _guest_env(fetched.modules)
    )
    with tempfile.TemporaryDirectory(prefix="krun-") as d:
        initrd = pathlib.Path(d) / "initrd.cpio"
        initramfs.assemble(base, extra, initrd)
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            return Outcome(
                EXIT_QEMU,
                "qemu-system-x86_64 not found (apt install qemu-system-x86)",
            )
        cmd = [
            qemu, "-accel", "tcg", "-m", memory, "-smp", str(smp),
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(fetched.vmlinuz), "-initrd", str(initrd),
            "-append", kernel_cmdline(),
            "-fsdev",
            "local,id=r,path=/,security_model=none,readonly=on,"
            "multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=r,mount_tag=hostroot",
        ]  # fmt: skip
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
        return outcome


def _watch(cmd: list[str], timeout: float, quiet: bool) -> Outcome:
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[bytes] = []
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    out = sys.stdout.buffer
    try:
        while True:
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
            for ln in complete:
                ln = ln.rstrip(b"\r")
                lines.append(ln)
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
    return _with_lines(parse_console(lines, proc.wait()), lines)


def _with_lines(o: Outcome, lines: list[bytes]) -> Outcome:
    o.lines = lines
    return o


# -- the matrix ---------------------------------------------------------


def _quark_test(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "quark.cli.test", *args]


# "kprobe-table": KPROBE told to ignore the kernel's BTF, so that its
# offsets come from the shipped table; run on these kernels only.
TABLE_KERNELS = ("6.1",)


# quark-test's line for one case: NAME BACKEND RESULT (SECONDS s)
CASE_LINE = re.compile(
    rb"^(t_\w+)\s+(ebpf|kprobe)\s+(\w+)(?:\s+\(([0-9.]+)s\))?"
)


# the line of quark-mon --probe -E's document on a guest's console
PROBE_PREFIX = b"quark-probe: "


def _probe_argv() -> list[str]:
    return [sys.executable, "-m", "quark.cli.mon", "--probe", "-E"]


def _with_probe(argv: list[str]) -> list[str]:
    """A guest command that prints the probe's document, prefixed, then
    runs ``argv`` in its place (whose status the boot's is)."""
    prefix = PROBE_PREFIX.decode()
    return [
        "/bin/sh",
        "-c",
        f"{shlex.join(_probe_argv())} | sed 's/^/{prefix}/'; "
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


def _expected_cases() -> dict[str, int]:
    """How many cases quark-test runs for each backend."""
    from quark.selftest import load_cases

    counts: dict[str, int] = {}
    for c in load_cases().values():
        for be in c.backends:
            counts[be] = counts.get(be, 0) + 1
    return counts


def _verdicts(
    o: Outcome, backends: list[str], expected: dict[str, int]
) -> dict[str, tuple[bool, float]]:
    """(passed, seconds of its cases) per backend of one boot: a backend
    passed when every one of its cases printed pass (a guest that died
    half way fails the backends it had not finished)."""
    passed = dict.fromkeys(backends, 0)
    failed = dict.fromkeys(backends, 0)
    took = dict.fromkeys(backends, 0.0)
    for ln in o.lines:
        m = CASE_LINE.match(ln.strip())
        if m is None:
            continue
        be = m.group(2).decode()
        if be not in passed:
            continue
        if m.group(3) == b"pass":
            passed[be] += 1
        else:
            failed[be] += 1
        if m.group(4):
            took[be] += float(m.group(4))
    return {
        be: (failed[be] == 0 and passed[be] == expected.get(be, 0), took[be])
        for be in backends
    }


def matrix(
    backends: list[str], timeout: float, probe_out: str | None = None
) -> int:
    rows: list[tuple[str, str, str, str]] = []
    probes: dict[str, dict[str, Any]] = {}
    expected = _expected_cases()
    for k in manifest.kernels():
        # One boot serves EBPF and KPROBE (booting under TCG is a good part
        # of a run); kprobe-table needs its own (another environment).
        boots = [[be for be in backends if be in ("ebpf", "kprobe")]]
        if "kprobe-table" in backends and k.name in TABLE_KERNELS:
            boots.append(["kprobe-table"])
        for group in boots:
            if not group:
                continue
            flags = [{"ebpf": "-b"}.get(be, "-k") for be in group]
            argv = _quark_test(sorted(set(flags)))
            probing = group != ["kprobe-table"]
            if not probing:
                argv = ["/usr/bin/env", "QUARK_IGNORE_BTF=1", *argv]
            print(f"== {k.name} {'+'.join(group)}", flush=True)
            t0 = time.monotonic()
            # the probe rides along the boot that runs EBPF and KPROBE:
            # the live backends, in the kernel's own environment
            o = run(
                k.name,
                _with_probe(argv) if probing else argv,
                timeout=timeout,
            )
            took = time.monotonic() - t0
            if probing:
                probes[k.name] = _probe_doc(o.lines)
            names = ["kprobe" if be == "kprobe-table" else be for be in group]
            verdicts = _verdicts(o, names, expected)
            repro = shlex.join(["python", "krun.py", k.name, *argv])
            # a run that failed with every case passed failed elsewhere
            # (the guest, quark-test itself): then each backend fails
            whole = o.status == 0 or not all(v[0] for v in verdicts.values())
            for be, name in zip(group, names, strict=True):
                ok, spent = verdicts[name]
                ok = ok and whole
                verdict = "pass" if ok else f"FAIL({o.status})"
                rows.append(
                    (
                        k.name,
                        be,
                        f"{verdict} {spent:.0f}s of {took:.0f}s boot",
                        "" if ok else f"{o.reason} | {repro}",
                    )
                )
    # the host: EBPF only (no kprobes here)
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
    )
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument(
        "--quiet", action="store_true", help="do not stream the guest console"
    )
    ap.add_argument("--matrix", action="store_true")
    ap.add_argument(
        "--probe-out",
        metavar="FILE",
        help="with --matrix: write every kernel's quark-mon --probe "
        "document to FILE (JSON)",
    )
    ap.add_argument(
        "--backends",
        default="ebpf,kprobe,kprobe-table",
        help="with --matrix: comma-separated backends (kprobe-table: "
        "KPROBE with offsets from the shipped table, on "
        + ", ".join(TABLE_KERNELS)
        + ")",
    )
    ap.add_argument(
        "--vng",
        action="store_true",
        help="run the command under virtme-ng instead",
    )
    ap.add_argument("kernel", nargs="?")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.matrix:
        return matrix(args.backends.split(","), args.timeout, args.probe_out)
    if args.probe_out:
        ap.error("--probe-out goes with --matrix")
    if not args.kernel or not args.command:
        ap.error("KERNEL and COMMAND are required (or --matrix)")
    if args.vng:
        fetched = _resolve(args.kernel)
        return subprocess.call(
            [
                "vng",
                "-r",
                str(fetched.vmlinuz),
                "--disable-kvm",
                "--exec",
                shlex.join(args.command),
            ]
        )
    o = run(
        args.kernel,
        args.command,
        timeout=args.timeout,
        memory=args.memory,
        smp=args.smp,
        quiet=args.quiet,
    )
    if o.reason:
        print(f"krun: {o.reason}", file=sys.stderr)
    return o.status


if __name__ == "__main__":
    sys.exit(main())
