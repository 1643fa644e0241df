"""A process's operations on one file aggregated, as upstream's ``_file``
matrix cell does (upstream.md §4.4): the FILE+FILE cell
(quark.engine.aggregate.agg_file), the merged record
(quark.engine.files.merge_files), and both through the engine."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quark import EV
from quark.engine import Engine, Held, default_matrix, min_matrix
from quark.engine.aggregate import agg_file
from quark.engine.files import merge_files
from quark.events import Event, File, FileChange, FileOp, PacketDirection
from quark.raw.types import RawEvent, RawKind, RawPacket

K = RawKind
C, M, R, MV = FileOp.CREATE, FileOp.MODIFY, FileOp.REMOVE, FileOp.MOVE
CONTENT = FileChange.CONTENT
FAR = 1 << 62


def fe(
    t: int,
    op: FileOp,
    path: str | None = "/tmp/x",
    pid: int = 42,
    **kw: object,
) -> RawEvent:
    return RawEvent(
        K.FILE,
        t,
        pid,
        payload=File(op, path, **kw),  # type: ignore[arg-type]
    )


def held(head: RawEvent, *agg: RawEvent) -> Held:
    h = Held()
    h.raw, h.time, h.kind, h.pid = head, head.time, head.kind, head.pid
    h.agg = list(agg)
    return h


def file_of(raw: RawEvent) -> File:
    assert isinstance(raw.payload, File)
    return raw.payload


def deliver(
    raws: list[RawEvent], *, min_agg: bool = False
) -> list[tuple[Event, list[RawEvent]]]:
    """Push ``raws`` (unique times), drain the engine, and give each event
    with the raw events it was made of: its head (the raw event of its
    time) and the next ones of its pid, as many as the engine removed.
    A FILE event's ``file`` is checked to be :func:`merge_files` of them."""
    e = Engine(hold_time=10, min_agg=min_agg)
    for r in raws:
        e.push(r)
    by_time = {r.time: r for r in raws}
    pending: dict[int, list[RawEvent]] = {}
    for r in sorted(raws, key=lambda r: r.time):
        pending.setdefault(r.pid, []).append(r)
    out: list[tuple[Event, list[RawEvent]]] = []
    removals = e.removals
    while (ev := e.pop(FAR)) is not None:
        n, removals = e.removals - removals, e.removals
        head = by_time[ev.time]
        lst = pending[head.pid]
        assert lst[0] is head
        group, pending[head.pid] = lst[:n], lst[n:]
        if group[0].kind == K.FILE:
            assert ev.file == merged(group)
        else:
            assert ev.file is None
        out.append((ev, group))
    assert e.length == 0 and not any(pending.values())
    return out


def merged(group: list[RawEvent]) -> File:
    return merge_files(file_of(group[0]), [file_of(r) for r in group[1:]])


def ops(out: list[tuple[Event, list[RawEvent]]]) -> list[FileOp]:
    return [merged(group).op for _, group in out]


# -- the cell -----------------------------------------------------------------


def test_cells() -> None:
    assert default_matrix()[K.FILE][K.FILE] is agg_file
    # upstream's base_agg_matrix_min has no FILE cell
    assert min_matrix()[K.FILE][K.FILE] is None


def test_modify_and_remove_join_a_create_or_modify() -> None:
    for head_op in (C, M):
        for child_op in (M, R):
            assert agg_file(held(fe(1, head_op)), fe(2, child_op))


def test_a_create_never_joins() -> None:
    assert not agg_file(held(fe(1, C)), fe(2, C))
    assert not agg_file(held(fe(1, M)), fe(2, C))


def test_nothing_joins_after_a_remove() -> None:
    assert not agg_file(held(fe(1, R)), fe(2, M))
    assert not agg_file(held(fe(1, C), fe(2, R)), fe(3, M))
    assert not agg_file(held(fe(1, C), fe(2, M), fe(3, R)), fe(4, R))
    assert agg_file(held(fe(1, C), fe(2, M), fe(3, M)), fe(4, R))


def test_a_move_neither_joins_nor_is_joined() -> None:
    move = fe(2, MV, "/tmp/y", old_path="/tmp/x", inode=5)
    assert not agg_file(held(fe(1, C, inode=5)), move)
    assert not agg_file(held(move), fe(3, M, "/tmp/y", inode=5))
    assert not agg_file(held(move), fe(3, R, "/tmp/y", inode=5))


