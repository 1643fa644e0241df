"""``python -m quark.bench krun [--json] [--kernel 6.1|PATH] [--runs 3]``.

krun's time to run ``/bin/true`` in a guest of a manifest kernel or of any
kernel image path, its modules found as krun finds them (the generated
initramfs: 9p host root, modules, chroot, the command runner) against a
bare boot of the same kernel with a busybox-only initramfs whose /init
powers off at once, measured in the same run. Goal: at most 2.0x. Runs
from a checkout (krun.py and initramfs/ are not part of the installed
package).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

__all__ = ["main"]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _bare(vmlinuz: pathlib.Path, accel: str) -> float:
    from initramfs.cpio import Entry, write_newc

    busybox = pathlib.Path("/bin/busybox").read_bytes()
    init = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
    image = write_newc([
        Entry.dir("bin"), Entry.file("bin/busybox", busybox, 0o755),
        Entry.file("init", init, 0o755), Entry.dir("dev"),
    ])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        initrd = pathlib.Path(d) / "bare.cpio"
        initrd.write_bytes(image)
        qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        t0 = time.monotonic()
        subprocess.run(
            [qemu, "-accel", accel, "-m", "2G", "-smp", "2", "-nographic",
             "-no-reboot", "-nodefaults", "-serial", "stdio",
             "-kernel", str(vmlinuz), "-initrd", str(initrd),
             "-append", "console=ttyS0 quiet panic=-1 rdinit=/init"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, check=False, timeout=300,
        )  # fmt: skip
        return time.monotonic() - t0


def _krun(kernel: str, accel: str) -> float:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, str(ROOT / "krun.py"), "--quiet", "--accel", accel,
         kernel, "/bin/true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"krun failed with {r.returncode}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench krun")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--kernel", default="6.1", help="a manifest name or an image path"
    )
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    if not (ROOT / "krun.py").exists():
        print("quark.bench krun: run it from a checkout", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    import krun as krun_py

    try:
        vmlinuz = krun_py.resolve(args.kernel).vmlinuz
    except krun_py.KrunError as e:
        print(f"quark.bench krun: {e}", file=sys.stderr)
        return 2
    # both boots under the accelerator krun would take (a KVM that failed
    # its probe at this host boot is not tried again)
    accel = krun_py.choose_accel("auto")
    _krun(args.kernel, accel)  # warm: builds and caches the base initramfs
    bare = min(_bare(vmlinuz, accel) for _ in range(args.runs))
    krun = min(_krun(args.kernel, accel) for _ in range(args.runs))
    ratio = krun / bare
    result = {
        "benchmark": "krun", "kernel": args.kernel,
        "bare_boot_s": round(bare, 3), "krun_true_s": round(krun, 3),
        "ratio": round(ratio, 3), "target_ratio": 2.0,
        "accel": accel, "runs": args.runs, "cpus": os.cpu_count(),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"krun {args.kernel}: /bin/true in {krun:.2f} s, bare busybox "
            f"boot {bare:.2f} s: {ratio:.2f}x (goal <= 2.0x; best of "
            f"{args.runs}, {accel.upper()})"
        )
    return 0
