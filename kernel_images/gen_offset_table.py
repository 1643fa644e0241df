#!/usr/bin/env python3
"""Generate quark/_data/offsets.json.gz, the offset table the KPROBE
backend uses on kernels without BTF.

Fetches every Debian kernel of the 5.10, 6.1, 6.12 and 7.x series the
archive serves, in every flavour of FLAVOURS (through the system's
configured Debian source, see kernel_images/debian.py), reads the BTF of
each vmlinuz (an ELF inside for x86, a raw Image for arm64), resolves
quark.btf.TARGETS and writes a table keyed by ``uname -r`` release, with
identical offset sets stored once. Only the vmlinuz is unpacked, into a
temporary directory removed at once; a package's .deb is deleted after use
unless a manifest kernel needs it (``--keep-debs`` keeps them all).

    python kernel_images/gen_offset_table.py [--out FILE] [--series STR]
        [--keep-debs]
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import re
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kernel_images import debian, manifest  # noqa: E402
from quark.btf import load_btf_file  # noqa: E402

OUT = HERE.parent / "quark" / "_data" / "offsets.json.gz"
# Debian's kernel flavours the table covers (the release's last words)
FLAVOURS = ("amd64", "cloud-amd64", "rt-amd64", "arm64")
# image packages (the vmlinuz) of each series; {f} is the flavour
SERIES = (
    r"^linux-image-5\.10\.0-[0-9]+-{f}-unsigned$",
    r"^linux-image-6\.1\.0-[0-9]+-{f}-unsigned$",
    r"^linux-image-6\.12\.[0-9]+\+deb13-{f}-unsigned$",
    r"^linux-binary-7\.[0-9]+\.[0-9]+\+deb14-{f}$",
)
PATTERNS = tuple(
    p.replace("{f}", re.escape(f)) for p in SERIES for f in FLAVOURS
)


def release_of(package: str) -> str:
    m = re.match(r"linux-(?:image|binary)-(.+?)(?:-unsigned)?$", package)
    assert m, package
    return m.group(1)


def package_of(release: str) -> str:
    """The image package of a release (release_of's inverse)."""
    if re.match(r"^7\.", release):
        return f"linux-binary-{release}"
    return f"linux-image-{release}-unsigned"


def cached_btf(release: str) -> bytes:
    """A table kernel's raw BTF, kept in the cache (some 5 MB; the .deb
    it came from is not kept): tests compare the table with it."""
    from quark.btf.sources import btf_bytes

    out = debian.cache_dir() / "btf" / f"{release}.btf"
    if out.exists():
        return out.read_bytes()
    pkg = package_of(release)
    deb = debian.download(pkg, arch=arch_of(release))
    with tempfile.TemporaryDirectory(prefix="gen-offsets-") as d:
        root = pathlib.Path(d)
        unpack_vmlinuz(deb, root)
        vmlinuz = vmlinuz_in(root, release)
        data = btf_bytes(vmlinuz.read_bytes(), str(vmlinuz))
    if pkg not in {p for k in manifest.kernels() for p in k.packages}:
        deb.unlink(missing_ok=True)
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return data


def arch_of(release: str) -> str | None:
    """The Debian architecture of a package whose release ends with it
    (None: the machine's own)."""
    return "arm64" if release.endswith("arm64") else None


def unpack_vmlinuz(deb: pathlib.Path, into: pathlib.Path) -> None:
    """Only the kernel image of the package: boot/vmlinuz-R or
    usr/lib/modules/R/vmlinuz."""
    tar = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
    )
    r = subprocess.run(
        ["tar", "-x", "-C", str(into), "--wildcards", "*vmlinuz*"],
        stdin=tar.stdout, capture_output=True, text=True,
    )  # fmt: skip
    if tar.wait() != 0 or r.returncode != 0:
        raise debian.FetchError(
            f"unpacking the vmlinuz of {deb.name} failed: {r.stderr.strip()}"
        )


def _offsets(deb: pathlib.Path, release: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="gen-offsets-") as d:
        root = pathlib.Path(d)
        unpack_vmlinuz(deb, root)
        return load_btf_file(vmlinuz_in(root, release)).offsets()


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
    ap.add_argument(
        "--series", default="", help="only packages whose name holds this"
    )
    ap.add_argument(
        "--keep-debs", action="store_true",
        help="keep every downloaded .deb in the cache",
    )  # fmt: skip
    ap.add_argument(
        "--batch", type=int, default=12,
        help="packages downloaded at once (disk: some 50 MB each)",
    )  # fmt: skip
    args = ap.parse_args()
    needed = {p for k in manifest.kernels() for p in k.packages}
    packages = []
    # one search (each reads every suite's package lists), then each
    # pattern picks its own
    found = debian.search("|".join(f"({p})" for p in PATTERNS))
    for pat in PATTERNS:
        packages += [p for p in found if re.match(pat, p) and args.series in p]
    if not packages:
        print("gen_offset_table: no kernel packages found", file=sys.stderr)
        return 1
    sets: list[dict[str, int]] = []
    index: dict[str, int] = {}
    kernels: dict[str, int] = {}
    failed = []
    packages.sort()
    for start in range(0, len(packages), args.batch):
        batch = packages[start : start + args.batch]
        try:
            debs = debian.download_many(
                [(p, arch_of(release_of(p))) for p in batch]
            )
        except debian.FetchError:
            # the mirror may lack a package its index lists: one by one
            debs = {}
            for p in batch:
                try:
                    debs[p] = debian.download(p, arch=arch_of(release_of(p)))
                except debian.FetchError as e:
                    why = str(e).strip().splitlines()[-1]
                    failed.append(f"{release_of(p)}: {why}")
                    print(
                        f"gen_offset_table: {release_of(p)}: left out: {why}",
                        file=sys.stderr,
                    )
        for pkg in (p for p in batch if p in debs):
            release = release_of(pkg)
            try:
                offsets = _offsets(debs[pkg], release)
            except Exception as e:  # reported below, then left out
                failed.append(f"{release}: {e}")
                print(
                    f"gen_offset_table: {release}: left out: {e}",
                    file=sys.stderr,
                )
                continue
            finally:
                if not args.keep_debs and pkg not in needed:
                    debs[pkg].unlink(missing_ok=True)
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
    if failed:
        print(
            f"gen_offset_table: {len(failed)} packages left out:\n  "
            + "\n  ".join(failed),
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
