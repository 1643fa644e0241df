"""ECS documents, the text dump and the DOT graph, without a kernel."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quark import (
    EV,
    ID_CHANGE,
    Event,
    File,
    FileChange,
    FileOp,
    Packet,
    PacketDirection,
    Process,
    Shm,
    ShmKind,
    SockAddr,
    Socket,
    SockOrigin,
)
from quark.dump import dump_event, dump_process, events_str
from quark.ecs import EcsEncoder, event_action, file_action, rfc3339
from quark.graph import cache_graph
from quark.sysinfo import HostInfo

HOST = HostInfo("h", "x86_64", "6.1.0", "boot-id", {"NAME": "Debian"})
PARENT = Process(pid=10, ppid=1, comm="bash", exe="/usr/bin/bash",
                 cmdline=["bash"], euid=0)  # fmt: skip
CHILD = Process(
    pid=11, ppid=10, uid=1000, euid=0, suid=0, gid=100, egid=100, sgid=100,
    comm="sudo", exe="/usr/bin/sudo", cmdline=["sudo", "-i", "\udcff"],
    cwd="/root", start_time=5 * 10**9, exit_code=-9, exit_time=7 * 10**9,
    cap_effective=(1 << 21) | (1 << 45), cap_permitted=0, tty_major=136,
    tty_minor=3, entity_id="CwAAAAAAAAAAAAAA",
)  # fmt: skip


def _enc() -> EcsEncoder:
    return EcsEncoder({10: PARENT}.get, host=HOST, clock_offsets=(0, 0))


def test_timestamps_are_rfc3339_with_zero_padded_fractions() -> None:
    assert rfc3339(5_000_000) == "1970-01-01T00:00:00.005000000Z"
    assert rfc3339(1_700_000_000_000_000_001).endswith(".000000001Z")


def test_actions_and_types() -> None:
    assert event_action(EV.FORK | EV.EXEC | EV.EXIT) == (
        "process-forked-executed-exited"
    )
    assert event_action(EV.EXEC) == "process-executed"
    doc = _enc().document(Event(events=EV.ID_CHANGE, time=1, process=CHILD,
                                id_change=ID_CHANGE.SETUID))  # fmt: skip
    assert doc["event"]["type"] == ["change"]
    assert doc["event"]["category"] == ["process"]
    snap = _enc().document(Event(events=EV(0), time=1, process=CHILD))
    assert snap["event"]["type"] == ["info"]


def test_process_fields_where_ecs_puts_them() -> None:
    text = _enc().encode(Event(events=EV.EXEC | EV.EXIT, time=7 * 10**9,
                               process=CHILD))  # fmt: skip
    text.encode("utf-8")  # valid UTF-8 even with undecodable argv bytes
    doc = json.loads(text)
    p = doc["process"]
    assert p["user"]["id"] == "0" and p["real_user"]["id"] == "1000"
    assert p["saved_user"]["id"] == "0" and p["group"]["id"] == "100"
    assert "user" not in p["user"]  # upstream nested them: we do not
    assert p["args"] == ["sudo", "-i", "\ufffd"] and p["args_count"] == 3
    assert (
        p["exit_code"] == -9 and p["end"] == "1970-01-01T00:00:07.000000000Z"
    )
    assert p["start"] == "1970-01-01T00:00:05.000000000Z"
    assert p["interactive"] is True
    assert p["tty"]["char_device"] == {"major": 136, "minor": 3}
    assert p["thread"]["capabilities"]["effective"] == ["CAP_SYS_ADMIN",
                                                        "CAP_45"]  # fmt: skip
    assert p["parent"]["pid"] == 10 and p["parent"]["name"] == "bash"
    assert doc["host"]["os"]["kernel"] == "6.1.0"


def test_dump_format() -> None:
    out = dump_event(Event(events=EV.FORK | EV.EXEC | EV.EXIT, time=1,
                           process=CHILD))  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "->11 (FORK+EXEC+EXIT)"
    assert "  COMM\tcomm=sudo" in lines
    assert "  EXIT\texit_code=-9 exit_time=7000000000" in lines
    assert dump_process(PARENT).splitlines()[0] == "->10"
    assert events_str(EV.EXIT | EV.FORK) == "FORK+EXIT"


def test_dump_of_every_field_is_upstreams_layout() -> None:
    """The dump, driven by Process's table, line for line: upstream's tags
    and order, a PROC block only with a ppid, EXIT only after an exit."""
    p = CHILD._replace(
        pgid=11, sid=11, cap_inheritable=0, cap_bset=0xFF, cap_ambient=0,
        uts_inonum=1, ipc_inonum=2, mnt_inonum=3, net_inonum=4,
        entry_leader=11, entry_leader_type=6, exe_inode=42,
        cgroup="/user.slice", env=["A=1", "B=\udcff"],
    )  # fmt: skip
    assert dump_process(p, EV.EXEC) == (
        "->11 (EXEC)\n"
        "  COMM\tcomm=sudo\n"
        "  CMDL\tcmdline=[ sudo, -i, \udcff ]\n"
        "  PROC\tppid=10\n"
        "  PROC\tuid=1000 gid=100 suid=0 sgid=100 euid=0 egid=100 pgid=11 "
        "sid=11\n"
        "  PROC\tcap_inheritable=0x0 cap_permitted=0x0 "
        "cap_effective=0x200000200000\n"
        "  PROC\tcap_bset=0xff cap_ambient=0x0\n"
        "  PROC\ttime_boot=5000000000 tty_major=136 tty_minor=3\n"
        "  PROC\tuts_inonum=1 ipc_inonum=2\n"
        "  PROC\tmnt_inonum=3 net_inonum=4\n"
        "  PROC\tentity_id=CwAAAAAAAAAAAAAA entry_leader_type=TERM "
        "entry_leader=11\n"
        "  CWD\tcwd=/root\n"
        "  EXE\texe=/usr/bin/sudo exe_inode=42\n"
        "  ENV\tenv_len=8\n"
        "  CGRP\tcgroup=/user.slice\n"
        "  EXIT\texit_code=-9 exit_time=7000000000\n"
    )
    bare = dump_process(Process(pid=5, exit_code=1))
    assert bare == "->5\n"  # no ppid: no PROC; no exit_time: no EXIT


def test_graph_has_nodes_and_edges() -> None:
    dot = cache_graph([PARENT, CHILD])
    assert dot.startswith("digraph quark {")
    assert '"10" -> "11";' in dot
    assert dot.count("[label=") == 2


# -- network events (issue 12) ---------------------------------------------

LOCAL4 = SockAddr.of("10.0.0.1", 40000)
REMOTE4 = SockAddr.of("192.0.2.7", 443)
LOCAL6 = SockAddr.of("2001:db8::1", 8080)
REMOTE6 = SockAddr.of("2001:db8::99", 51000)


def _sock(
    local: SockAddr,
    remote: SockAddr,
    origin: SockOrigin | None,
    *,
    pid_origin: int | None = 11,
    established_time: int | None = 5,
    close_time: int | None = None,
    bytes_sent: int | None = None,
    bytes_received: int | None = None,
) -> Socket:
    return Socket(
        local=local, remote=remote, conn_origin=origin,
        pid_origin=pid_origin, pid_last_use=11,
        established_time=established_time,
        close_time=close_time, bytes_sent=bytes_sent,
        bytes_received=bytes_received,
    )  # fmt: skip


def _sock_doc(sock: Socket, events: EV) -> dict[str, Any]:
    text = _enc().encode(
        Event(events=events, time=9, process=CHILD, socket=sock)
    )
    doc: dict[str, Any] = json.loads(text)
    return doc


def test_connect_established_source_is_local_egress() -> None:
    doc = _sock_doc(_sock(LOCAL4, REMOTE4, SockOrigin.CONNECT),
                    EV.SOCK_CONN_ESTABLISHED)  # fmt: skip
    assert doc["event"] == {
        "kind": "event", "category": ["network"], "type": ["start"],
        "action": "connection-established",
    }  # fmt: skip
    assert doc["source"] == {"address": "10.0.0.1", "ip": "10.0.0.1",
                             "port": 40000}  # fmt: skip
    assert doc["destination"] == {"address": "192.0.2.7",
                                  "ip": "192.0.2.7", "port": 443}  # fmt: skip
    assert doc["network"] == {"transport": "tcp", "type": "ipv4",
                              "direction": "egress"}  # fmt: skip
    assert doc["process"]["pid"] == 11  # the process that connected


def test_accept_closed_source_is_remote_ingress_with_bytes() -> None:
    sock = _sock(LOCAL6, REMOTE6, SockOrigin.ACCEPT, close_time=8,
                 bytes_sent=1000, bytes_received=24)  # fmt: skip
    doc = _sock_doc(sock, EV.SOCK_CONN_CLOSED)
    assert doc["event"]["category"] == ["network"]
    assert doc["event"]["type"] == ["end"]
    assert doc["event"]["action"] == "connection-closed"
    # the remote end opened it: it is the source, and sent what we received
    assert doc["source"] == {"address": "2001:db8::99", "ip": "2001:db8::99",
                             "port": 51000, "bytes": 24}  # fmt: skip
    assert doc["destination"] == {"address": "2001:db8::1",
                                  "ip": "2001:db8::1", "port": 8080,
                                  "bytes": 1000}  # fmt: skip
    assert doc["network"] == {
        "transport": "tcp", "type": "ipv6", "direction": "ingress",
        "bytes": 1024,
    }  # fmt: skip


def test_connect_closed_bytes_follow_the_source() -> None:
    sock = _sock(LOCAL4, REMOTE4, SockOrigin.CONNECT, close_time=8,
                 bytes_sent=7, bytes_received=9)  # fmt: skip
    doc = _sock_doc(sock, EV.SOCK_CONN_CLOSED)
    assert doc["source"]["bytes"] == 7
    assert doc["destination"]["bytes"] == 9
    assert doc["network"]["bytes"] == 16


def test_scraped_or_unknown_origin_is_laid_out_like_connect() -> None:
    for origin in (SockOrigin.SCRAPE, None):
        sock = _sock(LOCAL4, REMOTE4, origin, established_time=None,
                     pid_origin=None)  # fmt: skip
        doc = _sock_doc(sock, EV.SOCK_CONN_CLOSED)
        assert doc["source"]["ip"] == "10.0.0.1"
        assert doc["destination"]["ip"] == "192.0.2.7"
        assert doc["network"]["direction"] == "unknown"
        assert "bytes" not in doc["network"]  # not known: not invented


def test_v4_mapped_connection_is_ipv4_on_the_wire() -> None:
    local = SockAddr.of("::ffff:127.0.0.1", 1)
    remote = SockAddr.of("::ffff:127.0.0.2", 2)
    doc = _sock_doc(_sock(local, remote, SockOrigin.CONNECT),
                    EV.SOCK_CONN_ESTABLISHED)  # fmt: skip
    assert doc["network"]["type"] == "ipv4"
    # printed as the socket holds it (ipaddress's spelling varies by Python)
    assert doc["source"]["address"] == local.address
    half = _sock(local, SockAddr.of("::1", 2), SockOrigin.CONNECT)
    doc = _sock_doc(half, EV.SOCK_CONN_ESTABLISHED)
    assert doc["network"]["type"] == "ipv6"


def test_network_actions() -> None:
    assert event_action(EV.SOCK_CONN_ESTABLISHED) == "connection-established"
    assert event_action(EV.SOCK_CONN_CLOSED) == "connection-closed"
    assert event_action(EV.PACKET) == "packet"
    assert event_action(EV.BYPASS) == "unknown"


def test_process_documents_have_no_network_fields() -> None:
    doc = _enc().document(Event(events=EV.EXEC, time=1, process=CHILD))
    assert not {"network", "source", "destination", "dns"} & set(doc)
    assert doc["event"]["category"] == ["process"]


# DNS packets, built as they are on the wire: the payload by dnspython, the
# IP and UDP headers by hand


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _ipv4(src: str, dst: str, l4: bytes, proto: int = 17) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0x4000, 64, proto,
        0, socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    ) + l4  # fmt: skip


def _ipv6(src: str, dst: str, l4: bytes, nh: int = 17) -> bytes:
    return struct.pack(
        "!IHBB16s16s", 6 << 28, len(l4), nh, 64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    ) + l4  # fmt: skip


def _query(name: str = "www.example.com", rdtype: str = "A") -> Any:
    return dns.message.make_query(name, rdtype, id=0xBEEF)


def _answer() -> bytes:
    resp = dns.message.make_response(_query("www.example.com", "AAAA"))
    resp.answer.append(
        dns.rrset.from_text(
            "www.example.com.", 60, "IN", "CNAME", "web.example.net."
        )
    )
    resp.answer.append(dns.rrset.from_text(
        "web.example.net.", 300, "IN", "AAAA", "2001:db8::10",
        "2001:db8::11"))  # fmt: skip
    wire: bytes = resp.to_wire()
    return wire


def _pkt_doc(data: bytes, direction: PacketDirection,
             orig_len: int | None = None) -> dict[str, Any]:  # fmt: skip
    pkt = Packet(direction=direction, origin="dns",
                 orig_len=len(data) if orig_len is None else orig_len,
                 data=data)  # fmt: skip
    text = _enc().encode(
        Event(events=EV.PACKET, time=3, process=CHILD, packet=pkt)
    )
    doc: dict[str, Any] = json.loads(text)
    return doc


def test_dns_query_over_ipv4() -> None:
    data = _ipv4("10.0.0.1", "10.0.0.53",
                 _udp(40000, 53, _query().to_wire()))  # fmt: skip
    doc = _pkt_doc(data, PacketDirection.EGRESS)
    assert doc["event"]["category"] == ["network"]
    assert doc["event"]["type"] == ["protocol"]
    assert doc["event"]["action"] == "packet-dns-sent"
    assert doc["network"] == {
        "transport": "udp", "type": "ipv4", "direction": "egress",
        "protocol": "dns",
    }  # fmt: skip
    assert doc["source"] == {"address": "10.0.0.1", "ip": "10.0.0.1",
                             "port": 40000}  # fmt: skip
    assert doc["destination"] == {"address": "10.0.0.53",
                                  "ip": "10.0.0.53", "port": 53}  # fmt: skip
    assert doc["dns"] == {
        "id": str(0xBEEF), "type": "query", "op_code": "QUERY",
        "header_flags": ["RD"],
        "question": {"name": "www.example.com", "type": "A", "class": "IN"},
    }  # fmt: skip
    assert doc["process"]["pid"] == 11


def test_dns_answer_over_ipv6() -> None:
    data = _ipv6("2001:db8::53", "2001:db8::1", _udp(53, 40001, _answer()))
    doc = _pkt_doc(data, PacketDirection.INGRESS)
    assert doc["event"]["action"] == "packet-dns-received"
    assert doc["network"] == {
        "transport": "udp", "type": "ipv6", "direction": "ingress",
        "protocol": "dns",
    }  # fmt: skip
    assert doc["source"] == {"address": "2001:db8::53",
                             "ip": "2001:db8::53", "port": 53}  # fmt: skip
    assert doc["destination"]["port"] == 40001
    d = doc["dns"]
    assert d["id"] == str(0xBEEF) and d["type"] == "answer"
    assert d["response_code"] == "NOERROR"
    assert d["question"] == {"name": "www.example.com", "type": "AAAA",
                             "class": "IN"}  # fmt: skip
    # in wire order; the records of one RRset come in the order dnspython
    # wrote them, which is a set's
    answers = d["answers"]
    assert answers[0] == {"name": "www.example.com", "type": "CNAME",
                          "class": "IN", "ttl": 60,
                          "data": "web.example.net."}  # fmt: skip
    assert sorted(answers[1:], key=lambda a: a["data"]) == [
        {"name": "web.example.net", "type": "AAAA", "class": "IN",
         "ttl": 300, "data": "2001:db8::10"},
        {"name": "web.example.net", "type": "AAAA", "class": "IN",
         "ttl": 300, "data": "2001:db8::11"},
    ]  # fmt: skip
    assert sorted(d["resolved_ip"]) == ["2001:db8::10", "2001:db8::11"]


def test_dns_nxdomain_answer_has_a_code_and_no_answers() -> None:
    resp = dns.message.make_response(_query("nope.example", "A"))
    resp.set_rcode(dns.rcode.NXDOMAIN)
    data = _ipv4("10.0.0.53", "10.0.0.1", _udp(53, 40000, resp.to_wire()))
    d = _pkt_doc(data, PacketDirection.INGRESS)["dns"]
    assert d["response_code"] == "NXDOMAIN"
    assert "answers" not in d and "resolved_ip" not in d


def test_truncated_dns_packet_keeps_network_fields_only() -> None:
    full = _ipv4("10.0.0.53", "10.0.0.1", _udp(53, 40000, _answer()))
    for cut in (len(full) - 1, 20 + 8 + 5, 20 + 8, 20 + 3, 19, 1, 0):
        data = full[:cut]
        doc = _pkt_doc(data, PacketDirection.INGRESS, orig_len=len(full))
        assert "dns" not in doc, cut
        assert doc["event"]["type"] == ["info"]
        assert doc["event"]["action"] == "packet-dns-received"
        assert doc["network"]["transport"] == "udp"
        assert doc["network"]["direction"] == "ingress"
        if cut >= 20:
            assert doc["source"]["ip"] == "10.0.0.53"
            assert doc["network"]["type"] == "ipv4"
        if cut >= 28:
            assert doc["source"]["port"] == 53
        else:
            assert "port" not in doc.get("source", {})


def test_ipv6_extension_headers_stop_the_parse() -> None:
    hop_by_hop = bytes([17, 0, 1, 4, 0, 0, 0, 0])  # next: UDP; PadN
    l4 = hop_by_hop + _udp(40000, 53, _query().to_wire())
    doc = _pkt_doc(_ipv6("2001:db8::1", "2001:db8::53", l4, nh=0),
                   PacketDirection.EGRESS)  # fmt: skip
    assert doc["network"]["type"] == "ipv6"
    assert doc["source"] == {"address": "2001:db8::1", "ip": "2001:db8::1"}
    assert "dns" not in doc


def test_garbage_packets_make_valid_documents() -> None:
    for data in (
        b"\xff" * 64,                                  # version 15
        _ipv4("10.0.0.1", "10.0.0.2", b"\x00" * 20, proto=6),  # TCP
        _ipv4("10.0.0.1", "10.0.0.2", _udp(1, 53, b"not dns at all")),
        _ipv6("::1", "::1", _udp(1, 53, b"\x00" * 11)),
    ):  # fmt: skip
        doc = _pkt_doc(data, PacketDirection.EGRESS)
        assert "dns" not in doc
        assert doc["event"]["category"] == ["network"]


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=600), v6=st.booleans(),
       cut=st.integers(min_value=0, max_value=700))  # fmt: skip
def test_no_packet_makes_the_encoder_raise(
    payload: bytes, v6: bool, cut: int
) -> None:
    l4 = _udp(53, 53, payload)
    data = _ipv6("::1", "::2", l4) if v6 else _ipv4("1.1.1.1", "2.2.2.2", l4)
    for d in (data[:cut], payload):
        pkt = Packet(direction=PacketDirection.INGRESS, origin="dns",
                     orig_len=len(data), data=d)  # fmt: skip
        json.loads(_enc().encode(Event(events=EV.PACKET, time=1,
                                       packet=pkt)))  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(wire=st.sampled_from([_answer()]), pos=st.integers(0, 200),
       byte=st.integers(0, 255))  # fmt: skip
def test_corrupted_dns_messages_never_raise(
    wire: bytes, pos: int, byte: int
) -> None:
    bad = bytearray(wire)
    bad[pos % len(bad)] = byte
    data = _ipv4("10.0.0.53", "10.0.0.1", _udp(53, 40000, bytes(bad)))
    doc = _pkt_doc(data, PacketDirection.INGRESS)
    assert doc["source"]["port"] == 53


# File and shared-memory events

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z, in ns


def _file(**kw: Any) -> File:
    values: dict[str, Any] = {
        "op": FileOp.CREATE,
        "path": "/home/u/notes.tar.gz",
        "inode": 1234,
        "mode": 0o100640,
        "size": 5,
        "uid": 0,
        "gid": 0,
        "atime": T0 + 1,
        "mtime": T0 + 2,
        "ctime": T0 + 3,
    }
    values.update(kw)
    return File(**values)


def _file_doc(f: File, enc: EcsEncoder | None = None) -> dict[str, Any]:
    ev = Event(events=EV.FILE, time=9, process=CHILD, file=f)
    doc: dict[str, Any] = json.loads((enc or _enc()).encode(ev))
    return doc


def _names(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Fake user and group names (1000: alice and staff; others: none),
    and the list of lookups made."""
    calls: list[tuple[str, int]] = []

    def user(uid: int) -> str:
        calls.append(("user", uid))
        if uid != 1000:
            raise KeyError(uid)
        return "alice"

    def group(gid: int) -> str:
        calls.append(("group", gid))
        if gid != 1000:
            raise KeyError(gid)
        return "staff"

    monkeypatch.setattr("quark.ecs._user_name", user)
    monkeypatch.setattr("quark.ecs._group_name", group)
    return calls


