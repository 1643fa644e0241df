"""quark-mon's dump of socket and packet events, and its -S / -N options."""

from __future__ import annotations

import socket
import struct

import dns.message
import pytest

from quark import (
    EV,
    QQ,
    Event,
    Packet,
    PacketDirection,
    Process,
    SockAddr,
    Socket,
    SockOrigin,
)
from quark.cli import mon
from quark.dump import dump_event, dump_process, hexdump

PROC = Process(pid=42, ppid=1, comm="curl")


def _socket(**kw: object) -> Socket:
    values: dict[str, object] = {
        "local": SockAddr.of("10.0.0.1", 40000),
        "remote": SockAddr.of("2001:db8::1", 443),
        "pid_origin": 42,
        "pid_last_use": 43,
        "established_time": 1000,
        "close_time": None,
        "conn_origin": SockOrigin.CONNECT,
    }
    values.update(kw)
    return Socket(**values)  # type: ignore[arg-type]


def _dns_ipv4() -> bytes:
    payload = dns.message.make_query("example.com", "A", id=7).to_wire()
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
    return (
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
            socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.53"),
        )
        + udp
    )  # fmt: skip


def test_socket_lines_come_after_the_header_and_before_the_process() -> None:
    ev = Event(
        events=EV.SOCK_CONN_CLOSED,
        time=5,
        process=PROC,
        socket=_socket(
            close_time=2000,
            bytes_sent=7,
            bytes_received=9,
            net_inonum=4026531840,
        ),
    )
    assert dump_event(ev) == (
        "->42 (SOCK_CONN_CLOSED)\n"
        "  SOCK\tlocal=10.0.0.1:40000 remote=[2001:db8::1]:443 "
        "received=9 sent=7\n"
        "  SOCK\torigin=CONNECT pid_origin=42 pid_last_use=43 "
        "established_time=1000 close_time=2000 net_inonum=4026531840\n"
        + dump_process(PROC).split("\n", 1)[1]
    )


def test_unknown_socket_members_print_as_question_marks() -> None:
    ev = Event(
        events=EV.SOCK_CONN_ESTABLISHED,
        time=5,
        process=None,
        socket=_socket(
            conn_origin=None, established_time=None, pid_origin=None
        ),
    )
    assert dump_event(ev).splitlines() == [
        "->? (SOCK_CONN_ESTABLISHED)",
        "  SOCK\tlocal=10.0.0.1:40000 remote=[2001:db8::1]:443 "
        "received=? sent=?",
        "  SOCK\torigin=? pid_origin=? pid_last_use=43 established_time=? "
        "close_time=? net_inonum=?",
    ]


def test_packet_line_and_hex_dump() -> None:
    data = _dns_ipv4()
    ev = Event(
        events=EV.PACKET,
        time=5,
        process=PROC,
        packet=Packet(
            direction=PacketDirection.EGRESS,
            origin="dns",
            orig_len=len(data) + 10,
            data=data,
        ),
    )
    lines = dump_event(ev).splitlines()
    assert lines[0] == "->42 (PACKET)"
    assert lines[1] == (
        f"  PKT\torigin=dns, len={len(data)}/{len(data) + 10}, "
        "direction=EGRESS"
    )
    rows = (len(data) + 15) // 16
    dump = lines[2 : 2 + rows]
    assert dump[0] == (
        "    0000: 45 00 00 39 00 00 00 00 40 11 00 00 0a 00 00 01  "
        "E..9....@......."
    )
    # the query's name shows in the ASCII column
    assert "example" in "".join(line[59:] for line in dump)
    assert lines[2 + rows] == "  COMM\tcomm=curl"


def test_hexdump_layout() -> None:
    assert hexdump(b"") == ""
    assert hexdump(b"AB\x00", indent="") == (
        "0000: 41 42 00" + " " * 39 + "  AB.\n"
    )
    out = hexdump(bytes(range(0x20, 0x40)), indent="")
    assert out.splitlines() == [
        "0000: 20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e 2f"
        "   !\"#$%&'()*+,-./",
        "0010: 30 31 32 33 34 35 36 37 38 39 3a 3b 3c 3d 3e 3f"
        "  0123456789:;<=>?",
    ]
    assert hexdump(b"\x7f\x80\xff", indent="").endswith("  ...\n")


def test_process_events_dump_as_before() -> None:
    ev = Event(events=EV.EXEC, time=1, process=PROC)
    assert dump_event(ev) == dump_process(PROC, EV.EXEC)
    assert dump_event(Event(events=EV.EXIT, time=1, process=None)) == (
        "->? (EXIT)\n"
    )


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        ([], QQ(0)),
        (["-S"], QQ.SOCK_CONN),
        (["-N"], QQ.DNS),
        (["-S", "-N", "-t"], QQ.SOCK_CONN | QQ.DNS | QQ.THREAD_EVENTS),
    ],
)
def test_mon_options_ask_for_the_network_kinds(
    argv: list[str], flags: QQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: dict[str, object] = {}

    def fake_queue(**kw: object) -> object:
        opened.update(kw)
        return object()

    monkeypatch.setattr("quark.Queue", fake_queue)
    mon._open(mon._parser().parse_args(argv))
    assert opened["flags"] == flags
    assert opened["backend"] == "auto"  # the backend choice is unchanged


def test_mon_help_says_what_the_network_kinds_need() -> None:
    text = mon._parser().format_help()
    assert "QQ.SOCK_CONN" in text and "QQ.DNS" in text
    assert "cgroup v2" in text
