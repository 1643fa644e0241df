"""The file, shm and result records of the EBPF wire, and how the backend
pairs a record read at a syscall's entry with the syscall's result.

Records are packed from the layout the shipped object's BTF declares, as
the kernel writes them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quark
from quark import QQ, FileChange, FileOp, ShmKind
from quark.backends.ebpf import EbpfBackend, object_path
from quark.backends.ebpf_layout import Layout, object_layout
from quark.backends.ebpf_proto import Decoder, Pending
from quark.raw.types import RawEvent, RawKind


@pytest.fixture(scope="module")
def layout() -> Layout:
    return object_layout(object_path())


def _components(path: str) -> bytes:
    """A path as put_path writes it: components leaf first, each
    NUL-terminated."""
    parts = [p for p in path.split("/") if p]
    return b"".join(p.encode() + b"\0" for p in reversed(parts))


def _file(
    layout: Layout, areas: dict[str, bytes] | None = None, **v: Any
) -> bytes:
    rec = layout.record("q_file_event")
    areas = areas or {}
    order = sorted(
        (layout.const(f"Q_FV_{n}"), n)
        for n in ("PATH", "NAME", "OLD_PATH", "OLD_NAME", "SYM")
    )
    values: dict[str, Any] = dict.fromkeys(rec.names, 0)
    values["kind"] = layout.const("Q_FILE")
    tail = b"".join(areas.get(n, b"") for _, n in order)
    for i, (_, n) in enumerate(order):
        values[f"len_{i}"] = len(areas.get(n, b""))
    values["size"] = rec.size + len(tail)
    values.update(v)
    return rec.fmt.pack(*(values[n] for n in rec.names)) + tail


def _result(layout: Layout, tid: int, ret: int) -> bytes:
    rec = layout.record("q_result_event")
    values = dict.fromkeys(rec.names, 0)
    values.update(
        kind=layout.const("Q_RESULT"), size=rec.size, tid=tid, pid=tid,
        ret=ret,
    )  # fmt: skip
    return rec.fmt.pack(*(values[n] for n in rec.names))


def _shm(layout: Layout, **v: Any) -> bytes:
    rec = layout.record("q_shm_event")
    values: dict[str, Any] = dict.fromkeys(rec.names, 0)
    values.update(kind=layout.const("Q_SHM"), size=rec.size, name=b"")
    values.update(v)
    return rec.fmt.pack(*(values[n] for n in rec.names))


def test_an_fd_operation_has_its_whole_path_and_inode(
    layout: Layout,
) -> None:
    c = layout.const
    raw = Decoder(layout).decode(
        _file(
            layout, {"PATH": _components("/srv/data/a.txt")},
            op=c("Q_FILE_MODIFY"), change=c("Q_FC_CONTENT"),
            flags=c("Q_FF_STAT"), inode=77, mode=0o100644, fsize=5,
            uid=1000, gid=100, atime=1, mtime=2, ctime=3, pid=9, tid=10,
            time=123,
        )
    )  # fmt: skip
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.FILE
    assert (raw.pid, raw.tid, raw.time) == (9, 10, 123)
    f = raw.payload
    assert isinstance(f, quark.File)
    assert (f.op, f.change, f.path) == (
        FileOp.MODIFY, FileChange.CONTENT, "/srv/data/a.txt",
    )  # fmt: skip
    assert (f.inode, f.mode, f.size, f.uid, f.gid) == (
        77, 0o100644, 5, 1000, 100,
    )  # fmt: skip
    assert (f.atime, f.mtime, f.ctime) == (1, 2, 3)


@pytest.mark.parametrize(
    ("directory", "name", "path"),
    [
        ("/home/u", b"notes.txt\0", "/home/u/notes.txt"),
        ("/", b"top\0", "/top"),
        ("/ignored", b"/etc/passwd\0", "/etc/passwd"),  # absolute name
        ("/home/u", b"../x\0", "/home/u/../x"),  # joined, not resolved
    ],
)
def test_a_name_is_joined_to_its_directory(
    layout: Layout, directory: str, name: bytes, path: str
) -> None:
    c = layout.const
    item = Decoder(layout).decode(
        _file(
            layout, {"PATH": _components(directory), "NAME": name},
            op=c("Q_FILE_REMOVE"), flags=c("Q_FF_PENDING"), tid=5,
        )
    )  # fmt: skip
    assert isinstance(item, Pending)
    f = item.raw.payload
    assert isinstance(f, quark.File)
    assert f.path == path and f.inode is None


def test_a_move_has_both_names_and_a_path_cut_short_is_none(
    layout: Layout,
) -> None:
    c = layout.const
    dec = Decoder(layout).decode
    areas = {
        "PATH": _components("/d"), "NAME": b"new\0",
        "OLD_PATH": _components("/d"), "OLD_NAME": b"old\0",
    }  # fmt: skip
    item = dec(
        _file(layout, areas, op=c("Q_FILE_MOVE"), flags=c("Q_FF_PENDING"))
    )
    assert isinstance(item, Pending)
    assert isinstance(item.raw.payload, quark.File)
    assert (item.raw.payload.path, item.raw.payload.old_path) == (
        "/d/new", "/d/old",
    )  # fmt: skip
    cut = c("Q_FF_PENDING") | c("Q_FF_OLD_TRUNC")
    item = dec(_file(layout, areas, op=c("Q_FILE_MOVE"), flags=cut))
    assert isinstance(item, Pending)
    assert isinstance(item.raw.payload, quark.File)
    assert item.raw.payload.path == "/d/new"
    assert item.raw.payload.old_path is None  # never a fragment


def test_a_symlink_has_its_target(layout: Layout) -> None:
    c = layout.const
    item = Decoder(layout).decode(
        _file(
            layout,
            {"PATH": _components("/d"), "NAME": b"l\0", "SYM": b"../t\0"},
            op=c("Q_FILE_CREATE"), flags=c("Q_FF_PENDING"),
        )
    )  # fmt: skip
    assert isinstance(item, Pending)
    assert isinstance(item.raw.payload, quark.File)
    assert item.raw.payload.sym_target == "../t"


def test_dev_shm_opens_are_shm_never_file(layout: Layout) -> None:
    c = layout.const
    shm_open = _file(
        layout, {"PATH": _components("/dev/shm/seg")},
        op=c("Q_FILE_CREATE"),
        flags=c("Q_FF_TMPFS_ROOT") | c("Q_FF_CREATED") | c("Q_FF_STAT"),
        open_flags=os.O_RDWR,
    )  # fmt: skip
    raw = Decoder(layout, QQ.FILE | QQ.SHM).decode(shm_open)
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.SHM
    assert isinstance(raw.payload, quark.Shm)
    assert raw.payload.kind is ShmKind.SHM_OPEN
    assert raw.payload.path == "/dev/shm/seg"
    assert raw.payload.flags == os.O_RDWR | os.O_CREAT
    # without QQ.SHM it is nothing: never a FILE event
    assert Decoder(layout, QQ.FILE).decode(shm_open) is None
    # a file created in the root of another tmpfs is a file
    other = _file(
        layout, {"PATH": _components("/run/x")}, op=c("Q_FILE_CREATE"),
        flags=c("Q_FF_TMPFS_ROOT") | c("Q_FF_CREATED"),
    )  # fmt: skip
    raw = Decoder(layout, QQ.FILE).decode(other)
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.FILE
    # and one only opened there is not an event
    opened = _file(
        layout, {"PATH": _components("/run/x")}, op=c("Q_FILE_CREATE"),
        flags=c("Q_FF_TMPFS_ROOT"),
    )  # fmt: skip
    assert Decoder(layout, QQ.FILE).decode(opened) is None


def test_shm_records(layout: Layout) -> None:
    c = layout.const
    dec = Decoder(layout).decode
    get = dec(_shm(layout, shm_kind=c("Q_SHM_SHMGET"), key=-1,
                   shm_size=8192, shm_flags=0o1600))  # fmt: skip
    assert isinstance(get, Pending) and isinstance(get.raw.payload, quark.Shm)
    assert (get.raw.payload.key, get.raw.payload.size) == (-1, 8192)
    assert get.ok(3) and not get.ok(-22)
    memfd = dec(_shm(layout, shm_kind=c("Q_SHM_MEMFD_CREATE"),
                     name=b"buf\0", shm_flags=1))  # fmt: skip
    assert isinstance(memfd, Pending)
    assert isinstance(memfd.raw.payload, quark.Shm)
    assert memfd.raw.payload.path == "memfd:buf"


def test_bad_file_records_are_decode_errors(layout: Layout) -> None:
    c = layout.const
    dec = Decoder(layout).decode
    good = _file(layout, {"PATH": _components("/a/b")},
                 op=c("Q_FILE_CREATE"))  # fmt: skip
    dec(good)
    # a path area that overflows the record
    with pytest.raises(quark.DecodeError, match="arrived"):
        dec(good[:-1])
    over = bytearray(good)
    rec = layout.record("q_file_event")
    lens = rec.offsets["len"]
    over[lens : lens + 2] = (500).to_bytes(2, "little")
    with pytest.raises(quark.DecodeError, match="fields"):
        dec(bytes(over))
    with pytest.raises(quark.DecodeError, match="shorter"):
        dec(good[:20])
    with pytest.raises(quark.DecodeError, match="op"):
        dec(_file(layout, op=3))
    with pytest.raises(quark.DecodeError, match="shm record"):
        dec(_shm(layout, shm_kind=9))


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["Q_FILE", "Q_SHM", "Q_RESULT"]),
    tail=st.binary(max_size=200),
)
def test_file_garbage_is_only_ever_a_decode_error(
    kind: str, tail: bytes
) -> None:
    lay = object_layout(object_path())
    try:
        Decoder(lay).decode(lay.const(kind).to_bytes(4, "little") + tail)
    except quark.DecodeError:
        pass


class _Ring:
    def __init__(self, records: list[bytes]) -> None:
        self.records = records

    def read(self, limit: int) -> list[bytes]:
        out, self.records = self.records[:limit], self.records[limit:]
        return out


def _backend(layout: Layout, records: list[bytes]) -> EbpfBackend:
    b = EbpfBackend.__new__(EbpfBackend)
    b._ring = _Ring(records)  # type: ignore[assignment]
    b._decode = Decoder(layout).decode
    b._decode_errors = 0
    b._pending = {}
    b._unresolved = 0
    b._counters_fd = -1
    b._fds = []
    b._misses = b._misses_due = 0
    b._wake = b._timer = None  # no kernel ring to wake on
    b._fold = b._fold_batch = None  # nor forks kept back
    b._sweep_at = None
    return b


def test_an_operation_by_path_is_told_only_when_it_succeeded(
    layout: Layout,
) -> None:
    c = layout.const

    def unlink(tid: int, name: bytes) -> bytes:
        return _file(
            layout, {"PATH": _components("/d"), "NAME": name},
            op=c("Q_FILE_REMOVE"), flags=c("Q_FF_PENDING"), tid=tid,
            pid=tid,
        )  # fmt: skip

    b = _backend(
        layout,
        [
            unlink(1, b"ok\0"),
            unlink(2, b"failed\0"),
            _result(layout, 2, -2),  # ENOENT: not an event
            _result(layout, 1, 0),
            unlink(3, b"later\0"),  # its result in the next read
        ],
    )
    got = b.read(100)
    assert [r.payload.path for r in got] == ["/d/ok"]  # type: ignore[union-attr]
    b._ring = _Ring([_result(layout, 3, 0), _result(layout, 4, 0)])  # type: ignore[assignment]
    got = b.read(100)
    assert [r.payload.path for r in got] == ["/d/later"]  # type: ignore[union-attr]
    assert b._pending == {} and b.lost() == 0