def test_file_creation_has_every_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _names(monkeypatch)
    doc = _file_doc(_file(uid=1000, gid=1000))
    assert doc["event"] == {
        "kind": "event", "category": ["file"], "type": ["creation"],
        "action": "file-created",
    }  # fmt: skip
    assert doc["file"] == {
        "path": "/home/u/notes.tar.gz",
        "name": "notes.tar.gz",
        "extension": "gz",
        "directory": "/home/u",
        "type": "file",
        "inode": "1234",
        "uid": "1000",
        "owner": "alice",
        "gid": "1000",
        "group": "staff",
        "size": 5,
        "mode": "0640",
        "accessed": "2023-11-14T22:13:20.000000001Z",
        "mtime": "2023-11-14T22:13:20.000000002Z",
        "ctime": "2023-11-14T22:13:20.000000003Z",
    }
    assert doc["process"]["pid"] == 11  # the process that made it
    assert "quark" not in doc  # no change known: no quark.file


def test_file_owner_and_group_names_are_looked_up_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _names(monkeypatch)
    enc = _enc()
    for _ in range(3):
        doc = _file_doc(_file(uid=1000, gid=4242), enc)
        assert doc["file"]["owner"] == "alice"
        assert doc["file"]["gid"] == "4242"
        assert "group" not in doc["file"]  # no such group: the id alone
    # each id once, shared with the process's user and group names
    assert len(calls) == len(set(calls))
    assert {("group", 4242), ("user", 1000)} <= set(calls)


