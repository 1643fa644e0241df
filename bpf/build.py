#!/usr/bin/env python3
"""Build quark's BPF object: ``python bpf/build.py [--check] [-o OUT]``.

Compiles ``bpf/quark.bpf.c`` with clang (``-target bpf -O2 -g``: BTF and
CO-RE relocations are needed), strips the DWARF sections (``.BTF`` and
``.BTF.ext`` stay), and writes ``quark/_data/quark.bpf.o``, which ships in the
package so that installing needs no compiler. The build runs from ``bpf/``
with relative paths, so the object is the same byte for byte on any machine
with the same clang. ``--check`` rebuilds into a temporary file and fails if
the shipped object differs (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, os.pardir, "quark", "_data", "quark.bpf.o")
CLANG_MIN = 14


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    sys.exit(
        f"build.py: none of {', '.join(names)} found (apt install clang llvm)"
    )


def _clang_major(clang: str) -> int:
    out = subprocess.run(
        [clang, "--version"], capture_output=True, text=True, check=True
    ).stdout
    for word in out.split():
        if word[:1].isdigit() and "." in word:
            return int(word.split(".")[0])
    return 0


def build(out: str) -> None:
    clang = _tool("clang", "clang-14")
    strip = _tool("llvm-strip", "llvm-strip-14")
    major = _clang_major(clang)
    if major < CLANG_MIN:
        sys.exit(f"build.py: clang {major} is too old (>= {CLANG_MIN})")
    tmp = out + ".tmp"
    subprocess.run(
        [clang, "-target", "bpf", "-O2", "-g", "-Wall", "-Werror",
         "-D__TARGET_ARCH_x86", "-I.", f"-fdebug-prefix-map={HERE}=.",
         "-c", "quark.bpf.c", "-o", tmp],
        cwd=HERE, check=True,
    )  # fmt: skip
    subprocess.run([strip, "-g", tmp], check=True)
    os.replace(tmp, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="fail if the shipped object is stale",
    )
    ap.add_argument("-o", "--output", default=SHIPPED)
    args = ap.parse_args()
    if not args.check:
        build(args.output)
        print(f"build.py: wrote {os.path.relpath(args.output)}")
        return 0
    with tempfile.TemporaryDirectory() as d:
        fresh = os.path.join(d, "quark.bpf.o")
        build(fresh)
        if not os.path.exists(SHIPPED) or not filecmp.cmp(
            fresh, SHIPPED, shallow=False
        ):
            print(
                "build.py: quark/_data/quark.bpf.o is stale: run "
                "python bpf/build.py and commit it",
                file=sys.stderr,
            )
            return 1
    print("build.py: the shipped BPF object matches its sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
