"""The EBPF backend refuses, at open, a BPF object whose wire protocol is
not the one this library decodes: a clear ProtocolError, nothing loaded.

The object is the project's own, built from bpf/ with Q_PROTO_VERSION
changed, as a stale or mixed installation would ship it.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

import quark
from quark.backends import ebpf
from quark.backends.ebpf_proto import PROTO_VERSION

from .conftest import require

BPF = pathlib.Path(__file__).resolve().parents[2] / "bpf"


def _build(src: pathlib.Path, out: pathlib.Path) -> None:
    clang = shutil.which("clang")
    assert clang is not None, "clang builds the BPF object (setup.sh)"
    subprocess.run(
        [clang, "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86",
         "-I.", "-c", "quark.bpf.c", "-o", str(out)],
        cwd=src, check=True,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.ebpf
def test_an_object_of_another_protocol_is_refused_at_open(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("ebpf")
    src = tmp_path / "bpf"
    shutil.copytree(BPF, src)
    proto = src / "proto.h"
    text = proto.read_text()
    old = f"Q_PROTO_VERSION = {PROTO_VERSION},"
    assert old in text
    proto.write_text(
        text.replace(old, f"Q_PROTO_VERSION = {PROTO_VERSION + 1},")
    )
    obj = tmp_path / "quark.bpf.o"
    _build(src, obj)
    monkeypatch.setattr(ebpf, "object_path", lambda: str(obj))
    with pytest.raises(quark.ProtocolError) as caught:
        quark.Queue(backend="ebpf")
    msg = str(caught.value)
    assert f"wire protocol {PROTO_VERSION + 1}" in msg
    assert f"this library {PROTO_VERSION}" in msg