def test_file_mode_is_the_permission_bits_in_four_octal_digits() -> None:
    for mode, text in ((0o100644, "0644"), (0o104755, "4755"),
                       (0o41777, "1777"), (0o100000, "0000"),
                       (0o600, "0600")):  # fmt: skip
        assert _file_doc(_file(mode=mode))["file"]["mode"] == text


def test_file_type_from_the_mode() -> None:
    for mode, kind in ((0o100644, "file"), (0o40755, "dir"),
                       (0o120777, "symlink")):  # fmt: skip
        assert _file_doc(_file(mode=mode))["file"]["type"] == kind
    for mode in (0o10644, 0o20666, 0o140777, 0o644):  # fifo, chr, sock, ?
        assert "type" not in _file_doc(_file(mode=mode))["file"]


def test_file_name_parts() -> None:
    cases = {
        "/etc/passwd": ("passwd", "/etc", None),
        "/home/u/.bashrc": (".bashrc", "/home/u", None),
        "/home/u/.config.json": (".config.json", "/home/u", "json"),
        "/tmp/a.": ("a.", "/tmp", None),
        "/tmp/a.b.c": ("a.b.c", "/tmp", "c"),
        "/x": ("x", "/", None),
        "/": (None, "/", None),
        "/tmp/dir.d/file": ("file", "/tmp/dir.d", None),
    }
    for path, (name, directory, ext) in cases.items():
        f = _file_doc(_file(path=path))["file"]
        assert f["path"] == path
        assert f.get("name") == name, path
        assert f.get("directory") == directory, path
        assert f.get("extension") == ext, path


