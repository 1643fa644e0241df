"""BTF parsing and offset resolution, against independent values."""

from __future__ import annotations

import json
import lzma
import os
import pathlib
import re
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


SYNTHETIC = [
    "6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-50-rt-amd64",
    "6.1.0-50-cloud-amd64", "6.1.0-50-arm64", "6.12.107+deb13-amd64",
    "6.12.117+deb13-amd64", "6.12.117+deb13-arm64", "5.10.0-46-amd64",
]  # fmt: skip


@pytest.mark.parametrize(
    ("release", "entry"),
    [
        ("6.1.0-50-amd64", "6.1.0-50-amd64"),  # exact
        ("6.1.0-54-amd64", "6.1.0-50-amd64"),  # newer ABI: the nearest
        ("6.1.0-48-amd64", "6.1.0-47-amd64"),  # nearer the older one
        ("6.1.0-54-rt-amd64", "6.1.0-50-rt-amd64"),  # rt serves rt
        ("6.1.0-54-cloud-amd64", "6.1.0-50-cloud-amd64"),
        ("6.1.0-54-arm64", "6.1.0-50-arm64"),  # arm64 serves arm64
        ("6.12.130+deb13-amd64", "6.12.117+deb13-amd64"),  # newer point
        ("6.12.110+deb13-amd64", "6.12.107+deb13-amd64"),
        ("6.12.130+deb13-arm64", "6.12.117+deb13-arm64"),
        ("5.10.0-12-amd64", "5.10.0-46-amd64"),  # older: still the series
    ],
)
def test_table_serves_only_the_same_kind(release: str, entry: str) -> None:
    m = offset_table.match(release, SYNTHETIC)
    assert m.entry == entry
    assert m.exact == (release == entry)


@pytest.mark.parametrize(
    ("release", "why"),
    [
        ("6.12.117+deb13-rt-amd64", r"6\.12 rt x86_64"),  # no rt of 6.12
        ("6.12.117+deb13-cloud-amd64", r"6\.12 cloud x86_64"),
        ("5.10.0-46-arm64", r"5\.10 plain arm64"),  # no arm64 of 5.10
        ("6.6.0-1-amd64", r"6\.6 plain x86_64"),  # no such series
        ("6.1.0-50-rt-arm64", r"6\.1 rt arm64"),
    ],
)
def test_table_refuses_another_kind(release: str, why: str) -> None:
    with pytest.raises(quark.NotSupportedError, match=why) as e:
        offset_table.match(release, SYNTHETIC)
    assert "must all match" in str(e.value)
    assert offset_table.best_match(release, SYNTHETIC) is None


def test_table_ties_go_to_the_newer_build() -> None:
    cands = ["6.1.0-48-amd64", "6.1.0-52-amd64"]
    assert offset_table.match("6.1.0-50-amd64", cands).entry == (
        "6.1.0-52-amd64"
    )


def test_a_release_without_an_architecture_needs_the_machine() -> None:
    cands = ["6.8.0-40-generic-x86_64", "6.8.0-40-generic-aarch64"]
    with pytest.raises(quark.NotSupportedError, match="no architecture"):
        offset_table.match("6.8.0-45-generic", cands)
    arm = offset_table.match("6.8.0-45-generic", cands, machine="aarch64")
    assert arm.entry == "6.8.0-40-generic-aarch64"
    with pytest.raises(quark.ConfigError, match="not a kernel release"):
        offset_table.match("zzz", cands)


def test_parse_release_reads_debian_and_other_releases() -> None:
    r = offset_table.parse_release("6.12.117+deb13-rt-amd64")
    assert (r.series, r.arch, r.flavour, r.build) == (
        (6, 12), "x86_64", ("rt",), (117, 13),
    )  # fmt: skip
    r = offset_table.parse_release("5.14.0-362.8.1.el9_3.x86_64")
    assert (r.series, r.arch, r.flavour) == ((5, 14), "x86_64", ())
    r = offset_table.parse_release("6.1.0-50-cloud-amd64")
    assert r.kind == "6.1 cloud x86_64"


def _kinds_around(entry: str) -> list[str]:
    """Releases near a table entry: a newer build, and its twins of every
    other flavour and architecture."""
    out = [
        re.sub(
            r"^(\d+\.\d+\.)(\d+)",
            lambda m: m.group(1) + str(int(m.group(2)) + 3),
            entry,
        )
    ]
    base = re.sub(r"-(rt-|cloud-)?(amd64|arm64)$", "", entry)
    for flavour in ("", "rt-", "cloud-"):
        for arch in ("amd64", "arm64"):
            out.append(f"{base}-{flavour}{arch}")
    return out  # fmt: skip


def test_the_shipped_table_never_serves_another_kind() -> None:
    """Every entry's neighbours: served by an entry of their own kind,
    or refused; never by another kind's."""
    kernels = list(offset_table.load()["kernels"])
    for entry in kernels:
        for release in _kinds_around(entry):
            want = offset_table.parse_release(release).kind
            try:
                m = offset_table.match(release, kernels)
            except quark.NotSupportedError as e:
                assert want in str(e)
                continue
            assert offset_table.parse_release(m.entry).kind == want, release


