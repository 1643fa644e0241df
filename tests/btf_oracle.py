"""An independent oracle for BTF offsets: bpftool turns the BTF into C
(``btf dump ... format c``) and clang computes ``__builtin_offsetof`` of
every path (and every enum value); the values are read back from the
compiled object's .rodata with pyelftools. Nothing of quark's parser is
involved except to pick which of a renamed field's names exists."""

from __future__ import annotations

import io
import pathlib
import shutil
import struct
import subprocess
import tempfile

from elftools.elf.elffile import ELFFile

from quark.btf import Btf
from quark.btf.resolve import which

TOOLS = ("bpftool", "clang")


def available() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def oracle_offsets(
    raw_btf: bytes, btf: Btf, targets: list[str]
) -> dict[str, int]:
    exprs = []
    names = []
    for t in targets:
        try:
            path = which(btf.raw, t)
        except Exception:  # an enum, or missing: clang decides below
            path = t
        root, _, rest = path.partition(".")
        if root == "pid_type":
            exprs.append(rest)  # an enum constant
        else:
            exprs.append(f"__builtin_offsetof(struct {root}, {rest})")
        names.append(t)
    with tempfile.TemporaryDirectory() as d:
        dp = pathlib.Path(d)
        (dp / "btf.raw").write_bytes(raw_btf)
        header = subprocess.run(
            ["bpftool", "btf", "dump", "file", str(dp / "btf.raw"),
             "format", "c"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        (dp / "vmlinux.h").write_bytes(header)
        body = ",\n".join(f"  (unsigned long)({e})" for e in exprs)
        (dp / "o.c").write_text(
            '#include "vmlinux.h"\n'
            f"const volatile unsigned long v[{len(exprs)}] = {{\n{body}\n}};\n"
        )
        subprocess.run(
            ["clang", "-target", "bpf", "-O0", "-c", "o.c", "-o", "o.o",
             "-w"],
            cwd=dp, check=True, capture_output=True,
        )  # fmt: skip
        elf = ELFFile(io.BytesIO((dp / "o.o").read_bytes()))
        data = elf.get_section_by_name(".rodata").data()
    values = struct.unpack(f"<{len(exprs)}Q", data[: 8 * len(exprs)])
    return dict(zip(names, values, strict=True))