def test_file_with_nothing_known_has_no_invented_fields() -> None:
    doc = _file_doc(File(op=FileOp.REMOVE, path=None))
    assert doc["file"] == {}
    assert doc["event"]["type"] == ["deletion"]
    assert doc["event"]["action"] == "file-deleted"
    nothing = File(op=None, path=None, change=None)  # type: ignore[arg-type]
    doc = _file_doc(nothing)
    assert doc["event"]["category"] == ["file"]
    assert doc["event"]["type"] == ["info"]
    assert doc["event"]["action"] == "file"
    assert doc["file"] == {}


def test_file_paths_that_are_not_utf8_make_valid_documents() -> None:
    f = _file(path="/tmp/\udcff.txt")
    text = _enc().encode(Event(events=EV.FILE, time=1, process=None, file=f))
    assert json.loads(text)["file"]["path"] == "/tmp/\ufffd.txt"


def test_a_move_puts_the_old_name_where_defend_does() -> None:
    doc = _file_doc(
        _file(op=FileOp.MOVE, path="/srv/new.conf", old_path="/tmp/old.cfg")
    )
    assert doc["event"]["type"] == ["change"]
    assert doc["event"]["action"] == "file-renamed"
    f = doc["file"]
    assert (f["path"], f["name"], f["extension"]) == (
        "/srv/new.conf", "new.conf", "conf",
    )  # fmt: skip
    assert f["Ext"] == {"original": {"path": "/tmp/old.cfg",
                                     "name": "old.cfg"}}  # fmt: skip
    doc = _file_doc(_file(op=FileOp.MOVE, path=None, old_path="/tmp/old"))
    assert "path" not in doc["file"]
    assert doc["file"]["Ext"]["original"]["path"] == "/tmp/old"


