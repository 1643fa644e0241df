"""The TTY, PTRACE and MODULE records of the EBPF wire (bpf/proto.h's
q_tty_event, q_ptrace_event, q_module_event): decoding, bad input, a
ptrace child resolved through ``owner_of``, and the backend's read path.

Records are packed from the layout the shipped object's BTF declares, as
the kernel writes them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quark
from quark import QueueAttr
from quark.backends.ebpf import EbpfBackend, object_path
from quark.backends.ebpf_layout import Layout, object_layout
from quark.backends.ebpf_proto import Decoder, Pending, Result
from quark.raw.types import RawEvent, RawKind

PTRACE_ATTACH, PTRACE_PEEKDATA, PTRACE_SEIZE = 16, 2, 0x4206


@pytest.fixture(scope="module")
def layout() -> Layout:
    return object_layout(object_path())


def _pack(layout: Layout, record: str, kind: str, **v: Any) -> bytes:
    rec = layout.record(record)
    values: dict[str, Any] = dict.fromkeys(rec.names, 0)
    values.update(kind=layout.const(kind), size=rec.size)
    values.update(v)
    return rec.fmt.pack(*(values[n] for n in rec.names))


def _tty(layout: Layout, data: bytes = b"hi\r\n", **v: Any) -> bytes:
    size = layout.record("q_tty_event").size
    v.setdefault("data_len", len(data))
    v.setdefault("size", size + v["data_len"])
    return _pack(layout, "q_tty_event", "Q_TTY", **v) + data


def _ptrace(layout: Layout, **v: Any) -> bytes:
    return _pack(layout, "q_ptrace_event", "Q_PTRACE", **v)


def _module(layout: Layout, **v: Any) -> bytes:
    v = {"name": b"", "version": b"", "srcversion": b"", **v}
    return _pack(layout, "q_module_event", "Q_MODULE", **v)


def _result(layout: Layout, tid: int, ret: int) -> bytes:
    return _pack(
        layout, "q_result_event", "Q_RESULT", tid=tid, pid=tid, ret=ret
    )


class Owners:
    """A fake ``owner_of``: (tgid, ppid) by tid, and the tids asked."""

    def __init__(self, known: dict[int, tuple[int, int]]) -> None:
        self.known = known
        self.asked: list[int] = []

    def __call__(self, tid: int) -> tuple[int, int] | None:
        self.asked.append(tid)
        return self.known.get(tid)


# -- TTY ----------------------------------------------------------------------


def test_a_tty_record(layout: Layout) -> None:
    raw = Decoder(layout).decode(
        _tty(
            layout, b"hello\r\n", major=136, minor=3, cols=80, rows=24,
            iflag=0x500, oflag=5, cflag=0xBF, lflag=0x8A3B, truncated=9,
            pid=42, tid=43, time=1234,
        )
    )  # fmt: skip
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.TTY
    assert (raw.pid, raw.tid, raw.time) == (42, 43, 1234)
    assert raw.task is None
    assert raw.payload == quark.Tty(
        major=136, minor=3, cols=80, rows=24, iflag=0x500, oflag=5,
        cflag=0xBF, lflag=0x8A3B, data=b"hello\r\n", truncated=9,
    )  # fmt: skip


def test_tty_data_limits(layout: Layout) -> None:
    dec = Decoder(layout).decode
    tty_max = layout.const("Q_TTY_MAX")
    empty = dec(_tty(layout, b""))
    assert isinstance(empty, RawEvent)
    assert isinstance(empty.payload, quark.Tty)
    assert empty.payload.data == b""
    full = dec(_tty(layout, bytes(range(256)) * (tty_max // 256)))
    assert isinstance(full, RawEvent)
    assert isinstance(full.payload, quark.Tty)
    assert len(full.payload.data) == tty_max
    # what follows the record's size (ring padding) is not its data
    rec = dec(_tty(layout, b"abc") + b"\0" * 5)
    assert isinstance(rec, RawEvent) and isinstance(rec.payload, quark.Tty)
    assert rec.payload.data == b"abc"


def test_bad_tty_records_are_decode_errors(layout: Layout) -> None:
    dec = Decoder(layout).decode
    header = layout.record("q_tty_event").size
    tty_max = layout.const("Q_TTY_MAX")
    # more data than the kernel ever sends, though the record holds it
    with pytest.raises(quark.DecodeError, match=f"{tty_max + 1} bytes"):
        dec(_tty(layout, b"x" * (tty_max + 1)))
    # data_len beyond the record's end
    with pytest.raises(quark.DecodeError, match="arrived"):
        dec(_tty(layout, b"abc")[:-1])
    with pytest.raises(quark.DecodeError, match="arrived"):
        dec(_tty(layout, b"abc", data_len=100))
    # a size that disagrees with data_len
    with pytest.raises(quark.DecodeError, match="record of"):
        dec(_tty(layout, b"abc", size=header + 2))
    with pytest.raises(quark.DecodeError, match="record of"):
        dec(_tty(layout, b"abc", size=0))
    # the header itself cut short
    with pytest.raises(quark.DecodeError, match="shorter"):
        dec(_tty(layout)[: header - 1])


# -- PTRACE -------------------------------------------------------------------


def test_ptrace_child_is_the_tracees_tgid(layout: Layout) -> None:
    owners = Owners({501: (500, 77)})
    raw = Decoder(layout, owner_of=owners).decode(
        _ptrace(
            layout, pid=9, tid=10, time=55, child=501,
            request=PTRACE_ATTACH, addr=0, data=0,
        )
    )  # fmt: skip
    assert owners.asked == [501]
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.PTRACE
    assert (raw.pid, raw.tid, raw.time) == (9, 10, 55)
    assert raw.payload == quark.Ptrace(500, PTRACE_ATTACH, 0, 0)


def test_ptrace_of_the_tracers_own_child_is_dropped(layout: Layout) -> None:
    owners = Owners({501: (500, 9), 600: (600, 9)})
    dec = Decoder(layout, owner_of=owners).decode
    for child in (501, 600):  # a thread of the child, or its leader
        for request, flags in ((PTRACE_ATTACH, 0), (PTRACE_SEIZE, 0),
                               (PTRACE_PEEKDATA,
                                layout.const("Q_FF_PENDING"))):  # fmt: skip
            rec = _ptrace(layout, pid=9, tid=12, child=child,
                          request=request, flags=flags)  # fmt: skip
            assert dec(rec) is None
    # another process's child is told
    rec = _ptrace(layout, pid=8, tid=8, child=600, request=PTRACE_ATTACH)
    raw = dec(rec)
    assert isinstance(raw, RawEvent)
    assert raw.payload == quark.Ptrace(600, PTRACE_ATTACH, 0, 0)


def test_ptrace_child_gone_keeps_its_tid(layout: Layout) -> None:
    owners = Owners({})  # /proc/501 is gone: None
    raw = Decoder(layout, owner_of=owners).decode(
        _ptrace(layout, pid=9, child=501, request=PTRACE_SEIZE)
    )
    assert owners.asked == [501]
    assert isinstance(raw, RawEvent)
    assert raw.payload == quark.Ptrace(501, PTRACE_SEIZE, 0, 0)


def test_a_pending_ptrace_waits_for_its_result(layout: Layout) -> None:
    owners = Owners({501: (500, 77)})
    item = Decoder(layout, owner_of=owners).decode(
        _ptrace(
            layout, pid=9, tid=10, child=501, request=PTRACE_PEEKDATA,
            addr=0x7FFD5C2F1000, data=2**64 - 1,
            flags=layout.const("Q_FF_PENDING"),
        )
    )  # fmt: skip
    assert isinstance(item, Pending)
    assert item.raw.kind is RawKind.PTRACE and item.raw.tid == 10
    assert item.raw.payload == quark.Ptrace(
        500, PTRACE_PEEKDATA, 0x7FFD5C2F1000, 2**64 - 1
    )
    # PEEKDATA returns the word read: any ret >= 0 is a success
    assert item.ok(0) and item.ok(1) and item.ok(2**62)
    assert not item.ok(-1) and not item.ok(-3)


def test_ptrace_request_is_signed(layout: Layout) -> None:
    raw = Decoder(layout, owner_of=Owners({})).decode(
        _ptrace(layout, pid=9, child=1, request=-1)
    )
    assert isinstance(raw, RawEvent) and isinstance(raw.payload, quark.Ptrace)
    assert raw.payload.request == -1


def test_short_ptrace_records_are_decode_errors(layout: Layout) -> None:
    owners = Owners({})
    dec = Decoder(layout, owner_of=owners).decode
    good = _ptrace(layout, pid=9, child=1, request=PTRACE_ATTACH)
    for n in (len(good) - 1, 24, 4):
        with pytest.raises(quark.DecodeError, match="ptrace record"):
            dec(good[:n])
    assert owners.asked == []  # nothing asked of /proc for garbage


# -- MODULE -------------------------------------------------------------------


def test_a_module_record(layout: Layout) -> None:
    raw = Decoder(layout).decode(
        _module(
            layout, name=b"dummy", version=b"1.0",
            srcversion=b"6A1F0C2B0D5E", taints=0x3000, pid=300, tid=300,
            time=77,
        )
    )  # fmt: skip
    assert isinstance(raw, RawEvent) and raw.kind is RawKind.MODULE_LOAD
    assert (raw.pid, raw.time) == (300, 77)
    assert raw.payload == quark.ModuleLoad(
        "dummy", "1.0", "6A1F0C2B0D5E", 0x3000
    )


def test_module_strings(layout: Layout) -> None:
    dec = Decoder(layout).decode
    name_len = layout.const("Q_MODULE_NAME")
    # no version or srcversion: None, not ""
    raw = dec(_module(layout, name=b"dummy"))
    assert isinstance(raw, RawEvent)
    assert raw.payload == quark.ModuleLoad("dummy", None, None, 0)
    # a name filling its array (no NUL), and bytes after a NUL ignored
    raw = dec(_module(layout, name=b"m" * name_len, version=b"2\0junk"))
    assert isinstance(raw, RawEvent)
    assert isinstance(raw.payload, quark.ModuleLoad)
    assert raw.payload.name == "m" * name_len
    assert raw.payload.version == "2"
    # bytes that are not UTF-8 are kept as surrogate escapes
    raw = dec(_module(layout, name=b"bad\xff"))
    assert isinstance(raw, RawEvent)
    assert isinstance(raw.payload, quark.ModuleLoad)
    assert raw.payload.name == "bad\udcff"


def test_short_module_records_are_decode_errors(layout: Layout) -> None:
    dec = Decoder(layout).decode
    good = _module(layout, name=b"dummy")
    for n in (len(good) - 1, 100, 8):
        with pytest.raises(quark.DecodeError, match="module record"):
            dec(good[:n])


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["Q_TTY", "Q_PTRACE", "Q_MODULE"]),
    tail=st.binary(max_size=300),
)
def test_garbage_is_only_ever_a_decode_error(kind: str, tail: bytes) -> None:
    lay = object_layout(object_path())
    dec = Decoder(lay, owner_of=Owners({})).decode
    try:
        item = dec(lay.const(kind).to_bytes(4, "little") + tail)
    except quark.DecodeError:
        return
    assert isinstance(item, (RawEvent, Pending))


# -- through the backend's read path ------------------------------------------


class _Ring:
    def __init__(self, records: list[bytes]) -> None:
        self.records = records

    def read(self, limit: int) -> list[bytes]:
        out, self.records = self.records[:limit], self.records[limit:]
        return out


def _backend(
    layout: Layout, records: list[bytes], owners: Owners
) -> EbpfBackend:
    b = EbpfBackend.__new__(EbpfBackend)
    b._reset(QueueAttr(), probe=False)
    b._ring = _Ring(records)  # type: ignore[assignment]
    b._decode = Decoder(layout, owner_of=owners).decode
    return b


def test_the_backend_counts_bad_records_and_goes_on(layout: Layout) -> None:
    tty_max = layout.const("Q_TTY_MAX")
    b = _backend(
        layout,
        [
            _tty(layout, b"one", pid=1, tid=1),
            _tty(layout, b"x" * (tty_max + 1), pid=1, tid=1),  # too long
            _ptrace(layout, pid=2, child=5)[:-8],  # short
            _module(layout, name=b"dummy")[:50],  # short
            _tty(layout, b"abc", pid=1, tid=1)[:-1],  # data cut short
            _module(layout, name=b"dummy", pid=3, tid=3),
        ],
        Owners({}),
    )
    got = b.read(100)
    assert [r.kind for r in got] == [RawKind.TTY, RawKind.MODULE_LOAD]
    assert b.decode_errors() == 4
    assert b.lost() == 4


def test_the_backend_tells_a_pending_ptrace_only_when_it_succeeded(
    layout: Layout,
) -> None:
    pending = layout.const("Q_FF_PENDING")

    def peek(tid: int) -> bytes:
        return _ptrace(layout, pid=tid, tid=tid, child=501,
                       request=PTRACE_PEEKDATA, flags=pending)  # fmt: skip

    b = _backend(
        layout,
        [
            peek(10),
            peek(11),
            _ptrace(layout, pid=12, tid=12, child=501, request=PTRACE_ATTACH),
            _result(layout, 11, -3),  # ESRCH: not an event
            _result(layout, 10, 0x41),  # the word read
        ],
        Owners({501: (500, 77)}),
    )
    got = b.read(100)
    assert [(r.pid, r.payload) for r in got] == [
        (12, quark.Ptrace(500, PTRACE_ATTACH, 0, 0)),
        (10, quark.Ptrace(500, PTRACE_PEEKDATA, 0, 0)),
    ]
    assert b._pending == {} and b.decode_errors() == 0


def test_a_result_alone_is_nothing(layout: Layout) -> None:
    item = Decoder(layout).decode(_result(layout, 10, 0))
    assert isinstance(item, Result) and (item.tid, item.ret) == (10, 0)
