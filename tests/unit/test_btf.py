"""BTF parsing and offset resolution, against independent values."""

from __future__ import annotations

import json
import lzma
import os
import pathlib
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quark
from quark.btf import (
    TARGETS,
    kernel_offsets,
    load_btf_bytes,
    load_btf_file,
    load_kernel_btf,
)
from quark.btf import table as offset_table
from quark.btf.parser import Btf as RawBtf
from quark.btf.sources import vmlinuz_elf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import btf_oracle

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "btf"
FIXTURE = DATA / "debian-5.10.0-46-amd64.btf.xz"
EXPECTED = DATA / "debian-5.10.0-46-amd64.expected.json"


@pytest.fixture(scope="module")
def deb510() -> quark.btf.Btf:
    return load_btf_bytes(lzma.decompress(FIXTURE.read_bytes()), "5.10")


def test_fixture_offsets_match_the_oracles(deb510) -> None:  # type: ignore[no-untyped-def]
    expected = json.loads(EXPECTED.read_text())["offsets"]
    assert deb510.offsets() == expected
    assert set(expected) | {"task_struct.pids"} == set(TARGETS)


def test_paths_through_anonymous_members_and_enums(deb510) -> None:  # type: ignore[no-untyped-def]
    assert deb510.offset("fs_struct.pwd.dentry") == deb510.offset(
        "fs_struct.pwd"
    ) + deb510.offset("path.dentry")
    assert deb510.enum_value("pid_type.PIDTYPE_SID") == 3
    # net_namespace does not exist: upstream's alternative names resolve it
    assert deb510.offset("net_namespace.proc_inum") == deb510.offset(
        "net.ns.inum"
    )


def test_bitfields_and_unknown_paths_are_refused(deb510) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(quark.BTFError, match="bitfield"):
        deb510.offset("task_struct.in_execve")
    with pytest.raises(quark.BTFError, match="no member 'nope'"):
        deb510.offset("task_struct.nope")
    with pytest.raises(quark.BTFError, match="no type named"):
        deb510.offset("no_such_struct.x")
    with pytest.raises(quark.BTFError, match="not a struct"):
        deb510.offset("task_struct.pid.x")


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"),
                    reason="this kernel has no BTF")  # fmt: skip
def test_host_btf_matches_the_oracle() -> None:
    assert btf_oracle.available(), "bpftool and clang are set-up tools"
    btf = load_kernel_btf()
    ours = btf.offsets()
    raw = pathlib.Path("/sys/kernel/btf/vmlinux").read_bytes()
    assert btf_oracle.oracle_offsets(raw, btf, list(ours)) == ours
    # every type parses, including the kinds pahole 1.24 chokes on
    kinds = {btf.raw.type(i).kind for i in range(1, len(btf.raw) + 1)}
    assert kinds <= set(range(1, 20))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["5.10", "6.1", "6.12", "7.2"])
def test_debian_kernels_match_the_oracle(name: str) -> None:
    """Each matrix kernel's vmlinuz: BTF extracted, offsets checked."""
    from kernel_images import manifest

    fetched = manifest.fetch(manifest.lookup(name))
    btf = load_btf_file(fetched.vmlinuz)
    ours = btf.offsets()
    raw = btf.raw
    assert len(raw) > 50000
    from quark.btf.sources import btf_bytes

    data = btf_bytes(fetched.vmlinuz.read_bytes(), name)
    assert btf_oracle.oracle_offsets(data, btf, list(ours)) == ours
    table_name, table = offset_table.lookup(fetched.kernel.release)
    assert table_name == fetched.kernel.release
    assert table == ours


def test_table_best_match() -> None:
    kernels = list(offset_table.load()["kernels"])
    assert offset_table.best_match("6.1.0-50-amd64", kernels) == (
        "6.1.0-50-amd64"
    )
    assert offset_table.best_match("6.1.0-99-amd64", kernels).startswith(
        "6.1.0-"
    )
    assert offset_table.best_match("5.10.0-46-cloud-amd64", kernels) == (
        "5.10.0-46-amd64"
    )
    assert offset_table.best_match("zzz", kernels) is None
    with pytest.raises(quark.NotSupportedError, match="no offset table"):
        offset_table.lookup("zzz")


