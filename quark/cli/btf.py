"""quark-btf: the struct offsets quark needs, from BTF or the offset table.

    quark-btf [-b] [-f FILE] [PATH...]   PATH OFFSET lines (-b: and bits)
    quark-btf -l RELEASE [-v]            the table entry serving a release,
                                         and how close a match it is
    quark-btf -g FILE...                 table entries (JSON) from BTF files

Without -f: the running kernel's BTF, else the offset table entry for this
kernel. FILE is raw BTF, a vmlinux ELF or a vmlinuz image. PATH is any
dotted path (``fs_struct.pwd.dentry``, ``mm_struct.arg_start``) or an enum
value (``pid_type.PIDTYPE_SID``); default: every offset quark needs. An
unresolved path prints ``PATH U``. The exit status is the number of paths
that did not resolve (at most 255); 1 if the BTF cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import quark
from quark.btf import TARGETS, kernel_offsets, load_btf_file, load_kernel_btf
from quark.btf import table as offset_table

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="quark-btf",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("-b", action="store_true", help="also print bits")
    ap.add_argument("-f", metavar="FILE", help="BTF, vmlinux or vmlinuz")
    ap.add_argument(
        "-l", metavar="RELEASE", help="which table entry serves this uname -r"
    )
    ap.add_argument(
        "-g",
        action="store_true",
        help="print table entries for the FILEs given as PATHs",
    )
    ap.add_argument("-v", action="store_true", help="with -l: its offsets")
    ap.add_argument(
        "-V", action="version", version=f"quark-btf {quark.__version__}"
    )
    ap.add_argument("paths", nargs="*", metavar="PATH")
    args = ap.parse_args(argv)
    try:
        if args.l:
            return _lookup(args.l, args.v)
        if args.g:
            return _generate(args.paths)
        return _offsets(
            args.f,
            args.paths or list(TARGETS),
            args.b,
            explicit=bool(args.paths),
        )
    except quark.QuarkError as e:
        print(f"quark-btf: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader (head, ...) went away: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _lookup(release: str, verbose: bool) -> int:
    """The entry's name, then ``match: HOW`` (exact, or which kind of
    kernel it shares and how far its build is)."""
    table = offset_table.load()
    m = offset_table.match(release, list(table["kernels"]))
    offsets = table["sets"][table["kernels"][m.entry]]
    print(m.entry)
    print("match: " + m.describe(release).split(": ", 1)[1])
    if verbose:
        for path in sorted(offsets):
            print(f"{path} {offsets[path]}")
    return 0


def _generate(files: list[str]) -> int:
    if not files:
        print("quark-btf: -g needs BTF files", file=sys.stderr)
        return 1
    out = {}
    for f in files:
        out[os.path.basename(f)] = load_btf_file(f).offsets()
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


def _offsets(
    file: str | None, paths: list[str], bits: bool, *, explicit: bool
) -> int:
    if file is not None:
        btf = load_btf_file(file)
    elif os.path.exists("/sys/kernel/btf/vmlinux") and not os.environ.get(
        "QUARK_IGNORE_BTF"
    ):
        btf = load_kernel_btf()
    else:
        table = kernel_offsets(paths)
        for p in paths:
            _line(p, table.get(p), bits)
        return min(255, sum(1 for p in paths if p not in table))
    failed = 0
    for p in paths:
        try:
            value: int | None = btf.offset(p)
        except quark.BTFError as e:
            value = None
            failed += 1
            if explicit:
                print(f"quark-btf: {e}", file=sys.stderr)
        _line(p, value, bits)
    return min(255, failed)


def _line(path: str, value: int | None, bits: bool) -> None:
    if value is None:
        print(f"{path} U")
    elif bits:
        print(f"{path} {value} {value * 8}")
    else:
        print(f"{path} {value}")


if __name__ == "__main__":
    sys.exit(main())