def test_a_symlink_has_its_target() -> None:
    doc = _file_doc(_file(path="/tmp/link", sym_target="../etc/passwd",
                          mode=0o120777))  # fmt: skip
    assert doc["file"]["target_path"] == "../etc/passwd"
    assert doc["file"]["type"] == "symlink"
    doc = _file_doc(File(op=FileOp.CREATE, path="/l", sym_target="/t"))
    assert doc["file"] == {"path": "/l", "name": "l", "directory": "/",
                           "type": "symlink", "target_path": "/t"}  # fmt: skip


def test_aggregated_file_ops_types_and_actions() -> None:
    C, M, R, V = FileOp.CREATE, FileOp.MODIFY, FileOp.REMOVE, FileOp.MOVE
    cases = [
        (C | M, ["creation", "change"], "file-created-written"),
        (M | R, ["change", "deletion"], "file-written-deleted"),
        (C | M | R, ["creation", "change", "deletion"],
         "file-created-written-deleted"),
        (C | V, ["creation", "change"], "file-created-renamed"),
        (M | V, ["change"], "file-written-renamed"),
        (C | M | V | R, ["creation", "change", "deletion"],
         "file-created-written-renamed-deleted"),
        (V | R, ["change", "deletion"], "file-renamed-deleted"),
    ]  # fmt: skip
    for op, types, action in cases:
        f = _file(op=op, change=FileChange.CONTENT)
        doc = _file_doc(f)
        assert doc["event"]["type"] == types, op
        assert doc["event"]["action"] == action, op
        assert file_action(f) == action