def test_kernel_offsets_from_the_table_when_told_to_ignore_btf() -> None:
    expected = json.loads(EXPECTED.read_text())["offsets"]
    t = kernel_offsets(ignore_btf=True, release="5.10.0-46-amd64")
    assert t.source == "table:5.10.0-46-amd64"
    assert dict(t) == expected


def test_quark_btf_exit_status_counts_failures() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "quark.cli.btf", "-b", "-l", "5.10.0-46-amd64"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "5.10.0-46-amd64"
    with lzma.open(FIXTURE) as f, open("/tmp/q510.btf", "wb") as out:
        out.write(f.read())
    r = subprocess.run(
        [sys.executable, "-m", "quark.cli.btf", "-b", "-f", "/tmp/q510.btf",
         "task_struct.cred", "a.b", "task_struct.nope"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stdout.splitlines()
    cred = json.loads(EXPECTED.read_text())["offsets"]["task_struct.cred"]
    assert lines == [f"task_struct.cred {cred} {cred * 8}", "a.b U",
                     "task_struct.nope U"]  # fmt: skip


# -- malformed input ----------------------------------------------------------


def _btf(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types),
                      len(types), len(strings))  # fmt: skip
    return hdr + types + strings


def _t(name: int, kind: int, vlen: int, size: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size)


STRINGS = b"\0int\0s\0a\0b\0e\0X\0tag\0"
VALID = _btf(
    _t(1, 1, 0, 4)
    + struct.pack("<I", 32)  # 1: int
    + _t(5, 4, 2, 8)
    + struct.pack("<III", 7, 1, 0)  # 2: struct s {a; b}
    + struct.pack("<III", 9, 1, 32)
    + _t(0, 8, 0, 2)  # 3: typedef -> 2
    + _t(11, 19, 1, 8)
    + struct.pack("<III", 13, 5, 1)  # 4: enum64 e {X}
    + _t(15, 17, 0, 2)
    + struct.pack("<i", -1)  # 5: decl_tag on s
    + _t(15, 18, 0, 1),  # 6: type_tag -> int
    STRINGS,
)


def test_the_synthetic_btf_parses() -> None:
    raw = RawBtf(VALID)
    assert len(raw) == 6
    btf = quark.btf.Btf(raw)
    assert btf.offset("s.b") == 4
    assert btf.enum_value("e.X") == (1 << 32) | 5


def test_a_typedef_loop_is_an_error_not_a_hang() -> None:
    loop = _btf(_t(0, 8, 0, 2) + _t(0, 8, 0, 1), b"\0")
    with pytest.raises(quark.BTFError, match="loop"):
        RawBtf(loop).resolve(1)


def _only_btf_errors(data: bytes) -> None:
    try:
        btf = quark.btf.Btf(RawBtf(data))
        for path in ("s.a", "s.b", "e.X", "x.y"):
            try:
                btf.offset(path)
            except quark.BTFError:
                pass
    except quark.BTFError:
        pass


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_truncated_input_raises_btf_errors(cut: int) -> None:
    _only_btf_errors(VALID[:cut])


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1),
       st.integers(min_value=0, max_value=255))  # fmt: skip
def test_corrupted_bytes_raise_btf_errors(pos: int, value: int) -> None:
    data = bytearray(VALID)
    data[pos] = value
    _only_btf_errors(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_raise_btf_errors(data: bytes) -> None:
    with pytest.raises(quark.BTFError):
        load_btf_bytes(data, "random")


@pytest.mark.parametrize("magic", [b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd",
                                   b"\x1f\x8b\x08"])  # fmt: skip
def test_a_corrupt_compressed_kernel_is_a_btf_error(magic: bytes) -> None:
    image = b"MZ" + b"\0" * 100 + magic + b"garbage" * 50
    with pytest.raises(quark.BTFError, match="decompressed to an ELF"):
        vmlinuz_elf(image, "bad-vmlinuz")


def test_wrong_magic_names_it() -> None:
    with pytest.raises(quark.BTFError, match="wrong magic"):
        RawBtf(b"\x00\x01" + VALID[2:])
