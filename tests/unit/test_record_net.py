"""SOCK_CONN and PACKET raw events through the recorded stream
(quark.raw.record): they round-trip, and bad values name their line."""

from __future__ import annotations

import ipaddress
import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quark.errors import DecodeError
from quark.events import PacketDirection, SockAddr
from quark.raw.record import VERSION, StreamReader, StreamWriter, decode_raw
from quark.raw.types import RawEvent, RawKind, RawPacket, RawSock, SockOp


def sock_event(payload: RawSock, time: int = 100, pid: int = 42) -> RawEvent:
    return RawEvent(RawKind.SOCK_CONN, time, pid, payload=payload)


def round_trip(tmp_path: pathlib.Path, events: list[RawEvent]) -> list[object]:
    path = tmp_path / "net.jsonl"
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


def test_sock_to_dict_is_the_documented_shape() -> None:
    ev = sock_event(
        RawSock(
            SockOp.CLOSE,
            SockAddr.of("127.0.0.1", 40000),
            SockAddr.of("127.0.0.1", 80),
            bytes_sent=5,
            bytes_received=0,
            net_inonum=4026531840,
            at_exit=True,
        )
    )
    assert ev.to_dict()["sock"] == {
        "op": "CLOSE",
        "local": ["127.0.0.1", 40000],
        "remote": ["127.0.0.1", 80],
        "bytes_sent": 5,
        "bytes_received": 0,
        "net_inonum": 4026531840,
        "at_exit": True,
    }
    # None and False are left out
    bare = sock_event(
        RawSock(SockOp.CONNECT, SockAddr.of("::1", 1), SockAddr.of("::1", 2))
    )
    assert bare.to_dict()["sock"] == {
        "op": "CONNECT",
        "local": ["::1", 1],
        "remote": ["::1", 2],
    }
    assert "packet" not in bare.to_dict()


def test_packet_to_dict_is_the_documented_shape() -> None:
    ev = RawEvent(
        RawKind.PACKET,
        7,
        9,
        payload=RawPacket(PacketDirection.INGRESS, "dns", 300, b"\x45\x00"),
    )
    assert ev.to_dict()["packet"] == {
        "direction": "INGRESS",
        "origin": "dns",
        "orig_len": 300,
        "data": "4500",
    }
    assert "sock" not in ev.to_dict()


def test_round_trip_of_both_families_and_a_packet(
    tmp_path: pathlib.Path,
) -> None:
    events = [
        sock_event(
            RawSock(
                SockOp.CONNECT,
                SockAddr.of("10.0.0.1", 40000),
                SockAddr.of("10.0.0.2", 443),
                net_inonum=4026531840,
            )
        ),
        sock_event(
            RawSock(
                SockOp.ACCEPT,
                SockAddr.of("::ffff:127.0.0.1", 8080),
                SockAddr.of("::ffff:127.0.0.1", 50000),
            ),
            pid=43,
        ),
        sock_event(
            RawSock(
                SockOp.CLOSE,
                SockAddr.of("2001:db8::1", 1),
                SockAddr.of("2001:db8::2", 2),
                bytes_sent=0,
                bytes_received=1 << 40,
                at_exit=True,
            )
        ),
        RawEvent(
            RawKind.PACKET,
            200,
            44,
            45,
            cpu=1,
            payload=RawPacket(
                PacketDirection.EGRESS, "dns", 2100, bytes(range(256)) * 8
            ),
        ),
    ]
    got = round_trip(tmp_path, events)
    assert len(got) == len(events)
    for a, b in zip(events, got, strict=True):
        assert same(a, b), (a, b)
    mapped = got[1]
    assert isinstance(mapped, RawEvent)
    assert isinstance(mapped.payload, RawSock)
    assert mapped.payload.local.family == SockAddr.of("::1", 0).family


def test_old_kinds_carry_no_payload(tmp_path: pathlib.Path) -> None:
    (ev,) = round_trip(tmp_path, [RawEvent(RawKind.COMM, 1, 2, comm="x")])
    assert isinstance(ev, RawEvent) and ev.payload is None


def addrs() -> st.SearchStrategy[SockAddr]:
    ips = st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6),
        st.ip_addresses(v=4).map(
            lambda a: ipaddress.IPv6Address(f"::ffff:{a}")
        ),
    )
    return st.builds(
        lambda ip, port: SockAddr.of(str(ip), port),
        ips,
        st.integers(0, 65535),
    )


OPTIONAL_COUNT = st.none() | st.integers(0, 2**64 - 1)

