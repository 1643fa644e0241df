"""The network records of the EBPF wire, the backend's read path over bad
ones, and what the engine and the queue make of network events.

Records are packed from the layout the shipped object's BTF declares
(``q_sock_event``, ``q_packet_event``), as the kernel writes them.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quark
from quark import EV, QQ, SockAddr, SockOrigin
from quark.backends.ebpf import EbpfBackend, object_path
from quark.backends.ebpf_layout import Layout, object_layout
from quark.backends.ebpf_proto import Decoder
from quark.engine import Engine
from quark.raw.types import (
    RawEvent,
    RawKind,
    RawSock,
    RawTask,
    SockOp,
)


@pytest.fixture(scope="module")
def layout() -> Layout:
    return object_layout(object_path())


def _sock(layout: Layout, **v: Any) -> bytes:
    rec = layout.record("q_sock_event")
    values: dict[str, Any] = dict.fromkeys(rec.names, 0)
    values.update(local_addr=b"", remote_addr=b"")
    values["kind"] = layout.const("Q_SOCK")
    values["size"] = rec.size
    values.update(v)
    return rec.fmt.pack(*(values[n] for n in rec.names))


def _packet(layout: Layout, data: bytes, **v: Any) -> bytes:
    rec = layout.record("q_packet_event")
    values: dict[str, Any] = dict.fromkeys(rec.names, 0)
    values["kind"] = layout.const("Q_PACKET")
    values["size"] = rec.size + len(data)
    values["cap_len"] = len(data)
    values["orig_len"] = len(data)
    values["direction"] = layout.const("Q_PACKET_EGRESS")
    values.update(v)
    return rec.fmt.pack(*(values[n] for n in rec.names)) + data


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- decoding --------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "local", "remote"),
    [
        (socket.AF_INET, "10.0.0.1", "192.0.2.9"),
        (socket.AF_INET6, "2001:db8::1", "2001:db8::2"),
        (socket.AF_INET6, "::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ],
)
def test_socket_records(
    layout: Layout, family: int, local: str, remote: str
) -> None:
    dec = Decoder(layout).decode
    c = layout.const
    common = {
        "family": family, "local_addr": _ip(local),
        "remote_addr": _ip(remote), "local_port": 40000, "remote_port": 443,
        "pid": 7, "tid": 8, "time": 99, "net_inonum": 4026531833,
    }  # fmt: skip
    up = dec(_sock(layout, op=c("Q_SOCK_CONNECT"), bytes_sent=5, **common))
    assert (up.kind, up.pid, up.tid, up.time) == (RawKind.SOCK_CONN, 7, 8, 99)
    s = up.payload
    assert isinstance(s, RawSock)
    assert s.op is SockOp.CONNECT
    assert s.local == SockAddr.of(local, 40000)
    assert s.remote == SockAddr.of(remote, 443)
    assert s.local.family == family
    assert s.bytes_sent is None and s.bytes_received is None  # not at open
    assert s.net_inonum == 4026531833 and not s.at_exit
    down = dec(
        _sock(
            layout, op=c("Q_SOCK_CLOSE"), flags=c("Q_SOCK_AT_EXIT"),
            bytes_sent=3001, bytes_received=517, **common,
        )
    )  # fmt: skip
    s = down.payload
    assert isinstance(s, RawSock)
    assert (s.op, s.bytes_sent, s.bytes_received) == (SockOp.CLOSE, 3001, 517)
    assert s.at_exit


def test_a_mapped_address_is_spelled_one_way(layout: Layout) -> None:
    # the kernel's bytes and /proc's text must make the same cache key
    dec = Decoder(layout).decode
    raw = dec(
        _sock(
            layout, op=layout.const("Q_SOCK_ACCEPT"), family=socket.AF_INET6,
            local_addr=_ip("::ffff:10.1.2.3"), remote_addr=_ip("::1"),
            local_port=1, remote_port=2,
        )
    )  # fmt: skip
    assert isinstance(raw.payload, RawSock)
    assert raw.payload.local.address == "::ffff:10.1.2.3"
    assert raw.payload.local == SockAddr.of("::ffff:a01:203", 1)


def test_packet_records(layout: Layout) -> None:
    dec = Decoder(layout).decode
    data = bytes.fromhex("4500001c") + bytes(24)
    raw = dec(
        _packet(
            layout, data, orig_len=3000, pid=5, tid=5,
            direction=layout.const("Q_PACKET_INGRESS"),
        )
    )  # fmt: skip
    assert raw.kind is RawKind.PACKET and raw.pid == 5
    p = raw.payload
    assert p is not None and not isinstance(p, RawSock)
    assert p.direction is quark.PacketDirection.INGRESS
    assert (p.origin, p.orig_len, p.data) == ("dns", 3000, data)


def test_bad_network_records_are_decode_errors(layout: Layout) -> None:
    dec = Decoder(layout).decode
    c = layout.const
    good = _sock(layout, op=c("Q_SOCK_CONNECT"), family=socket.AF_INET)
    dec(good)
    with pytest.raises(quark.DecodeError, match="socket record"):
        dec(good[:-1])  # truncated
    with pytest.raises(quark.DecodeError, match="family"):
        dec(_sock(layout, op=c("Q_SOCK_CONNECT"), family=1))
    with pytest.raises(quark.DecodeError, match="op"):
        dec(_sock(layout, op=77, family=socket.AF_INET))
    data = bytes(40)
    with pytest.raises(quark.DecodeError, match="captured"):
        dec(_packet(layout, data)[:-1])  # shorter than it says
    with pytest.raises(quark.DecodeError, match="captured"):
        dec(_packet(layout, data, orig_len=39))  # longer than the packet
    with pytest.raises(quark.DecodeError, match="captured"):
        big = bytes(c("Q_PACKET_MAX") + 1)
        dec(_packet(layout, big, orig_len=len(big)))
    with pytest.raises(quark.DecodeError, match="direction"):
        dec(_packet(layout, data, direction=9))
    with pytest.raises(quark.DecodeError, match="header"):
        dec(_packet(layout, b"")[:12])


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["Q_SOCK", "Q_PACKET"]),
    tail=st.binary(max_size=120),
)
def test_network_garbage_is_only_ever_a_decode_error(
    kind: str, tail: bytes
) -> None:
    lay = object_layout(object_path())
    rec = lay.const(kind).to_bytes(4, "little") + tail
    try:
        Decoder(lay).decode(rec)
    except quark.DecodeError:
        pass


class _Ring:
    def __init__(self, records: list[bytes]) -> None:
        self.records = records

    def read(self, limit: int) -> list[bytes]:
        out, self.records = self.records[:limit], self.records[limit:]
        return out


def test_the_backend_counts_bad_records_and_goes_on(layout: Layout) -> None:
    # the consumer's path: a truncated socket record and a packet longer
    # than its capture are counted in decode_errors (and lost), skipped,
    # and the records around them are delivered
    c = layout.const
    sock = _sock(layout, op=c("Q_SOCK_CONNECT"), family=socket.AF_INET)
    pkt = _packet(layout, bytes(40))
    backend = EbpfBackend.__new__(EbpfBackend)
    backend._ring = _Ring(  # type: ignore[assignment]
        [sock, sock[:20], pkt, _packet(layout, bytes(40), orig_len=10), sock]
    )
    backend._decode = Decoder(layout).decode
    backend._decode_errors = 0
    backend._pending = {}
    backend._unresolved = 0
    backend._counters_fd = -1
    backend._fds = []
    backend._misses = backend._misses_due = 0
    backend._fold = backend._fold_batch = None
    backend._sweep_at = None
    backend._wake = backend._timer = None  # no kernel ring to wake on
    got = backend.read(100)
    assert [r.kind for r in got] == [
        RawKind.SOCK_CONN, RawKind.PACKET, RawKind.SOCK_CONN,
    ]  # fmt: skip
    assert backend.decode_errors() == 2
    assert backend.lost() == 2


# -- the engine --------------------------------------------------------------

A = SockAddr.of("127.0.0.1", 40000)
B = SockAddr.of("127.0.0.1", 80)


def _raw(kind: RawKind, t: int, pid: int = 10, **kw: Any) -> RawEvent:
    task = None if kind is RawKind.SOCK_CONN else RawTask(ppid=1, exit_code=0)
    return RawEvent(kind, t, pid, task=task, **kw)


def _run(raws: list[RawEvent]) -> list[quark.Event]:
    e = Engine(hold_time=10)
    for r in raws:
        e.push(r)
    return list(e.drain(10**12))


def test_a_close_at_exit_is_delivered_before_the_exit() -> None:
    # exit(2) releases files after the exit tracepoint: the close's own
    # time is after the exit's, but users must see it first
    raws = [
        _raw(RawKind.WAKE_UP_NEW_TASK, 1000),
        _raw(RawKind.SOCK_CONN, 2000, payload=RawSock(SockOp.CONNECT, A, B)),
        _raw(RawKind.EXIT_THREAD, 3000),
        _raw(
            RawKind.SOCK_CONN, 3500,
            payload=RawSock(SockOp.CLOSE, A, B, 0, 0, at_exit=True),
        ),
    ]  # fmt: skip
    evs = _run(raws)
    kinds = [e.events for e in evs]
    assert kinds == [
        EV.FORK, EV.SOCK_CONN_ESTABLISHED, EV.SOCK_CONN_CLOSED, EV.EXIT,
    ], kinds  # fmt: skip
    assert [e.time for e in evs] == sorted(e.time for e in evs)
    closed = evs[2].socket
    assert closed is not None and closed.conn_origin is SockOrigin.CONNECT
    assert closed.close_time is not None and closed.close_time < 3000


def test_a_close_not_at_exit_keeps_its_place() -> None:
    raws = [
        _raw(RawKind.SOCK_CONN, 2000, payload=RawSock(SockOp.ACCEPT, A, B)),
        _raw(RawKind.EXIT_THREAD, 3000),
        _raw(
            RawKind.SOCK_CONN, 3500,
            payload=RawSock(SockOp.CLOSE, A, B, 1, 2),
        ),
    ]  # fmt: skip
    kinds = [e.events for e in _run(raws)]
    assert kinds == [
        EV.SOCK_CONN_ESTABLISHED, EV.EXIT, EV.SOCK_CONN_CLOSED,
    ]  # fmt: skip


def test_socket_events_do_not_aggregate_across_a_process() -> None:
    # fork, connect, exit: the connect splits what would be one
    # FORK+EXIT event, so nothing is reported out of order
    raws = [
        _raw(RawKind.WAKE_UP_NEW_TASK, 1000),
        _raw(RawKind.SOCK_CONN, 2000, payload=RawSock(SockOp.CONNECT, A, B)),
        _raw(RawKind.EXIT_THREAD, 3000),
    ]  # fmt: skip
    assert [e.events for e in _run(raws)] == [
        EV.FORK, EV.SOCK_CONN_ESTABLISHED, EV.EXIT,
    ]  # fmt: skip


def test_a_refused_connects_close_is_not_delivered() -> None:
    raws = [
        _raw(
            RawKind.SOCK_CONN, 1000,
            payload=RawSock(SockOp.CLOSE, A, B, 0, 0),
        ),
    ]  # fmt: skip
    assert _run(raws) == []


# -- the queue's refusals ---------------------------------------------------


def test_kprobe_refuses_network_kinds_before_touching_the_kernel() -> None:
    # refused from what the backend is, not from a failed open: this holds
    # on a host with no kprobes at all
    for kind in (QQ.SOCK_CONN, QQ.DNS):
        with pytest.raises(quark.NotSupportedError, match=rf"QQ\.{kind.name}"):
            quark.Queue(backend="kprobe", flags=kind)


def test_auto_never_falls_back_to_a_backend_without_the_kind() -> None:
    # EBPF declines (told to ignore BTF), and KPROBE cannot serve
    # SOCK_CONN: the error names the kind, it is not a queue without it
    with pytest.raises(quark.NotSupportedError, match=r"QQ\.SOCK_CONN"):
        quark.Queue(backend="auto", flags=QQ.SOCK_CONN, ignore_btf=True)