def test_attribute_only_modifies_are_not_writes() -> None:
    M = FileOp.MODIFY
    cases = [
        (FileChange.CONTENT, "file-written"),
        (FileChange.CONTENT | FileChange.TRUNCATE, "file-written"),
        (FileChange(0), "file-written"),  # not known: upstream's word
        (FileChange.PERMISSIONS, "file-attributes-changed"),
        (FileChange.OWNER, "file-attributes-changed"),
        (FileChange.PERMISSIONS | FileChange.OWNER | FileChange.XATTRS,
         "file-attributes-changed"),
        (FileChange.TRUNCATE | FileChange.OWNER,
         "file-written-attributes-changed"),
    ]  # fmt: skip
    for change, action in cases:
        doc = _file_doc(_file(op=M, change=change))
        assert doc["event"]["action"] == action, change
        assert doc["event"]["type"] == ["change"]
    f = _file(op=FileOp.CREATE | M | FileOp.REMOVE,
              change=FileChange.PERMISSIONS)  # fmt: skip
    assert file_action(f) == "file-created-attributes-changed-deleted"


def test_what_a_modify_changed_is_under_quark_file() -> None:
    change = FileChange.TRUNCATE | FileChange.CONTENT | FileChange(0x40)
    doc = _file_doc(_file(op=FileOp.MODIFY, change=change))
    assert doc["quark"] == {
        "file": {"change": ["CONTENT", "TRUNCATE", "0x40"]}
    }