SOCKS = st.builds(
    RawSock,
    st.sampled_from(list(SockOp)),
    addrs(),
    addrs(),
    OPTIONAL_COUNT,
    OPTIONAL_COUNT,
    OPTIONAL_COUNT,
    st.booleans(),
)
PACKETS = st.builds(
    RawPacket,
    st.sampled_from(list(PacketDirection)),
    st.text(max_size=8),
    st.integers(0, 65535),
    st.binary(max_size=64),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payloads=st.lists(st.one_of(SOCKS, PACKETS), min_size=1, max_size=5),
    time=st.integers(0, 2**63),
)
def test_payloads_round_trip(
    tmp_path: pathlib.Path,
    payloads: list[RawSock | RawPacket],
    time: int,
) -> None:
    events = [
        RawEvent(
            RawKind.SOCK_CONN if isinstance(p, RawSock) else RawKind.PACKET,
            time + i,
            1000 + i,
            payload=p,
        )
        for i, p in enumerate(payloads)
    ]
    got = round_trip(tmp_path, events)
    assert [g.payload for g in got] == payloads  # type: ignore[attr-defined]


GOOD_SOCK = {
    "op": "CONNECT",
    "local": ["127.0.0.1", 1],
    "remote": ["127.0.0.1", 2],
}
GOOD_PACKET = {
    "direction": "EGRESS",
    "origin": "dns",
    "orig_len": 3,
    "data": "00ff",
}


def raw(kind: str, **more: object) -> dict[str, object]:
    return {"kind": kind, "time": 1, "pid": 2, **more}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (raw("SOCK_CONN"), "needs 'sock'"),
        (raw("PACKET"), "needs 'packet'"),
        (raw("EXEC", sock=GOOD_SOCK), "EXEC record has no 'sock'"),
        (raw("SOCK_CONN", sock=[]), "'sock' must be an object"),
        (raw("SOCK_CONN", sock={**GOOD_SOCK, "op": "OPEN"}), "sock.op"),
        (raw("SOCK_CONN", sock={**GOOD_SOCK, "op": 1}), "sock.op"),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "local": "127.0.0.1:1"}),
            "sock.local must be",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "local": ["nope", 1]}),
            "not an IP address",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "remote": ["::1", 70000]}),
            "sock.remote must be",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "remote": ["::1", True]}),
            "sock.remote must be",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "bytes_sent": "5"}),
            "'bytes_sent' must be an integer",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "bytes_received": -1}),
            "'bytes_received' must be >= 0",
        ),
        (
            raw("SOCK_CONN", sock={**GOOD_SOCK, "at_exit": 1}),
            "at_exit must be true or false",
        ),
        (
            raw("PACKET", packet={**GOOD_PACKET, "direction": "UP"}),
            "packet.direction",
        ),
        (
            raw("PACKET", packet={**GOOD_PACKET, "data": "xyz"}),
            "hex digits",
        ),
        (
            raw("PACKET", packet={**GOOD_PACKET, "data": None}),
            "hex digits",
        ),
        (
            raw("PACKET", packet={**GOOD_PACKET, "origin": 5}),
            "packet.origin",
        ),
        (
            raw(
                "PACKET",
                packet={
                    k: v for k, v in GOOD_PACKET.items() if k != "orig_len"
                },
            ),
            "missing 'orig_len'",
        ),
    ],
)
def test_bad_values_name_their_line(
    tmp_path: pathlib.Path, record: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    w = StreamWriter(path)
    w.raw(sock_event(RawSock(SockOp.CONNECT, *[SockAddr.of("::1", 1)] * 2)))
    w.close()
    with open(path, "a") as f:
        f.write(json.dumps({"raw": record}) + "\n")
        f.write(json.dumps({"raw": raw("SOCK_CONN", sock=GOOD_SOCK)}) + "\n")
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


def test_unknown_sock_keys_are_ignored() -> None:
    ev = decode_raw(raw("SOCK_CONN", sock={**GOOD_SOCK, "future": 1}))
    assert isinstance(ev.payload, RawSock)
    assert ev.payload.op is SockOp.CONNECT


def test_scraped_sockets_are_recorded_and_replayed(
    tmp_path: pathlib.Path,
) -> None:
    # a replay must know the connections the live queue scraped at open,
    # or their closes would be dropped as unknown
    from quark import QQ, Queue, Socket, SockOrigin

    local = SockAddr.of("::ffff:127.0.0.1", 40000)
    remote = SockAddr.of("::ffff:127.0.0.1", 80)
    scraped = Socket(
        local, remote, pid_origin=42, pid_last_use=42, established_time=5,
        close_time=None, conn_origin=SockOrigin.SCRAPE, net_inonum=7,
    )  # fmt: skip
    path = tmp_path / "s.jsonl"
    w = StreamWriter(path, backend="ebpf", hold_time=10)
    w.socket(scraped)
    w.raw(
        RawEvent(
            RawKind.SOCK_CONN, 1000, 42,
            payload=RawSock(SockOp.CLOSE, local, remote, 0, 0),
        )
    )  # fmt: skip
    w.close()
    with Queue(backend="replay", flags=QQ.SOCK_CONN, path=str(path)) as q:
        assert list(q.sockets()) == [scraped]
        evs = list(q)
    assert len(evs) == 1 and evs[0].socket is not None
    s = evs[0].socket
    assert (s.conn_origin, s.pid_origin, s.close_time) == (
        SockOrigin.SCRAPE, 42, 1000,
    )  # fmt: skip
