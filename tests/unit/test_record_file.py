"""FILE and SHM raw events through the recorded stream
(quark.raw.record): they round-trip, and bad values name their line."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quark.errors import DecodeError
from quark.events import File, FileChange, FileOp, Shm, ShmKind
from quark.raw.record import VERSION, StreamReader, StreamWriter, decode_raw
from quark.raw.types import RawEvent, RawKind

C, M, R, MV = FileOp.CREATE, FileOp.MODIFY, FileOp.REMOVE, FileOp.MOVE


def file_event(payload: File, time: int = 100, pid: int = 42) -> RawEvent:
    return RawEvent(RawKind.FILE, time, pid, payload=payload)


def shm_event(payload: Shm, time: int = 100, pid: int = 42) -> RawEvent:
    return RawEvent(RawKind.SHM, time, pid, payload=payload)


def round_trip(tmp_path: pathlib.Path, events: list[RawEvent]) -> list[object]:
    path = tmp_path / "file.jsonl"
    w = StreamWriter(path)
    for ev in events:
        w.raw(ev)
    w.close()
    r = StreamReader(path)
    try:
        assert r.header["version"] == VERSION == 1
        return list(r)
    finally:
        r.close()


def same(a: RawEvent, b: object) -> bool:
    return isinstance(b, RawEvent) and (
        a.to_dict() == b.to_dict() and a.payload == b.payload
    )


def test_file_to_dict_is_the_documented_shape() -> None:
    ev = file_event(
        File(
            M, "/tmp/x", old_path="/tmp/w", sym_target="t", inode=9,
            mode=0o100644, size=0, uid=0, gid=0, atime=1, mtime=2, ctime=3,
            change=FileChange.CONTENT | FileChange.TRUNCATE,
        )
    )  # fmt: skip
    assert ev.to_dict()["file"] == {
        "op": ["MODIFY"],
        "path": "/tmp/x",
        "old_path": "/tmp/w",
        "sym_target": "t",
        "inode": 9,
        "mode": 0o100644,
        "size": 0,
        "uid": 0,
        "gid": 0,
        "atime": 1,
        "mtime": 2,
        "ctime": 3,
        "change": ["CONTENT", "TRUNCATE"],
    }
    # None and an empty change are left out; several ops in bit order
    bare = file_event(File(R | C, None))
    assert bare.to_dict()["file"] == {"op": ["CREATE", "REMOVE"]}
    assert not {"sock", "packet", "shm"} & set(bare.to_dict())


def test_shm_to_dict_is_the_documented_shape() -> None:
    ev = shm_event(Shm(ShmKind.SHMGET, key=1234, size=4096, flags=0o1666))
    assert ev.to_dict()["shm"] == {
        "kind": "SHMGET",
        "key": 1234,
        "size": 4096,
        "flags": 0o1666,
    }
    memfd = shm_event(Shm(ShmKind.MEMFD_CREATE, flags=1, path="memfd:x"))
    assert memfd.to_dict()["shm"] == {
        "kind": "MEMFD_CREATE",
        "flags": 1,
        "path": "memfd:x",
    }
    assert "file" not in memfd.to_dict()


def test_round_trip_of_files_and_shm(tmp_path: pathlib.Path) -> None:
    events = [
        file_event(File(C, "/tmp/tmpab12", inode=9, mode=0o100600, size=0)),
        file_event(
            File(M, "/tmp/tmpab12", inode=9, change=FileChange.PERMISSIONS),
            time=101,
        ),
        file_event(File(MV, "/tmp/b", old_path="/tmp/a", atime=-1), time=102),
        file_event(File(C, "/tmp/l", sym_target="../t"), time=103, pid=43),
        file_event(File(R, "/tmp/\udcff-not-utf8"), time=104),
        file_event(File(C | M | R, None, change=FileChange(31)), time=105),
        shm_event(Shm(ShmKind.SHMGET, key=-1, size=1 << 40, flags=0)),
        shm_event(Shm(ShmKind.SHM_OPEN, flags=0o102, path="/dev/shm/q")),
        shm_event(Shm(ShmKind.MEMFD_CREATE, path="memfd:")),
    ]
    got = round_trip(tmp_path, events)
    assert len(got) == len(events)
    for a, b in zip(events, got, strict=True):
        assert same(a, b), (a, b)
    first = got[0]
    assert isinstance(first, RawEvent) and isinstance(first.payload, File)
    assert type(first.payload.op) is FileOp
    assert type(first.payload.change) is FileChange


def test_old_kinds_carry_no_payload(tmp_path: pathlib.Path) -> None:
    (ev,) = round_trip(tmp_path, [RawEvent(RawKind.EXEC, 1, 2, exe="/x")])
    assert isinstance(ev, RawEvent) and ev.payload is None


OPTIONAL_COUNT = st.none() | st.integers(0, 2**64 - 1)
OPTIONAL_TIME = st.none() | st.integers(-(2**63), 2**63 - 1)
OPTIONAL_TEXT = st.none() | st.text(max_size=12)

FILES = st.builds(
    File,
    st.sets(st.sampled_from(list(FileOp)), min_size=1).map(
        lambda s: FileOp(sum(s))
    ),
    OPTIONAL_TEXT,
    old_path=OPTIONAL_TEXT,
    sym_target=OPTIONAL_TEXT,
    inode=OPTIONAL_COUNT,
    mode=OPTIONAL_COUNT,
    size=OPTIONAL_COUNT,
    uid=OPTIONAL_COUNT,
    gid=OPTIONAL_COUNT,
    atime=OPTIONAL_TIME,
    mtime=OPTIONAL_TIME,
    ctime=OPTIONAL_TIME,
    change=st.sets(st.sampled_from(list(FileChange))).map(
        lambda s: FileChange(sum(s))
    ),
)
SHMS = st.builds(
    Shm,
    st.sampled_from(list(ShmKind)),
    key=st.none() | st.integers(-(2**31), 2**31 - 1),
    size=OPTIONAL_COUNT,
    flags=OPTIONAL_COUNT,
    path=OPTIONAL_TEXT,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payloads=st.lists(st.one_of(FILES, SHMS), min_size=1, max_size=5),
    time=st.integers(0, 2**63),
)
def test_payloads_round_trip(
    tmp_path: pathlib.Path, payloads: list[File | Shm], time: int
) -> None:
    events = [
        RawEvent(
            RawKind.FILE if isinstance(p, File) else RawKind.SHM,
            time + i,
            1000 + i,
            payload=p,
        )
        for i, p in enumerate(payloads)
    ]
    got = round_trip(tmp_path, events)
    assert [g.payload for g in got] == payloads  # type: ignore[attr-defined]


GOOD_FILE = {"op": ["CREATE"], "path": "/tmp/x"}
GOOD_SHM = {"kind": "SHM_OPEN", "path": "/dev/shm/x"}


def raw(kind: str, **more: object) -> dict[str, object]:
    return {"kind": kind, "time": 1, "pid": 2, **more}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (raw("FILE"), "a FILE record needs 'file'"),
        (raw("SHM"), "a SHM record needs 'shm'"),
        (raw("EXEC", file=GOOD_FILE), "EXEC record has no 'file'"),
        (raw("FILE", shm=GOOD_SHM, file=GOOD_FILE), "FILE record has no"),
        (raw("SHM", file=GOOD_FILE, shm=GOOD_SHM), "SHM record has no"),
        (raw("FILE", file=[]), "'file' must be an object"),
        (raw("FILE", file={**GOOD_FILE, "op": "CREATE"}), "file.op must be"),
        (raw("FILE", file={**GOOD_FILE, "op": ["OPEN"]}), "file.op must be"),
        (raw("FILE", file={**GOOD_FILE, "op": [1]}), "file.op must be"),
        (raw("FILE", file={**GOOD_FILE, "op": []}), "name an operation"),
        (raw("FILE", file={"path": "/x"}), "file.op must be"),
        (raw("FILE", file={**GOOD_FILE, "path": 5}), "'file.path' must be"),
        (
            raw("FILE", file={**GOOD_FILE, "old_path": ["/a"]}),
            "'file.old_path' must be a string",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "inode": "9"}),
            "file: 'inode' must be an integer",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "size": -1}),
            "file: 'size' must be >= 0",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "mtime": 1.5}),
            "file: 'mtime' must be an integer",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "uid": True}),
            "file: 'uid' must be an integer",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "change": ["LOUDER"]}),
            "file.change must be",
        ),
        (
            raw("FILE", file={**GOOD_FILE, "change": "CONTENT"}),
            "file.change must be a list",
        ),
        (raw("SHM", shm="SHMGET"), "'shm' must be an object"),
        (raw("SHM", shm={**GOOD_SHM, "kind": "SHMAT"}), "shm.kind must be"),
        (raw("SHM", shm={"path": "/dev/shm/x"}), "shm.kind must be"),
        (
            raw("SHM", shm={**GOOD_SHM, "key": "k"}),
            "shm: 'key' must be an integer",
        ),
        (
            raw("SHM", shm={**GOOD_SHM, "flags": -2}),
            "shm: 'flags' must be >= 0",
        ),
        (raw("SHM", shm={**GOOD_SHM, "path": 0}), "'shm.path' must be"),
    ],
)
def test_bad_values_name_their_line(
    tmp_path: pathlib.Path, record: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    w = StreamWriter(path)
    w.raw(file_event(File(C, "/tmp/x")))
    w.close()
    with open(path, "a") as f:
        f.write(json.dumps({"raw": record}) + "\n")
        f.write(json.dumps({"raw": raw("SHM", shm=GOOD_SHM)}) + "\n")
    r = StreamReader(path)
    try:
        assert isinstance(r.next_item(), RawEvent)
        with pytest.raises(DecodeError, match=message) as e:
            r.next_item()
        assert f"{path}:3:" in str(e.value)
        # the line is consumed: reading goes on
        assert isinstance(r.next_item(), RawEvent)
    finally:
        r.close()


def test_unknown_file_and_shm_keys_are_ignored() -> None:
    ev = decode_raw(raw("FILE", file={**GOOD_FILE, "future": 1}))
    assert ev.payload == File(C, "/tmp/x")
    ev = decode_raw(raw("SHM", shm={**GOOD_SHM, "future": 1}))
    assert ev.payload == Shm(ShmKind.SHM_OPEN, path="/dev/shm/x")