def test_the_same_file_by_inode_else_by_path() -> None:
    # both know the inode: it decides, whatever the paths say
    assert agg_file(held(fe(1, C, inode=5)), fe(2, M, "/tmp/link", inode=5))
    assert not agg_file(held(fe(1, C, inode=5)), fe(2, M, inode=6))
    # one does not: the path decides
    assert agg_file(held(fe(1, C, inode=5)), fe(2, R))
    assert agg_file(held(fe(1, C)), fe(2, M, inode=5))
    assert not agg_file(held(fe(1, C, inode=5)), fe(2, R, "/tmp/other"))
    # a path of None never matches
    assert not agg_file(held(fe(1, C, None)), fe(2, M, None))
    assert not agg_file(held(fe(1, C, None, inode=5)), fe(2, R))


def test_the_last_child_decides_what_the_head_cannot() -> None:
    head = fe(1, C, None, inode=5)  # knows the inode only
    mod = fe(2, M, "/tmp/x", inode=5)
    assert agg_file(held(head, mod), fe(3, R, "/tmp/x"))
    assert not agg_file(held(head, mod), fe(3, R, "/tmp/other"))
    # but never against the head: another inode at the same path is not it
    assert not agg_file(held(fe(1, C, inode=5), fe(2, M)), fe(3, M, inode=6))


def test_only_file_payloads() -> None:
    pkt = RawPacket(PacketDirection.EGRESS, "dns", 1, b"")
    other = RawEvent(K.FILE, 2, 42, payload=pkt)
    assert not agg_file(held(fe(1, C)), other)
    assert not agg_file(held(other), fe(3, M))


# -- the merged record --------------------------------------------------------


def test_merge_files_mkstemp_like() -> None:
    create = File(C, "/tmp/tmpab12", inode=9, mode=0o100600, size=0,
                  uid=1000, gid=1000, atime=1, mtime=1, ctime=1)  # fmt: skip
    writes = [
        File(M, "/tmp/tmpab12", inode=9, mode=0o100600, size=10 * i,
             uid=1000, gid=1000, atime=1, mtime=1 + i, ctime=1 + i,
             change=CONTENT)
        for i in range(1, 6)
    ]  # fmt: skip
    unlink = File(R, "/tmp/tmpab12")  # by path: knows no stat
    f = merge_files(create, [*writes, unlink])
    assert f == File(
        C | M | R, "/tmp/tmpab12", inode=9, mode=0o100600, size=50,
        uid=1000, gid=1000, atime=1, mtime=6, ctime=6, change=CONTENT,
    )  # fmt: skip


def test_merge_files_members() -> None:
    head = File(C, None, inode=1, size=0)
    f = merge_files(
        head,
        [
            File(M, "/a", size=3, change=CONTENT | FileChange.TRUNCATE),
            File(M, "/b", mode=0o644, change=FileChange.PERMISSIONS),
            File(M, None, uid=7, change=FileChange.OWNER),
        ],
    )
    assert f.op == C | M
    assert f.change == (
        CONTENT | FileChange.TRUNCATE | FileChange.PERMISSIONS
        | FileChange.OWNER
    )  # fmt: skip
    # the head's names unless None, then the first child's that knows one
    assert f.path == "/a" and f.old_path is None and f.sym_target is None
    # each stat member from the last operation that knows it
    assert (f.inode, f.size, f.mode, f.uid, f.gid) == (1, 3, 0o644, 7, None)
    assert merge_files(File(C, "/h"), [File(M, "/a")]).path == "/h"
    assert merge_files(head, []) is head


# -- through the engine -------------------------------------------------------


def mkstemp_like(
    pid: int = 42, t0: int = 1000, step: int = 1
) -> list[RawEvent]:
    """mkstemp, 5 writes and an unlink, ``step`` ns apart."""
    path = "/tmp/tmpab12"
    return [
        fe(t0, C, path, pid, inode=9, size=0),
        *(
            fe(
                t0 + i * step,
                M,
                path,
                pid,
                inode=9,
                size=10 * i,
                change=CONTENT,
            )
            for i in range(1, 6)
        ),
        fe(t0 + 6 * step, R, path, pid),
    ]


def test_mkstemp_five_writes_unlink_is_one_event() -> None:
    out = deliver(mkstemp_like())
    assert len(out) == 1
    ev, group = out[0]
    assert ev.events == EV.FILE and ev.time == 1000 and len(group) == 7
    f = merged(group)
    assert (f.op, f.change, f.size, f.inode) == (C | M | R, CONTENT, 50, 9)
    assert f.path == "/tmp/tmpab12"


