"""TTY, PTRACE and MODULE_LOAD raw events through the recorded stream
(quark.raw.record): they round-trip exactly, and bad values name their
line and the problem."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quark.errors import DecodeError
from quark.events import ModuleLoad, Ptrace, Tty
from quark.raw.record import StreamReader, StreamWriter, decode_raw
from quark.raw.types import RawEvent, RawKind

TTY = Tty(
    major=136, minor=3, cols=80, rows=24, iflag=0x500, oflag=5, cflag=0xBF,
    lflag=0x8A3B, data=b"hi\r\n\x1b[0m\xff", truncated=9,
)  # fmt: skip
PTRACE = Ptrace(child_pid=500, request=0x4206, addr=0x7FFD5C2F1000, data=1)
MODULE = ModuleLoad("dummy", "1.0", "6A1F0C2B0D5E", 0x3000)


def ev(kind: RawKind, payload: object, **kw: int) -> RawEvent:
    return RawEvent(
        kind,
        kw.get("time", 100),
        kw.get("pid", 42),
        kw.get("tid"),
        payload=payload,  # type: ignore[arg-type]
    )


def round_trip(tmp_path: pathlib.Path, events: list[RawEvent]) -> list[object]:
    path = tmp_path / "kinds.jsonl"
    w = StreamWriter(path)
    for e in events:
        w.raw(e)
    w.close()
    r = StreamReader(path)
    try:
        return list(r)
    finally:
        r.close()


def same(a: RawEvent, b: object) -> bool:
    return (
        isinstance(b, RawEvent)
        and a.to_dict() == b.to_dict()
        and a.payload == b.payload
        and type(a.payload) is type(b.payload)
        and (a.kind, a.time, a.pid, a.tid) == (b.kind, b.time, b.pid, b.tid)
    )


# -- the documented shape -----------------------------------------------------


def test_to_dict_shapes() -> None:
    assert ev(RawKind.TTY, TTY).to_dict()["tty"] == {
        "major": 136, "minor": 3, "cols": 80, "rows": 24, "iflag": 0x500,
        "oflag": 5, "cflag": 0xBF, "lflag": 0x8A3B, "truncated": 9,
        "data": "68690d0a1b5b306dff",
    }  # fmt: skip
    assert ev(RawKind.PTRACE, PTRACE).to_dict()["ptrace"] == {
        "child_pid": 500, "request": 0x4206, "addr": 0x7FFD5C2F1000,
        "data": 1,
    }  # fmt: skip
    assert ev(RawKind.MODULE_LOAD, MODULE).to_dict()["module_load"] == {
        "name": "dummy", "version": "1.0", "src_version": "6A1F0C2B0D5E",
        "taints": 0x3000,
    }  # fmt: skip
    # members that are None are left out
    bare = ev(RawKind.MODULE_LOAD, ModuleLoad("m", None, None, 0))
    assert bare.to_dict()["module_load"] == {"name": "m", "taints": 0}
    # one payload member each, never another kind's
    d = ev(RawKind.TTY, TTY).to_dict()
    assert not {"ptrace", "module_load", "file", "shm", "sock"} & set(d)


# -- round trips --------------------------------------------------------------


ALL_BYTES = Tty(136, 0, 1, 1, 0, 0, 0, 0, bytes(range(256)), 2**32 - 1)
NOT_UTF8 = ModuleLoad("bad\udcff", "", None, 2**64 - 1)


def test_round_trip_of_the_kinds(tmp_path: pathlib.Path) -> None:
    events = [
        ev(RawKind.TTY, TTY, tid=43),
        ev(RawKind.TTY, Tty(4, 1, 0, 0, 0, 0, 0, 0, b""), time=101),
        ev(RawKind.TTY, ALL_BYTES, time=102),
        ev(RawKind.PTRACE, PTRACE, time=103, pid=9),
        ev(RawKind.PTRACE, Ptrace(1, -1, 2**64 - 1, 2**64 - 1), time=104),
        ev(RawKind.MODULE_LOAD, MODULE, time=105, pid=300),
        ev(RawKind.MODULE_LOAD, ModuleLoad("m", None, None, 0), time=106),
        ev(RawKind.MODULE_LOAD, NOT_UTF8, time=107),
    ]
    got = round_trip(tmp_path, events)
    assert len(got) == len(events)
    for a, b in zip(events, got, strict=True):
        assert same(a, b), (a, b)


U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
TTYS = st.builds(
    Tty, major=U32, minor=U32, cols=st.integers(0, 0xFFFF),
    rows=st.integers(0, 0xFFFF), iflag=U32, oflag=U32, cflag=U32,
    lflag=U32, data=st.binary(max_size=300), truncated=U32,
)  # fmt: skip
PTRACES = st.builds(
    Ptrace, child_pid=U32, request=st.integers(-(2**63), 2**63 - 1),
    addr=U64, data=U64,
)  # fmt: skip
TEXT = st.text(max_size=64)  # surrogates included: bytes not UTF-8
MODULES = st.builds(
    ModuleLoad, name=TEXT, version=st.none() | TEXT,
    src_version=st.none() | TEXT, taints=U64,
)  # fmt: skip
PAYLOADS = st.one_of(TTYS, PTRACES, MODULES)
KIND_OF = {Tty: RawKind.TTY, Ptrace: RawKind.PTRACE,
           ModuleLoad: RawKind.MODULE_LOAD}  # fmt: skip


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payloads=st.lists(PAYLOADS, min_size=1, max_size=5),
    time=st.integers(0, 2**63),
    tid=st.none() | U32,
)
def test_payloads_round_trip(
    tmp_path: pathlib.Path,
    payloads: list[Tty | Ptrace | ModuleLoad],
    time: int,
    tid: int | None,
) -> None:
    events = [
        RawEvent(KIND_OF[type(p)], time + i, 1000 + i, tid, payload=p)
        for i, p in enumerate(payloads)
    ]
    got = round_trip(tmp_path, events)
    assert len(got) == len(events)
    for a, b in zip(events, got, strict=True):
        assert same(a, b), (a, b)


# -- bad records --------------------------------------------------------------

GOOD_TTY = ev(RawKind.TTY, TTY).to_dict()["tty"]
GOOD_PTRACE = ev(RawKind.PTRACE, PTRACE).to_dict()["ptrace"]
GOOD_MODULE = ev(RawKind.MODULE_LOAD, MODULE).to_dict()["module_load"]


def raw(kind: str, **more: object) -> dict[str, object]:
    return {"kind": kind, "time": 1, "pid": 2, **more}


def without(d: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (raw("TTY"), "a TTY record needs 'tty'"),
        (raw("PTRACE"), "a PTRACE record needs 'ptrace'"),
        (raw("MODULE_LOAD"), "a MODULE_LOAD record needs 'module_load'"),
        (raw("EXEC", tty=GOOD_TTY), "EXEC record has no 'tty'"),
        (raw("TTY", tty=GOOD_TTY, ptrace=GOOD_PTRACE), "has no 'ptrace'"),
        (raw("PTRACE", ptrace=GOOD_PTRACE, tty=GOOD_TTY), "has no 'tty'"),
        (
            raw("FILE", file={"op": ["CREATE"]}, module_load=GOOD_MODULE),
            "FILE record has no 'module_load'",
        ),
        (raw("TTY", tty=[1]), "'tty' must be an object"),
        (raw("TTY", tty=without(GOOD_TTY, "major")), "tty: missing 'major'"),
        (
            raw("TTY", tty=without(GOOD_TTY, "truncated")),
            "tty: missing 'truncated'",
        ),
        (
            raw("TTY", tty={**GOOD_TTY, "cols": "80"}),
            "tty: 'cols' must be an integer",
        ),
        (
            raw("TTY", tty={**GOOD_TTY, "lflag": True}),
            "tty: 'lflag' must be an integer",
        ),
        (raw("TTY", tty={**GOOD_TTY, "data": "zz"}), "tty.data must be hex"),
        (raw("TTY", tty={**GOOD_TTY, "data": "686"}), "tty.data must be hex"),
        (raw("TTY", tty={**GOOD_TTY, "data": None}), "tty.data must be hex"),
        (raw("TTY", tty={**GOOD_TTY, "data": [1]}), "tty.data must be hex"),
        (raw("PTRACE", ptrace="attach"), "'ptrace' must be an object"),
        (
            raw("PTRACE", ptrace=without(GOOD_PTRACE, "request")),
            "ptrace: missing 'request'",
        ),
        (
            raw("PTRACE", ptrace={**GOOD_PTRACE, "child_pid": 1.5}),
            "ptrace: 'child_pid' must be an integer",
        ),
        (raw("MODULE_LOAD", module_load=[]), "'module_load' must be an obj"),
        (
            raw("MODULE_LOAD", module_load=without(GOOD_MODULE, "name")),
            "module_load.name is missing",
        ),
        (
            raw("MODULE_LOAD", module_load={**GOOD_MODULE, "name": 1}),
            "'module_load.name' must be a string",
        ),
        (
            raw("MODULE_LOAD", module_load={**GOOD_MODULE, "version": 1}),
            "'module_load.version' must be a string",
        ),
        (
            raw("MODULE_LOAD", module_load={**GOOD_MODULE, "taints": "0"}),
            "module_load: 'taints' must be an integer",
        ),
    ],
)
def test_bad_records_name_the_problem(
    record: dict[str, object], message: str
) -> None:
    with pytest.raises(DecodeError, match=r"^line 7: ") as err:
        decode_raw(record, "line 7")
    assert message in str(err.value)


# A member the kinds always have, given as null, is as malformed as one
# left out: it must not become a None where the record holds an int. A
# null truncated, for one, makes the engine's join of two writes raise
# TypeError (join_tty adds it) instead of the stream naming its line.
@pytest.mark.parametrize(
    ("record", "message"),
    [
        (raw("TTY", tty={**GOOD_TTY, "truncated": None}), "'truncated'"),
        (
            raw("PTRACE", ptrace={**GOOD_PTRACE, "child_pid": None}),
            "'child_pid'",
        ),
        (
            raw("MODULE_LOAD", module_load={**GOOD_MODULE, "taints": None}),
            "'taints'",
        ),
    ],
)
def test_null_members_are_decode_errors(
    record: dict[str, object], message: str
) -> None:
    with pytest.raises(DecodeError, match=r"^line 7: ") as err:
        decode_raw(record, "line 7")
    assert message in str(err.value)


def test_a_bad_line_is_named_and_reading_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "bad.jsonl"
    w = StreamWriter(path)
    w.raw(ev(RawKind.TTY, TTY))
    w.close()
    good = ev(RawKind.PTRACE, PTRACE).to_dict()
    bad = raw("TTY", tty={**GOOD_TTY, "data": "xyz"})
    with path.open("a") as f:
        f.write(json.dumps({"raw": bad}) + "\n")
        f.write(json.dumps({"raw": good}) + "\n")
    r = StreamReader(path)
    try:
        first = r.next_item()
        assert isinstance(first, RawEvent) and first.payload == TTY
        with pytest.raises(DecodeError, match=f"^{path}:3: tty.data"):
            r.next_item()
        last = r.next_item()
        assert isinstance(last, RawEvent) and last.payload == PTRACE
        assert r.next_item() is None
    finally:
        r.close()
