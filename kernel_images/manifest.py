"""The kernel matrix's manifest (manifest.json) and fetching its kernels."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from dataclasses import dataclass

from kernel_images import debian

__all__ = ["Kernel", "fetch", "kernels", "lookup"]

MANIFEST = pathlib.Path(__file__).with_name("manifest.json")


@dataclass(frozen=True)
class Kernel:
    name: str
    release: str
    packages: tuple[str, ...]
    vmlinuz: str
    modules: str
    arch: str = "amd64"  # Debian's name of the kernel's architecture


@dataclass(frozen=True)
class Fetched:
    kernel: Kernel
    vmlinuz: pathlib.Path
    modules: pathlib.Path  # lib/modules/RELEASE, with modules.dep


def kernels() -> list[Kernel]:
    with open(MANIFEST) as f:
        data = json.load(f)
    return [
        Kernel(
            k["name"],
            k["release"],
            tuple(k["packages"]),
            k["vmlinuz"],
            k["modules"],
            k.get("arch", "amd64"),
        )
        for k in data["kernels"]
    ]


def lookup(name: str) -> Kernel:
    for k in kernels():
        if name in (k.name, k.release):
            return k
    known = ", ".join(k.name for k in kernels())
    raise debian.FetchError(f"no kernel {name!r} in the manifest ({known})")


def _depmod(root: pathlib.Path, kernel: Kernel) -> None:
    """modules.dep is made at install time, not shipped: make it."""
    moddir = root / kernel.modules
    if (moddir / "modules.dep").exists() or not (moddir / "kernel").exists():
        return
    if kernel.modules.startswith("usr/") and not (root / "lib").exists():
        (root / "lib").symlink_to("usr/lib")  # depmod -b reads lib/modules
    r = subprocess.run(
        ["depmod", "-b", str(root), kernel.release],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise debian.FetchError(f"depmod {kernel.release}: {r.stderr}")


def fetch(kernel: Kernel) -> Fetched:
    """Download and unpack the kernel's packages (cached)."""
    arch = None if kernel.arch == "amd64" else kernel.arch
    roots = [
        debian.extract(debian.download(p, arch=arch)) for p in kernel.packages
    ]
    vmlinuz = modules = None
    for root in roots:
        _depmod(root, kernel)
        if (root / kernel.vmlinuz).exists():
            vmlinuz = root / kernel.vmlinuz
        if (root / kernel.modules / "modules.dep").exists():
            modules = root / kernel.modules
    if vmlinuz is None or modules is None:
        raise debian.FetchError(
            f"{kernel.name}: {kernel.vmlinuz} or {kernel.modules}/modules.dep "
            f"missing from {', '.join(kernel.packages)}"
        )
    return Fetched(kernel, vmlinuz, modules)


def fetch_all() -> list[Fetched]:
    return [fetch(k) for k in kernels()]


if __name__ == "__main__":
    for f in fetch_all():
        print(f.kernel.name, f.vmlinuz, os.path.getsize(f.vmlinuz))
