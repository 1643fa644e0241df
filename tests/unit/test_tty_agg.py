"""A process's consecutive writes to one terminal joined into one TTY
event, as upstream's ``_tty`` matrix cell does (upstream.md §4.4): the
TTY+TTY cell (quark.engine.aggregate.agg_tty), the joined record
(quark.engine.join_tty), and both through the engine."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quark import EV, Event, File, FileOp, Tty
from quark.engine import Engine, Held, default_matrix, join_tty, min_matrix
from quark.engine.aggregate import TTY_JOIN_BYTES, TTY_JOIN_WRITES, agg_tty
from quark.raw.types import RawEvent, RawKind

K = RawKind
FAR = 1 << 62


def tty(
    data: bytes = b"x",
    *,
    major: int = 136,
    minor: int = 3,
    truncated: int = 0,
    cols: int = 80,
    rows: int = 24,
) -> Tty:
    return Tty(
        major=major, minor=minor, cols=cols, rows=rows, iflag=0x500,
        oflag=5, cflag=0xBF, lflag=0x8A3B, data=data, truncated=truncated,
    )  # fmt: skip


def tw(t: int, data: bytes = b"x", pid: int = 42, **kw: int) -> RawEvent:
    """A write to a terminal at time ``t``."""
    return RawEvent(K.TTY, t, pid, payload=tty(data, **kw))


def held(head: RawEvent, *agg: RawEvent) -> Held:
    h = Held()
    h.raw, h.time, h.kind, h.pid = head, head.time, head.kind, head.pid
    h.agg = list(agg)
    return h


def deliver(
    raws: list[RawEvent], *, min_agg: bool = False
) -> list[tuple[Event, int]]:
    """Push ``raws`` (unique times), drain the engine: each event with how
    many raw events it was made of."""
    e = Engine(hold_time=10, min_agg=min_agg)
    for r in raws:
        e.push(r)
    out = []
    removals = e.removals
    while (ev := e.pop(FAR)) is not None:
        out.append((ev, e.removals - removals))
        removals = e.removals
    assert e.length == 0
    return out


def datas(out: list[tuple[Event, int]]) -> list[bytes]:
    result = []
    for ev, _ in out:
        assert ev.tty is not None
        result.append(ev.tty.data)
    return result


# -- the cell -----------------------------------------------------------------


def test_cells() -> None:
    assert default_matrix()[K.TTY][K.TTY] is agg_tty
    # upstream's base_agg_matrix_min has no TTY cell
    assert min_matrix()[K.TTY][K.TTY] is None
    # nothing else joins a write, and a write joins nothing else
    m = default_matrix()
    assert [k for k in K if m[K.TTY][k] is not None] == [K.TTY]
    assert [k for k in K if m[k][K.TTY] is not None] == [K.TTY]


def test_the_cell() -> None:
    assert agg_tty(held(tw(1)), tw(2))
    assert agg_tty(held(tw(1), tw(2)), tw(3))
    # another terminal: another major, or another minor
    assert not agg_tty(held(tw(1)), tw(2, major=4))
    assert not agg_tty(held(tw(1)), tw(2, minor=4))
    # a truncated write neither joins nor is joined
    assert not agg_tty(held(tw(1)), tw(2, truncated=1))
    assert not agg_tty(held(tw(1, truncated=1)), tw(2))
    # the window and modes of later writes do not matter
    assert agg_tty(held(tw(1)), tw(2, cols=132, rows=50))


def test_the_cell_limits() -> None:
    half = TTY_JOIN_BYTES // 2
    assert agg_tty(held(tw(1, b"a" * half)), tw(2, b"b" * (half - 1)))
    assert not agg_tty(held(tw(1, b"a" * half)), tw(2, b"b" * half))
    three = [tw(i, b"a" * 1000) for i in range(3)]
    assert agg_tty(held(*three), tw(4, b"b" * 1095))
    assert not agg_tty(held(*three), tw(4, b"b" * 1096))
    ones = [tw(i) for i in range(TTY_JOIN_WRITES - 1)]
    assert agg_tty(held(*ones), tw(100))
    assert not agg_tty(held(*ones, tw(99)), tw(100))


def test_only_tty_payloads() -> None:
    other = RawEvent(K.TTY, 2, 42, payload=File(FileOp.CREATE, "/x"))
    assert not agg_tty(held(tw(1)), other)
    assert not agg_tty(held(other), tw(3))


def test_join_tty_keeps_the_first_writes_terminal() -> None:
    head = tty(b"ab", cols=80, rows=24)
    joined = join_tty(head, [tty(b"cd", cols=100, rows=30), tty(b"")])
    assert joined == tty(b"abcd", cols=80, rows=24)
    assert head.data == b"ab"  # a new record, the head unchanged


# -- through the engine -------------------------------------------------------


def test_consecutive_writes_are_one_event() -> None:
    out = deliver([tw(1000, b"hello "), tw(1001, b"there"), tw(1002, b"\n")])
    assert len(out) == 1
    ev, n = out[0]
    assert n == 3
    assert ev.events == EV.TTY and ev.time == 1000
    assert ev.tty == tty(b"hello there\n")
    assert ev.file is None and ev.ptrace is None and ev.bypass is None


def test_joined_bytes_stay_under_the_limit() -> None:
    kb = b"k" * 1000
    out = deliver([tw(t, kb) for t in range(1, 11)])  # 10,000 bytes
    assert [n for _, n in out] == [4, 4, 2]
    assert all(len(d) < TTY_JOIN_BYTES for d in datas(out))
    assert b"".join(datas(out)) == kb * 10


def test_at_most_64_writes_are_joined() -> None:
    out = deliver([tw(t, b"%d" % (t % 10)) for t in range(1, 151)])
    assert [n for _, n in out] == [64, 64, 22]
    assert b"".join(datas(out)) == b"".join(
        b"%d" % (t % 10) for t in range(1, 151)
    )


def test_no_join_across_terminals() -> None:
    out = deliver(
        [
            tw(1, b"a", minor=3),
            tw(2, b"b", minor=4),
            tw(3, b"c", minor=3),  # not consecutive with the first
            tw(4, b"d", major=4, minor=3),
        ]
    )
    assert datas(out) == [b"a", b"b", b"c", b"d"]
    assert [(ev.tty.major, ev.tty.minor) for ev, _ in out if ev.tty] == [
        (136, 3), (136, 4), (136, 3), (4, 3),
    ]  # fmt: skip


def test_no_join_across_processes() -> None:
    out = deliver(
        [
            tw(1, b"a1", pid=1),
            tw(2, b"b1", pid=2),
            tw(3, b"a2", pid=1),
            tw(4, b"b2", pid=2),
        ]
    )
    # each process's writes are joined, never with the other's
    assert [(ev.process, ev.time, n) for ev, n in out] == [
        (None, 1, 2),
        (None, 2, 2),
    ]
    assert datas(out) == [b"a1a2", b"b1b2"]


def test_no_join_of_truncated_writes() -> None:
    out = deliver(
        [
            tw(1, b"a"),
            tw(2, b"b" * 8192, truncated=1808),
            tw(3, b"c"),
            tw(4, b"d"),
        ]
    )
    assert [n for _, n in out] == [1, 1, 2]
    assert [ev.tty.truncated for ev, _ in out if ev.tty] == [0, 1808, 0]
    assert datas(out)[2] == b"cd"


def test_another_kind_in_between_ends_the_join() -> None:
    file = RawEvent(K.FILE, 2, 42, payload=File(FileOp.CREATE, "/tmp/x"))
    out = deliver([tw(1, b"a"), file, tw(3, b"b")])
    assert [ev.events for ev, _ in out] == [EV.TTY, EV.FILE, EV.TTY]


def test_min_agg_joins_nothing() -> None:
    out = deliver([tw(t) for t in range(1, 6)], min_agg=True)
    assert [n for _, n in out] == [1] * 5
    assert all(ev.events == EV.TTY for ev, _ in out)


# -- the whole rule, against a model ------------------------------------------

WRITES = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),  # pid
        st.sampled_from([(136, 0), (136, 1), (4, 1)]),  # terminal
        st.integers(0, 2500),  # bytes
        st.sampled_from([0, 0, 0, 7]),  # truncated
    ),
    max_size=60,
)


def _model(writes: list[tuple[int, tuple[int, int], int, int]]) -> list[int]:
    """How many writes each event of one process holds: joined greedily
    while the terminal is the same, none is truncated, the bytes stay
    under TTY_JOIN_BYTES and the writes at most TTY_JOIN_WRITES."""
    groups: list[list[tuple[int, tuple[int, int], int, int]]] = []
    for w in writes:
        if groups:
            g = groups[-1]
            if (
                not w[3]
                and not g[0][3]
                and w[1] == g[0][1]
                and len(g) < TTY_JOIN_WRITES
                and sum(x[2] for x in g) + w[2] < TTY_JOIN_BYTES
            ):
                g.append(w)
                continue
        groups.append([w])
    return [len(g) for g in groups]


@settings(max_examples=200, deadline=None)
@given(writes=WRITES)
def test_joins_follow_the_rule(
    writes: list[tuple[int, tuple[int, int], int, int]],
) -> None:
    raws = [
        tw(t + 1, bytes([t % 256]) * n, pid=pid, major=term[0],
           minor=term[1], truncated=trunc)
        for t, (pid, term, n, trunc) in enumerate(writes)
    ]  # fmt: skip
    out = deliver(raws)
    for pid in (1, 2):
        mine = [w for w in writes if w[0] == pid]
        events = [
            (ev, n) for ev, n in out if ev.tty and raws[ev.time - 1].pid == pid
        ]
        assert [n for _, n in events] == _model(mine)
        got = b"".join(ev.tty.data for ev, _ in events if ev.tty)
        assert got == b"".join(
            r.payload.data
            for r in raws
            if r.pid == pid and isinstance(r.payload, Tty)
        )