def test_a_move_between_splits() -> None:
    out = deliver(
        [
            fe(1, C, "/tmp/x", inode=5),
            fe(2, M, "/tmp/x", inode=5, change=CONTENT),
            fe(3, MV, "/tmp/y", old_path="/tmp/x", inode=5),
            fe(4, M, "/tmp/y", inode=5, change=CONTENT),
            fe(5, R, "/tmp/y"),
        ]
    )
    assert ops(out) == [C | M, MV, M | R]
    move = merged(out[1][1])
    assert (move.path, move.old_path) == ("/tmp/y", "/tmp/x")
    assert [merged(g).path for _, g in out] == ["/tmp/x", "/tmp/y", "/tmp/y"]


def test_two_files_never_merge() -> None:
    out = deliver(
        [
            fe(1, C, "/tmp/a", inode=1),
            fe(2, M, "/tmp/a", inode=1),
            fe(3, C, "/tmp/b", inode=2),
            fe(4, M, "/tmp/b", inode=2),
            fe(5, M, "/tmp/a", inode=1),  # after b's: a new event
            fe(6, M, "/tmp/c", inode=1),  # a's inode, another name: a's
            fe(7, M, "/tmp/b"),
            fe(8, R, "/tmp/a"),  # not b's
        ]
    )
    assert [[r.time for r in g] for _, g in out] == [
        [1, 2], [3, 4], [5, 6], [7], [8],
    ]  # fmt: skip
    assert ops(out) == [C | M, C | M, M, M, R]


def test_remove_then_create_of_one_path_are_two_events() -> None:
    out = deliver(
        [
            fe(1, C, inode=5),
            fe(2, R),
            fe(3, C, inode=6),
            fe(4, M, inode=6),
            fe(5, R),
            fe(6, C),
        ]
    )
    assert ops(out) == [C | R, C | M | R, C]
    assert [merged(g).inode for _, g in out] == [5, 6, None]


def test_other_processes_and_kinds_interleave() -> None:
    # each process's file events merge on their own; a pid's other raw
    # event (here a COMM) ends its file event, as upstream's walk does
    raws = [
        *mkstemp_like(pid=42, t0=1000, step=2),
        *mkstemp_like(pid=43, t0=1001, step=2),
    ]
    out = deliver(raws)
    assert [len(g) for _, g in out] == [7, 7]
    split = deliver(
        [fe(1, C), RawEvent(K.COMM, 2, 42, comm="x"), fe(3, M), fe(4, R)]
    )
    assert [ev.events for ev, _ in split] == [EV.FILE, EV.SETPROCTITLE,
                                             EV.FILE]  # fmt: skip


def test_min_agg_does_not_merge_files() -> None:
    out = deliver(mkstemp_like(), min_agg=True)
    assert ops(out) == [C, M, M, M, M, M, R]


# -- the property -------------------------------------------------------------

OPS = st.sampled_from([C, M, R, MV])
FILES = st.sampled_from([("/tmp/a", 1), ("/tmp/b", 2), (None, 1)])


@st.composite
def streams(draw: st.DrawFn) -> list[RawEvent]:
    n = draw(st.integers(1, 30))
    out = []
    for i in range(n):
        op = draw(OPS)
        path, inode = draw(FILES)
        knows_inode = draw(st.booleans())
        pid = draw(st.sampled_from([42, 43]))
        out.append(
            fe(
                100 + i, op, path, pid,
                inode=inode if knows_inode else None,
                old_path="/tmp/old" if op is MV else None,
                size=i,
            )
        )  # fmt: skip
    return out


@settings(max_examples=300, deadline=None)
@given(raws=streams())
def test_merging_never_loses_an_op(raws: list[RawEvent]) -> None:
    out = deliver(raws)
    assert sum(len(g) for _, g in out) == len(raws)
    total = FileOp(0)
    for ev, group in out:
        assert ev.events == EV.FILE
        f = merged(group)
        total |= f.op
        for r in group:
            # every raw op is in its event
            assert file_of(r).op & f.op == file_of(r).op
        # upstream's order: CREATE|MODIFY, then MODIFY|REMOVE; a MOVE alone
        head, children = file_of(group[0]), [file_of(r) for r in group[1:]]
        if children:
            assert head.op in (C, M)
            assert all(c.op in (M, R) for c in children)
            assert all(c.op is M for c in children[:-1])
            assert len({r.pid for r in group}) == 1
            assert f.path is not None or f.inode is not None
    expected = FileOp(0)
    for r in raws:
        expected |= file_of(r).op
    assert total == expected
