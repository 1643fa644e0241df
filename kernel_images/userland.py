"""A Debian userland of another architecture, for krun's guests of it.

An x86 host's own files cannot run in an arm64 guest, so krun shares this
directory as the guest's root instead (and the checkout beside it). It is
made by ``mmdebstrap --variant=extract``: the packages below and their
dependencies, unpacked and never configured, so nothing of the foreign
architecture runs on the host (no qemu-user, no binfmt_misc). The archive
is the one this system's apt sources name (``debian.system_uris``), the
suite bookworm, the result cached under the quark cache by what went into
it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess

from kernel_images import debian

__all__ = ["PACKAGES", "PYTHON", "SUITE", "root"]

SUITE = "bookworm"
#: what quark and its guest cases need: busybox-static for the initramfs,
#: Python with quark's dependencies, libbpf for the EBPF backend, a shell,
#: coreutils and sed (/bin/sh, sleep, true; the matrix's probe), util-linux
#: (unshare) and kmod (insmod, modinfo)
PACKAGES = (
    "busybox-static",
    "dash",
    "coreutils",
    "sed",
    "python3",
    "python3-pyelftools",
    "python3-zstandard",
    "python3-dnspython",
    "libbpf1",
    "util-linux",
    "kmod",
)
#: the guest's interpreter, in that root
PYTHON = "/usr/bin/python3"
# mount points the guest's init uses, which an unpacked root may lack
_DIRS = ("proc", "sys", "dev", "run", "tmp", "var/tmp")


def root(arch: str) -> pathlib.Path:
    """The unpacked userland of ``arch`` (Debian's name: ``arm64``), made
    once and then taken from the cache."""
    main, _ = debian.system_uris()
    key = hashlib.sha256(
        "\n".join([arch, SUITE, main, *PACKAGES]).encode()
    ).hexdigest()[:12]
    base = debian.cache_dir() / "userland"
    base.mkdir(parents=True, exist_ok=True)
    out = base / f"{arch}-{SUITE}-{key}"
    if (out / ".complete").exists():
        return out
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise debian.FetchError(
            f"an {arch} userland is made by mmdebstrap, which is not "
            "installed (apt install mmdebstrap)"
        )
    with open(base / f"{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".complete").exists():
            return out
        tmp = base / f".{out.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        signed = (
            f"[signed-by={debian.KEYRING}] "
            if os.path.exists(debian.KEYRING)
            else ""
        )
        print(
            f"kernel_images: unpacking an {arch} {SUITE} userland "
            f"({', '.join(PACKAGES)})",
            flush=True,
        )
        r = subprocess.run(
            [mmdebstrap, "--variant=extract", f"--arch={arch}",
             f"--include={','.join(PACKAGES)}", "--quiet", SUITE, str(tmp),
             f"deb {signed}{main} {SUITE} main"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise debian.FetchError(
                f"mmdebstrap of the {arch} userland failed: "
                + " / ".join(tail)
            )
        for d in _DIRS:
            (tmp / d).mkdir(parents=True, exist_ok=True)
        sh = tmp / "bin" / "sh"
        if not sh.exists() and not sh.is_symlink():
            sh.symlink_to("dash")  # dash's postinst would have made it
        if not (tmp / PYTHON.lstrip("/")).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise debian.FetchError(f"the {arch} userland has no {PYTHON}")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        (out / ".complete").touch()
    return out
