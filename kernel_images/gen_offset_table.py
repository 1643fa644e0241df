#!/usr/bin/env python3
"""Generate quark/_data/offsets.json.gz, the offset table the KPROBE
backend uses on kernels without BTF.

Fetches every Debian amd64 kernel of the 5.10, 6.1, 6.12 and 7.x series the
archive serves (through the system's configured Debian source, see
kernel_images/debian.py), reads the BTF of each vmlinuz, resolves
quark.btf.TARGETS and writes a table keyed by ``uname -r`` release, with
identical offset sets stored once.

    python kernel_images/gen_offset_table.py [--out FILE] [--series REGEX]
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kernel_images import debian  # noqa: E402
from quark.btf import load_btf_file  # noqa: E402

OUT = HERE.parent / "quark" / "_data" / "offsets.json.gz"
# image packages (the vmlinuz) of the standard amd64 flavour
PATTERNS = (
    r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
    r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
    r"^linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned$",
    r"^linux-binary-7\.[0-9]+\.[0-9]+\+deb14-amd64$",
)


def release_of(package: str) -> str:
    m = re.match(r"linux-(?:image|binary)-(.+?)(?:-unsigned)?$", package)
    assert m, package
    return m.group(1)


def vmlinuz_in(root: pathlib.Path, release: str) -> pathlib.Path:
    for cand in (
        root / "boot" / f"vmlinuz-{release}",
        root / "usr" / "lib" / "modules" / release / "vmlinuz",
    ):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"no vmlinuz for {release} under {root}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--series", default="", help="only packages matching")
    args = ap.parse_args()
    packages = []
    for pat in PATTERNS:
        packages += [p for p in debian.search(pat) if args.series in p]
    if not packages:
        print("gen_offset_table: no kernel packages found", file=sys.stderr)
        return 1
    sets: list[dict[str, int]] = []
    index: dict[str, int] = {}
    kernels: dict[str, int] = {}
    failed = []
    for pkg in sorted(packages):
        release = release_of(pkg)
        try:
            root = debian.extract(debian.download(pkg))
            offsets = load_btf_file(vmlinuz_in(root, release)).offsets()
        except Exception as e:  # reported below, then left out of the table
            failed.append(f"{release}: {e}")
            print(
                f"gen_offset_table: {release}: left out: {e}", file=sys.stderr
            )
            continue
        key = json.dumps(offsets, sort_keys=True)
        if key not in index:
            index[key] = len(sets)
            sets.append(offsets)
        kernels[release] = index[key]
        print(
            f"gen_offset_table: {release}: {len(offsets)} offsets "
            f"(set {index[key]})",
            file=sys.stderr,
        )
    table = {"version": 1, "sets": sets, "kernels": kernels}
    data = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    args.out.write_bytes(gzip.compress(data, mtime=0))
    print(
        f"gen_offset_table: {len(kernels)} kernels, {len(sets)} distinct "
        f"sets, {args.out.stat().st_size} bytes -> {args.out}"
    )
    return 1 if failed and not kernels else 0


if __name__ == "__main__":
    sys.exit(main())