def test_quark_btf_l_says_which_entry_and_how_close() -> None:
    def run(release: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quark.cli.btf", "-l", release],
            capture_output=True, text=True,
        )  # fmt: skip

    r = run("6.1.0-50-amd64")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["6.1.0-50-amd64", "match: exact"]
    r = run("6.1.0-99-amd64")
    entry, how = r.stdout.splitlines()
    assert entry.startswith("6.1.0-") and entry.endswith("-amd64")
    assert how.startswith("match: nearest build of the same kind (6.1 "
                          "plain x86_64)")  # fmt: skip
    r = run("6.1.0-50-rt-sparc64")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("quark-btf: no offset table entry")
    assert r.stderr.count("\n") == 1


def test_kernel_offsets_from_the_table_when_told_to_ignore_btf() -> None:
    expected = json.loads(EXPECTED.read_text())["offsets"]
    t = kernel_offsets(ignore_btf=True, release="5.10.0-46-amd64")
    assert t.source == "table:5.10.0-46-amd64"
    assert dict(t) == expected


def test_the_kernels_btf_is_parsed_once_per_process(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue opened again (each quark-test case, an agent reopening after
    an error) does not parse the kernel's BTF again: seconds in a TCG
    guest. Another file at that path is parsed anew."""
    btf = tmp_path / "vmlinux"
    with lzma.open(FIXTURE) as f:
        btf.write_bytes(f.read())
    monkeypatch.setattr(quark.btf, "KERNEL_BTF", str(btf))
    monkeypatch.setattr(quark.btf, "_btf_memo", {})
    parsed = []
    real = quark.btf.load_kernel_btf

    def counting(path: str | None = None) -> quark.btf.Btf:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(quark.btf, "load_kernel_btf", counting)
    expected = json.loads(EXPECTED.read_text())["offsets"]
    first = kernel_offsets(ignore_btf=False)
    again = kernel_offsets(ignore_btf=False)
    assert len(parsed) == 1
    assert dict(first) == dict(again) == expected
    assert again.source == f"btf:{btf}"
    # a caller's copy is its own: changing it changes no later answer
    first._offsets.clear()
    assert dict(kernel_offsets(ignore_btf=False)) == expected
    # another file in its place (a test's, a container's bind mount)
    btf.unlink()
    with lzma.open(FIXTURE) as f:
        btf.write_bytes(f.read())
    assert dict(kernel_offsets(ignore_btf=False)) == expected
    assert len(parsed) == 2


def test_quark_btf_exit_status_counts_failures() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "quark.cli.btf", "-b", "-l", "5.10.0-46-amd64"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "5.10.0-46-amd64"
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


# -- images without an ELF: lz4 payloads (cloud-amd64), arm64 Images ----------


def test_lz4_legacy_payload_with_overlapping_matches() -> None:
    from quark.btf.sources import LZ4_LEGACY, _decompress_lz4

    # "abcd", then 8 bytes from 4 back (overlapping), then "xy" alone
    block = b"\x44abcd\x04\x00" + b"\x20xy"
    frame = LZ4_LEGACY + struct.pack("<I", len(block)) + block
    # the kernel's build appends the decompressed size: not a block
    out = _decompress_lz4(frame + struct.pack("<I", 14))
    assert out == b"abcdabcdabcdxy"
    # long literal and match lengths (15 + extension bytes)
    lit = bytes(range(256)) * 2  # 512 literals: 15 + 255 + 242
    block = b"\xff" + b"\xff\xf2" + lit + b"\x00\x02" + b"\xff\x0a"
    block += b"\x10z"
    out = _decompress_lz4(LZ4_LEGACY + struct.pack("<I", len(block)) + block)
    assert out == lit + (lit[-512:] * 2)[: 4 + 15 + 255 + 10] + b"z"
    with pytest.raises(ValueError, match="outside"):
        _decompress_lz4(
            LZ4_LEGACY + struct.pack("<I", 4) + b"\x04\x09\x00\x00"
        )


def test_arm64_image_btf_is_found_by_its_header(deb510) -> None:  # type: ignore[no-untyped-def]
    import gzip

    from quark.btf.sources import btf_bytes

    raw = lzma.decompress(FIXTURE.read_bytes())
    head = bytearray(0x1000)
    head[0x38:0x3C] = b"ARM\x64"
    # a stray header-like pattern before the real one must not win
    decoy = b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + b"\xff" * 16
    image = bytes(head) + decoy + b"\0" * 64 + raw + b"\0" * 4096
    assert btf_bytes(image, "Image") == raw
    assert btf_bytes(gzip.compress(image, 1), "vmlinuz") == raw
    got = load_btf_bytes(btf_bytes(image, "Image"), "arm64")
    assert got.offsets() == deb510.offsets()
    with pytest.raises(quark.BTFError, match="no BTF in the kernel image"):
        btf_bytes(bytes(head) + b"\0" * 4096, "Image")