def test_file_documents_have_no_network_fields() -> None:
    doc = _file_doc(_file())
    assert not {"network", "source", "destination", "dns"} & set(doc)


def test_file_and_shm_actions_without_a_payload() -> None:
    assert event_action(EV.FILE) == "file"
    assert event_action(EV.SHM) == "shared-memory-created"


def _shm_doc(shm: Shm) -> dict[str, Any]:
    ev = Event(events=EV.SHM, time=9, process=CHILD, shm=shm)
    doc: dict[str, Any] = json.loads(_enc().encode(ev))
    return doc


def test_shm_documents() -> None:
    doc = _shm_doc(Shm(ShmKind.SHMGET, key=0x1234, size=4096, flags=0o1600))
    assert doc["event"] == {
        "kind": "event", "category": ["process"], "type": ["info"],
        "action": "shared-memory-created",
    }  # fmt: skip
    assert doc["quark"]["shm"] == {
        "kind": "SHMGET", "key": 0x1234, "size": 4096, "flags": 0o1600,
    }  # fmt: skip
    assert doc["process"]["pid"] == 11
    assert "file" not in doc
    doc = _shm_doc(Shm(ShmKind.SHM_OPEN, flags=0o102, path="/dev/shm/x"))
    assert doc["quark"]["shm"] == {"kind": "SHM_OPEN", "flags": 0o102,
                                   "path": "/dev/shm/x"}  # fmt: skip
    doc = _shm_doc(Shm(ShmKind.MEMFD_CREATE, flags=1, path="memfd:y"))
    assert doc["quark"]["shm"] == {"kind": "MEMFD_CREATE", "flags": 1,
                                   "path": "memfd:y"}  # fmt: skip
    doc = _shm_doc(Shm(None))  # type: ignore[arg-type]
    assert doc["quark"] == {"shm": {}}
