"""Integration cases of the network kinds (``QQ.SOCK_CONN``, ``QQ.DNS``).

Everything runs over loopback, in both families, between this process and
forked children, so every pid an event names is known. Clients and
servers pass bytes in exact, different amounts each way, so that a byte
count read from the wrong side, or off by a FIN, shows.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Callable

import quark
from quark import EV, QQ, Event, SockAddr, SockOrigin
from quark.selftest import case

DEADLINE = 10.0
A_BYTES = 3001  # client -> server
B_BYTES = 517  # server -> client


def _queue(backend: str, flags: QQ) -> quark.Queue:
    return quark.Queue(backend=backend, flags=flags, hold_time=100)


def _collect(
    q: quark.Queue,
    done: Callable[[list[Event]], bool],
    keep: Callable[[Event], bool],
    timeout: float = DEADLINE,
) -> list[Event]:
    """Delivered events that ``keep`` selects, in order, until ``done``."""
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = q.get_event()
        if ev is None:
            if done(got):
                return got
            q.block(0.05)
            continue
        if keep(ev):
            got.append(ev)
    raise AssertionError(
        f"timed out after {timeout}s; got {[_brief(e) for e in got]}"
    )


def _brief(ev: Event) -> str:
    s = ev.socket
    where = f" {s.local}->{s.remote}" if s is not None else ""
    return f"{ev.events!s}@{ev.pid}{where}"


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            child()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _listener(family: int, host: str) -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(8)
    return srv


def _addr(sockname: tuple[str, int] | tuple[str, int, int, int]) -> SockAddr:
    return SockAddr.of(sockname[0], sockname[1])


def _socks(evs: list[Event], local: SockAddr) -> list[Event]:
    return [e for e in evs if e.socket is not None and e.socket.local == local]


def _one_of(evs: list[Event], bit: EV) -> Event:
    hits = [e for e in evs if e.events & bit]
    assert len(hits) == 1, f"expected one {bit!s}: {[_brief(e) for e in evs]}"
    return hits[0]


# (client family, client's view of the server's host, server family, host)
_FAMILIES = (
    ("ipv4", socket.AF_INET, "127.0.0.1", socket.AF_INET, "127.0.0.1"),
    ("ipv6", socket.AF_INET6, "::1", socket.AF_INET6, "::1"),
    ("v4-mapped", socket.AF_INET6, "::ffff:127.0.0.1", socket.AF_INET,
     "127.0.0.1"),
)  # fmt: skip


@case(backends=("ebpf",))
def t_sock_conn(backend: str) -> None:
    """TCP over loopback in IPv4, IPv6 and v4-mapped IPv6: ESTABLISHED for
    the client (CONNECT) and the server (ACCEPT), CLOSED for both with the
    exact bytes each way, one event each (a mapped connect is not
    doubled); a refused connect makes no event; connections open before
    the queue are in its cache from the /proc scrape, and their close is
    reported."""
    old_srv = _listener(socket.AF_INET, "127.0.0.1")
    old_cli = socket.create_connection(old_srv.getsockname()[:2])
    old_acc, _ = old_srv.accept()
    with _queue(backend, QQ.SOCK_CONN) as q:
        me = os.getpid()
        # -- the scrape at open
        cli_local = _addr(old_cli.getsockname())
        cli_remote = _addr(old_cli.getpeername())
        scraped = q.lookup_socket(cli_local, cli_remote)
        assert scraped is not None, f"{cli_local}->{cli_remote} not scraped"
        assert scraped.conn_origin is SockOrigin.SCRAPE
        assert scraped.pid_origin == me
        assert q.lookup_socket(cli_remote, cli_local) is not None  # accepted
        listen_at = _addr(old_srv.getsockname())
        assert any(
            s.local == listen_at and s.remote.port == 0 for s in q.sockets()
        ), f"listener {listen_at} not scraped"
        old_cli.close()
        old_acc.close()
        old_srv.close()

        # -- a refused connect: a port nobody listens on. The socket that
        # found it stays bound (never listening: a connect is refused)
        # until the runs are done, or a listener below could be given the
        # same port and its connection taken for the refused one's
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        refused_port = probe.getsockname()[1]
        try:
            socket.create_connection(("127.0.0.1", refused_port), timeout=5)
            raise AssertionError(f"port {refused_port} accepted")
        except ConnectionRefusedError:
            pass

        # -- one exchange per family
        runs = []
        for label, cfam, chost, sfam, shost in _FAMILIES:
            srv = _listener(sfam, shost)
            port = srv.getsockname()[1]
            r, w = os.pipe()

            def client(
                cfam: int = cfam,
                chost: str = chost,
                port: int = port,
                w: int = w,
            ) -> None:
                c = socket.socket(cfam, socket.SOCK_STREAM)
                c.connect((chost, port))
                lport = c.getsockname()[1]
                os.write(w, struct.pack("=H", lport))
                c.sendall(b"a" * A_BYTES)
                assert len(_recv_exact(c, B_BYTES)) == B_BYTES
                c.close()

            pid = _fork(client)
            os.close(w)
            conn, peer = srv.accept()
            assert len(_recv_exact(conn, A_BYTES)) == A_BYTES
            conn.sendall(b"b" * B_BYTES)
            assert conn.recv(1) == b""  # the client closed first
            conn.close()
            srv.close()
            (lport,) = struct.unpack("=H", os.read(r, 2))
            os.close(r)
            assert _reap(pid) == 0, f"{label} client failed"
            server_end = _addr(conn_name := peer)  # the client, seen here
            del conn_name
            runs.append((label, pid, chost, port, lport, server_end))

        probe.close()
        ports = {port for *_, port, _, _ in runs}
        ports |= {refused_port, listen_at.port}

        def ours(ev: Event) -> bool:
            s = ev.socket
            return s is not None and (
                s.local.port in ports or s.remote.port in ports
            )

        def complete(evs: list[Event]) -> bool:
            closed = [e for e in evs if e.events & EV.SOCK_CONN_CLOSED]
            return len(closed) >= 2 * len(runs) + 2  # and the scraped

        evs = _collect(q, complete, ours)
        time.sleep(0.2)  # anything more (a double event) would show now
        while (ev := q.get_event()) is not None:
            if ours(ev):
                evs.append(ev)

    refused = _addr(("127.0.0.1", refused_port))
    stray = [
        (_brief(e), e.socket) for e in evs
        if e.socket is not None
        and refused in (e.socket.local, e.socket.remote)
    ]  # fmt: skip
    assert not stray, f"a refused connect made events: {stray}"
    for label, pid, chost, port, lport, seen_by_server in runs:
        client_local = _addr((chost, lport))
        client_evs = _socks(evs, client_local)
        up = _one_of(client_evs, EV.SOCK_CONN_ESTABLISHED)
        down = _one_of(client_evs, EV.SOCK_CONN_CLOSED)
        assert up.pid == pid and up.socket is not None, (label, _brief(up))
        assert up.socket.conn_origin is SockOrigin.CONNECT, label
        assert up.socket.pid_origin == pid, label
        assert up.socket.remote == _addr((chost, port)), (label, up.socket)
        assert down.socket is not None and down.pid == pid, label
        assert (down.socket.bytes_sent, down.socket.bytes_received) == (
            A_BYTES, B_BYTES,
        ), (label, down.socket)  # fmt: skip
        assert down.socket.close_time is not None
        assert down.time >= up.time
        # the server's end: the accepted socket, local = the listener's
        # address, remote = the client as the server saw it
        server_evs = [
            e for e in evs
            if e.socket is not None and e.socket.remote == seen_by_server
        ]  # fmt: skip
        acc = _one_of(server_evs, EV.SOCK_CONN_ESTABLISHED)
        fin = _one_of(server_evs, EV.SOCK_CONN_CLOSED)
        assert acc.pid == me and acc.socket is not None, label
        assert acc.socket.conn_origin is SockOrigin.ACCEPT, label
        assert fin.socket is not None and fin.pid == me, label
        assert (fin.socket.bytes_sent, fin.socket.bytes_received) == (
            B_BYTES, A_BYTES,
        ), (label, fin.socket)  # fmt: skip
    closed_old = [
        e for e in evs
        if e.socket is not None and e.socket.local == cli_local
    ]  # fmt: skip
    assert [e.events for e in closed_old] == [EV.SOCK_CONN_CLOSED]
    assert closed_old[0].socket.conn_origin is SockOrigin.SCRAPE  # type: ignore[union-attr]


@case(backends=("ebpf",))
def t_sock_exit(backend: str) -> None:
    """A connection its process never closes is CLOSED when the process
    exits, and when it is SIGKILLed, and that CLOSED comes before the
    process's EXIT; an idle connection's close carries zero bytes."""
    srv = _listener(socket.AF_INET, "127.0.0.1")
    port = srv.getsockname()[1]
    # the children wait on a pipe, not on the socket: it stays idle
    r, w = os.pipe()
    with _queue(backend, QQ.SOCK_CONN) as q:

        def exits() -> None:
            os.close(w)
            c = socket.create_connection(("127.0.0.1", port))
            os.read(r, 1)  # until the parent says: exit with it open
            os._exit(0 if c.fileno() >= 0 else 1)

        def sleeps() -> None:
            os.close(w)
            c = socket.create_connection(("127.0.0.1", port))
            time.sleep(60)
            c.close()

        quitter = _fork(exits)
        a1, _ = srv.accept()
        killed = _fork(sleeps)
        a2, _ = srv.accept()
        os.close(r)
        os.write(w, b"x")
        os.close(w)
        assert _reap(quitter) == 0
        time.sleep(0.2)
        os.kill(killed, signal.SIGKILL)
        assert _reap(killed) == -signal.SIGKILL
        pids = {quitter, killed}

        def done(evs: list[Event]) -> bool:
            return all(
                any(e.events & EV.EXIT and e.pid == p for e in evs)
                for p in pids
            )

        evs = _collect(q, done, lambda e: e.pid in pids)
    a1.close()
    a2.close()
    srv.close()
    for pid, code in ((quitter, 0), (killed, -signal.SIGKILL)):
        mine = [e for e in evs if e.pid == pid]
        order = [_brief(e) for e in mine]
        up = _one_of(mine, EV.SOCK_CONN_ESTABLISHED)
        down = _one_of(mine, EV.SOCK_CONN_CLOSED)
        end = _one_of(mine, EV.EXIT)
        assert mine.index(up) < mine.index(down) < mine.index(end), order
        assert up.socket is not None and down.socket is not None
        assert down.socket.local == up.socket.local, order
        assert (down.socket.bytes_sent, down.socket.bytes_received) == (
            0, 0,
        ), down.socket  # fmt: skip
        assert end.process is not None, order
        assert end.process.exit_code == code, (code, end.process)


def _dns_server(
    ready: int, hosts: list[tuple[socket.AddressFamily, str]]
) -> None:
    import dns.message
    import dns.rrset

    socks = []
    for family, host in hosts:
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, 53))
        socks.append(s)
    os.write(ready, b"!")
    for s in socks:
        data, peer = s.recvfrom(4096)
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        answer.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                "192.0.2.7")
        )  # fmt: skip
        s.sendto(answer.to_wire(), peer)
        s.close()


def _dns_payload(data: bytes) -> bytes:
    """The UDP payload of a captured IPv4 or IPv6 packet."""
    if data[0] >> 4 == 4:
        return data[(data[0] & 0xF) * 4 + 8 :]
    return data[40 + 8 :]


@case(backends=("ebpf",))
def t_dns(backend: str) -> None:
    """A DNS query and its answer over 127.0.0.1:53 and [::1]:53: four
    packets each (EGRESS and INGRESS, both ways), each with the pid of the
    socket's owner, data from the IP header, and the question decodable."""
    import dns.message

    hosts = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
    names = ["quark-v4.example.", "quark-v6.example."]
    with _queue(backend, QQ.DNS) as q:
        r, w = os.pipe()
        server = _fork(lambda: _dns_server(w, hosts))
        os.close(w)
        assert os.read(r, 1) == b"!"
        os.close(r)
        me = os.getpid()
        for (family, host), name in zip(hosts, names, strict=True):
            c = socket.socket(family, socket.SOCK_DGRAM)
            c.settimeout(5)
            c.sendto(dns.message.make_query(name, "A").to_wire(), (host, 53))
            reply = dns.message.from_wire(c.recv(4096))
            assert str(reply.answer[0].name) == name
            c.close()
        assert _reap(server) == 0
        evs = _collect(
            q,
            lambda evs: len(evs) >= 8,
            lambda e: e.packet is not None and e.pid in (me, server),
        )
    for (family, _), name in zip(hosts, names, strict=True):
        version = 4 if family == socket.AF_INET else 6
        mine = []
        for e in evs:
            p = e.packet
            assert p is not None
            if p.data[0] >> 4 != version:
                continue
            msg = dns.message.from_wire(_dns_payload(p.data))
            if str(msg.question[0].name) == name:
                assert p.orig_len == len(p.data), p
                assert p.origin == "dns"
                mine.append((p.direction.name, e.pid, bool(msg.answer)))
        assert sorted(mine) == sorted([
            ("EGRESS", me, False), ("INGRESS", server, False),
            ("EGRESS", server, True), ("INGRESS", me, True),
        ]), (name, mine)  # fmt: skip


@case(backends=("kprobe",))
def t_kinds_refused(backend: str) -> None:
    """The kprobe backend refuses the network, file and shared-memory
    kinds at open, naming the kind and why (and the terminal, ptrace,
    module and getpid kinds, which it does not implement), and its
    capability report says the same."""
    for kind in (QQ.SOCK_CONN, QQ.DNS, QQ.FILE, QQ.SHM, QQ.TTY, QQ.PTRACE,
                 QQ.MODULE_LOAD, QQ.GETPID):  # fmt: skip
        try:
            with _queue(backend, kind):
                pass
        except quark.NotSupportedError as e:
            assert f"QQ.{kind.name}" in str(e), str(e)
        else:
            raise AssertionError(f"kprobe opened with QQ.{kind.name}")
    with quark.Queue(backend=backend, hold_time=100) as q:
        caps = q.capabilities()
    for kind in (QQ.SOCK_CONN, QQ.DNS, QQ.FILE, QQ.SHM):
        why = caps[kind]
        assert why is not None and "BPF" in why, (kind, why)
