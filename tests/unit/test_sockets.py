"""The socket cache's rules (quark.engine.sockets), one by one.

No kernel, no clock: times are passed in.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quark.engine.sockets import SocketCache
from quark.events import SockAddr, Socket, SockOrigin
from quark.raw.types import RawSock, SockOp

_ORIGIN_OF = {
    SockOp.CONNECT: SockOrigin.CONNECT,
    SockOp.ACCEPT: SockOrigin.ACCEPT,
}

MS = 1_000_000
GRACE = 4000 * MS

CLIENT = SockAddr.of("127.0.0.1", 40000)
SERVER = SockAddr.of("127.0.0.1", 8080)


def connect(
    local: SockAddr = CLIENT, remote: SockAddr = SERVER, net: int | None = 7
) -> RawSock:
    return RawSock(SockOp.CONNECT, local, remote, net_inonum=net)


def accept(
    local: SockAddr = SERVER, remote: SockAddr = CLIENT, net: int | None = 7
) -> RawSock:
    return RawSock(SockOp.ACCEPT, local, remote, net_inonum=net)


def close(
    local: SockAddr = CLIENT,
    remote: SockAddr = SERVER,
    sent: int | None = 10,
    received: int | None = 20,
    net: int | None = None,
) -> RawSock:
    return RawSock(SockOp.CLOSE, local, remote, sent, received, net_inonum=net)


def scraped(local: SockAddr, remote: SockAddr, pid: int | None) -> Socket:
    return Socket(local, remote, pid, pid, 5, None, SockOrigin.SCRAPE, None,
                  None, 7)  # fmt: skip


def test_connect_inserts_and_returns_the_snapshot() -> None:
    c = SocketCache(GRACE)
    s = c.apply(42, 100, connect())
    assert s == Socket(
        CLIENT, SERVER, 42, 42, 100, None, SockOrigin.CONNECT, None, None, 7
    )
    assert c.lookup(CLIENT, SERVER) is s
    assert c.lookup(SERVER, CLIENT) is None
    assert len(c) == 1
    assert c.next_collection() is None


def test_accept_is_its_own_origin() -> None:
    c = SocketCache(GRACE)
    s = c.apply(43, 100, accept())
    assert s is not None
    assert s.conn_origin is SockOrigin.ACCEPT
    assert (s.local, s.remote, s.pid_origin) == (SERVER, CLIENT, 43)


def test_close_records_closer_bytes_and_time() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect())
    s = c.apply(50, 300, close(sent=3, received=4))
    assert s is not None
    assert s.closed
    assert (s.pid_origin, s.pid_last_use) == (42, 50)
    assert (s.established_time, s.close_time) == (100, 300)
    assert (s.bytes_sent, s.bytes_received) == (3, 4)
    assert s.conn_origin is SockOrigin.CONNECT
    assert s.net_inonum == 7  # kept when the close does not say
    assert c.lookup(CLIENT, SERVER) == s
    assert c.next_collection() == 300 + GRACE


def test_close_net_inonum_wins_when_known() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect(net=None))
    s = c.apply(42, 200, close(net=9))
    assert s is not None and s.net_inonum == 9


def test_closed_socket_stays_for_the_grace_time() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect())
    c.apply(42, 200, close())
    assert c.collect(200 + GRACE - 1) == 0
    assert c.lookup(CLIENT, SERVER) is not None
    assert c.garbage_collections == 0
    assert c.collect(200 + GRACE) == 1
    assert c.lookup(CLIENT, SERVER) is None
    assert len(c) == 0
    assert c.garbage_collections == 1
    assert c.next_collection() is None
    assert c.collect(1 << 62) == 0


def test_open_sockets_are_never_collected() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect())
    c.seed([scraped(SERVER, SockAddr.of("0.0.0.0", 0), 1)])
    assert c.collect(1 << 62) == 0
    assert len(c) == 2


def test_collection_follows_due_times_not_arrival_order() -> None:
    c = SocketCache(GRACE)
    a = SockAddr.of("10.0.0.1", 1)
    b = SockAddr.of("10.0.0.2", 2)
    c.apply(1, 100, connect(a, SERVER))
    c.apply(2, 100, connect(b, SERVER))
    c.apply(2, 500, close(b, SERVER))
    c.apply(1, 300, close(a, SERVER))  # a late event: an earlier time
    assert c.next_collection() == 300 + GRACE
    assert c.collect(300 + GRACE) == 1
    assert c.lookup(a, SERVER) is None
    assert c.lookup(b, SERVER) is not None
    assert c.next_collection() == 500 + GRACE
    assert c.collect(500 + GRACE) == 1


def test_refused_connect_close_is_dropped() -> None:
    # elastic/ebpf#217: a CLOSE of a socket never seen, that moved nothing
    c = SocketCache(GRACE)
    assert c.apply(42, 100, close(sent=0, received=0)) is None
    assert c.apply(42, 100, close(sent=None, received=None)) is None
    assert c.apply(42, 100, close(sent=0, received=None)) is None
    assert len(c) == 0
    assert c.next_collection() is None


def test_close_of_an_unknown_socket_with_bytes_creates_it() -> None:
    c = SocketCache(GRACE)
    s = c.apply(42, 100, close(sent=0, received=5, net=3))
    assert s == Socket(CLIENT, SERVER, None, 42, None, 100, None, 0, 5, 3)
    assert c.lookup(CLIENT, SERVER) is s
    assert c.collect(100 + GRACE) == 1


def test_second_close_is_not_delivered() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect())
    first = c.apply(42, 200, close())
    assert c.apply(43, 250, close(sent=99, received=99)) is None
    assert c.lookup(CLIENT, SERVER) is first  # unchanged
    assert c.collect(200 + GRACE) == 1


def test_connect_replaces_a_closed_entry_in_its_grace_time() -> None:
    c = SocketCache(GRACE)
    c.apply(42, 100, connect())
    c.apply(42, 200, close())
    s = c.apply(44, 300, connect())  # the same 4-tuple, reused
    assert s is not None and not s.closed
    assert (s.pid_origin, s.established_time) == (44, 300)
    assert s.bytes_sent is None
    # the old close's collection must not take the new connection
    assert c.collect(200 + GRACE) == 0
    assert c.lookup(CLIENT, SERVER) is s
    assert c.garbage_collections == 0
    # and the new one closes and goes in its own time
    c.apply(44, 400, close())
    assert c.collect(400 + GRACE) == 1


def test_connect_replaces_a_live_stale_entry() -> None:
    # a lost CLOSE, or the scrape's view of this very connection
    c = SocketCache(GRACE)
    c.seed([scraped(CLIENT, SERVER, 42)])
    s = c.apply(42, 100, connect())
    assert s is not None
    assert s.conn_origin is SockOrigin.CONNECT
    assert c.lookup(CLIENT, SERVER) is s
    assert len(c) == 1


def test_seed_and_close_of_a_scraped_socket() -> None:
    c = SocketCache(GRACE)
    c.seed([scraped(CLIENT, SERVER, 42)])
    s = c.apply(43, 100, close(sent=1, received=2))
    assert s is not None
    assert s.conn_origin is SockOrigin.SCRAPE
    assert (s.pid_origin, s.pid_last_use) == (42, 43)
    assert (s.established_time, s.close_time) == (5, 100)


def test_seed_keeps_the_first_of_a_key() -> None:
    c = SocketCache(GRACE)
    any4 = SockAddr.of("0.0.0.0", 0)
    first = scraped(SERVER, any4, 10)
    c.seed([first, scraped(SERVER, any4, 11)])
    assert c.lookup(SERVER, any4) is first
    assert len(c) == 1


def test_iteration_order_is_numeric_and_family_first() -> None:
    c = SocketCache(GRACE)
    addrs = [
        SockAddr.of("::1", 5),
        SockAddr.of("10.0.0.2", 1),
        SockAddr.of("9.0.0.1", 80),
        SockAddr.of("9.0.0.1", 7),
        SockAddr.of("::ffff:127.0.0.1", 1),
    ]
    for i, a in enumerate(addrs):
        c.apply(i, 100, connect(a, SERVER))
    c.apply(9, 100, connect(addrs[2], CLIENT))
    got = [(s.local, s.remote) for s in c]
    assert got == [
        (SockAddr.of("9.0.0.1", 7), SERVER),
        (SockAddr.of("9.0.0.1", 80), SERVER),
        (SockAddr.of("9.0.0.1", 80), CLIENT),  # remote port 40000 > 8080
        (SockAddr.of("10.0.0.2", 1), SERVER),
        (SockAddr.of("::1", 5), SERVER),
        (SockAddr.of("::ffff:127.0.0.1", 1), SERVER),
    ]


ADDRS = st.sampled_from(
    [SockAddr.of(f"10.0.0.{i}", p) for i in range(3) for p in (1, 2)]
)
OPS = st.lists(
    st.tuples(
        st.sampled_from(list(SockOp)),
        ADDRS,
        ADDRS,
        st.integers(0, 2),
        st.integers(1, 50),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_invariants(
    ops: list[tuple[SockOp, SockAddr, SockAddr, int, int]],
) -> None:
    grace = 20
    c = SocketCache(grace)
    now = 0
    for op, local, remote, nbytes, step in ops:
        now += step
        before = c.lookup(local, remote)
        raw = RawSock(
            op, local, remote,
            nbytes if op is SockOp.CLOSE else None,
            nbytes if op is SockOp.CLOSE else None,
        )  # fmt: skip
        s = c.apply(1, now, raw)
        if op is SockOp.CLOSE:
            dropped = before.closed if before is not None else nbytes == 0
            if dropped:
                assert s is None
            else:
                assert s is not None and s.close_time == now
        elif (
            before is not None
            and not before.closed
            and before.pid_origin == 1
            and before.conn_origin is _ORIGIN_OF[op]
        ):
            assert s is None  # the same connection again: no repeat
        else:
            assert s is not None and not s.closed
        c.collect(now)
        due = c.next_collection()
        assert due is None or due > now
        for sock in c:
            assert c.lookup(sock.local, sock.remote) is sock
            # nothing closed longer ago than the grace time is left
            assert sock.close_time is None or now - sock.close_time < grace
        assert len(list(c)) == len(c)


def test_a_repeated_connect_is_not_a_second_connection() -> None:
    # connect(2) called again on a non-blocking socket returns 0 once the
    # handshake is done: the same connection, one ESTABLISHED
    c = SocketCache(10)
    a, b = SockAddr.of("127.0.0.1", 40000), SockAddr.of("127.0.0.1", 80)
    first = c.apply(7, 1, RawSock(SockOp.CONNECT, a, b))
    assert first is not None
    assert c.apply(7, 2, RawSock(SockOp.CONNECT, a, b)) is None
    assert c.lookup(a, b) is first
    # another process's connect on that pair after a close is new
    assert c.apply(7, 3, RawSock(SockOp.CLOSE, a, b, 0, 0)) is not None
    again = c.apply(8, 4, RawSock(SockOp.CONNECT, a, b))
    assert again is not None and again.pid_origin == 8
