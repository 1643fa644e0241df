"""The aggregation matrix (upstream ``base_agg_matrix``).

A cell ``matrix[parent][child]`` is a callback ``fn(head, child) -> bool``
deciding whether the raw event ``child`` merges into the :class:`Held`
``head`` (whose already merged raw events are ``head.agg``), or ``None``
for "never". The matrix is always indexed by the head's kind, as upstream
does.
"""

from __future__ import annotations

from collections.abc import Callable

from quark.events import File, FileOp, Tty
from quark.raw.types import RAW_NUM_TYPES, RawEvent, RawKind

__all__ = [
    "AggFn",
    "Held",
    "Matrix",
    "agg_file",
    "agg_fork_exec",
    "agg_mult",
    "agg_single",
    "agg_tty",
    "default_matrix",
    "min_matrix",
]


class Held:
    """A raw event as the engine releases it, what a callback sees.

    The engine's own record, so that the backends' :class:`RawEvent` is
    never changed: ``raw`` is that event, ``time`` its time after the
    collision bump (unique in the queue, the Event's time), ``kind`` and
    ``pid`` its own, ``agg`` the raw events merged into it so far, in
    order.
    """

    __slots__ = ("agg", "kind", "pid", "raw", "time")

    # made by the engine only
    raw: RawEvent
    time: int
    kind: RawKind
    pid: int
    agg: list[RawEvent]

    def __repr__(self) -> str:
        return f"Held(time={self.time}, raw={self.raw!r})"


AggFn = Callable[[Held, RawEvent], bool]
Matrix = list[list[AggFn | None]]

_EXEC = RawKind.EXEC
_ID_CHANGE = RawKind.ID_CHANGE
_CONNECTOR = RawKind.EXEC_CONNECTOR


def agg_single(head: Held, child: RawEvent) -> bool:
    """At most one child of each kind (fork+exec+exec: [fork+exec], [exec])."""
    kind = child.kind
    # a loop: all() over a generator costs 3-4 times as much (timeit,
    # one merged child: about 1.7 against 0.5 us), and this runs per merge
    for c in head.agg:  # noqa: SIM110
        if c.kind == kind:
            return False
    return True


def agg_mult(head: Held, child: RawEvent) -> bool:
    """Always; later values overwrite earlier ones when applied."""
    return True


def agg_fork_exec(head: Held, child: RawEvent) -> bool:
    """Refuse an EXEC once the head holds an exec or an ID_CHANGE, and an
    EXEC_CONNECTOR once it holds one.

    Two execs never merge (the first would be lost), and an exec after an id
    change (sudo-like) stays a separate event. KPROBE's EXEC_CONNECTOR, the
    second half of an exec, joins the EXEC it follows.
    """
    if child.kind == _EXEC:
        for c in head.agg:
            k = c.kind
            if k in (_EXEC, _ID_CHANGE, _CONNECTOR):
                return False
        return True
    for c in head.agg:  # noqa: SIM110 (a loop, as in agg_single)
        if c.kind == _CONNECTOR:
            return False
    return True


# Indexed by an op mask (an IntFlag's & builds a new member, some 15 times
# slower than a list index): may a File with these ops join a head, and do
# these ops end one (nothing joins after a REMOVE or a MOVE)?
_OPS = range(16)  # every mask of the four FileOp bits
_JOINS = [
    bool(op & (FileOp.MODIFY | FileOp.REMOVE))
    and not op & (FileOp.CREATE | FileOp.MOVE)
    for op in _OPS
]
_ENDS = [bool(op & (FileOp.REMOVE | FileOp.MOVE)) for op in _OPS]


def _same_file(a: File, b: File) -> bool | None:
    """Whether ``a`` and ``b`` are the same file: by inode when both know
    it, else by path when both know it; None when neither decides."""
    ia, ib = a.inode, b.inode
    if ia is not None and ib is not None:
        return ia == ib
    pa, pb = a.path, b.path
    if pa is not None and pb is not None:
        return pa == pb
    return None


def agg_file(head: Held, child: RawEvent) -> bool:
    """Merge a process's operations on one file in upstream's order:
    CREATE|MODIFY first, then MODIFY|REMOVE (upstream's ``_file`` cell).

    - The child must be a MODIFY or a REMOVE; a CREATE starts a new event.
    - The head's operations so far must hold no REMOVE and no MOVE, so a
      REMOVE ends the event and a CREATE of the same path after it is a
      new one.
    - A MOVE neither joins nor is joined: a rename stays its own event, so
      its old and new paths are never mixed with another operation's.
    - The child must be of the head's file: the same inode when both know
      it, else the same path; a path of None never matches. When the head
      cannot tell (it knows only the inode, the child only the path), the
      last child merged, of the same file, decides the same way.

    O(1) per call: of the children merged, only the last can be a REMOVE,
    since this callback admits nothing after one (a cell set to another
    callback that admits more is the caller's own).
    """
    c = child.payload
    h = head.raw.payload
    if not isinstance(c, File) or not isinstance(h, File):
        return False
    if not _JOINS[c.op] or _ENDS[h.op]:
        return False
    agg = head.agg
    last: File | None = None
    if agg:
        p = agg[-1].payload
        if not isinstance(p, File) or _ENDS[p.op]:
            return False
        last = p
    same = _same_file(h, c)
    if same is None and last is not None:
        same = _same_file(last, c)
    return same is True


#: the most a TTY event's joined writes hold (upstream's limit), and the
#: most writes it joins
TTY_JOIN_BYTES = 4096
TTY_JOIN_WRITES = 64


def agg_tty(head: Held, child: RawEvent) -> bool:
    """Join a process's consecutive writes to one terminal (upstream's
    ``_tty`` cell): the same major and minor, none of them truncated, while
    the bytes joined stay under :data:`TTY_JOIN_BYTES` (and the writes at
    most :data:`TTY_JOIN_WRITES`, so that a call stays cheap)."""
    c = child.payload
    h = head.raw.payload
    if not isinstance(c, Tty) or not isinstance(h, Tty):
        return False
    if c.truncated or h.truncated or (c.major, c.minor) != (h.major, h.minor):
        return False
    agg = head.agg
    if agg and len(agg) >= TTY_JOIN_WRITES - 1:
        return False
    total = len(h.data) + len(c.data)
    for a in agg or ():
        p = a.payload
        if not isinstance(p, Tty):
            return False
        total += len(p.data)
    return total < TTY_JOIN_BYTES


def _empty() -> Matrix:
    """No cell set but the cgroup moves': a move joins whatever process
    event of its process is held (a move right after an exec is on that
    exec's event), in either matrix. It is no event of its own, so it
    separates nothing."""
    m: Matrix = [[None] * RAW_NUM_TYPES for _ in range(RAW_NUM_TYPES)]
    K = RawKind
    for head in (K.WAKE_UP_NEW_TASK, K.EXEC, K.COMM, K.ID_CHANGE):
        m[head][K.CGROUP] = agg_mult
    return m


def default_matrix() -> Matrix:
    """Upstream's default matrix (upstream.md §4.4)."""
    K = RawKind
    m = _empty()
    fork = m[K.WAKE_UP_NEW_TASK]
    fork[K.EXEC] = agg_fork_exec
    fork[K.EXEC_CONNECTOR] = agg_fork_exec
    fork[K.COMM] = agg_mult
    fork[K.ID_CHANGE] = agg_mult
    fork[K.EXIT_THREAD] = agg_single
    exe = m[K.EXEC]
    exe[K.EXEC_CONNECTOR] = agg_single
    exe[K.COMM] = agg_mult
    exe[K.EXIT_THREAD] = agg_single
    comm = m[K.COMM]
    comm[K.COMM] = agg_mult
    comm[K.EXIT_THREAD] = agg_single
    m[K.ID_CHANGE][K.ID_CHANGE] = agg_mult
    m[K.FILE][K.FILE] = agg_file
    m[K.TTY][K.TTY] = agg_tty
    return m


def min_matrix() -> Matrix:
    """``QQ.MIN_AGG``: no fork/exec/exit merging, and no file or tty
    merging either (upstream ``base_agg_matrix_min``)."""
    K = RawKind
    m = _empty()
    m[K.WAKE_UP_NEW_TASK][K.COMM] = agg_mult
    m[K.EXEC][K.EXEC_CONNECTOR] = agg_single
    m[K.EXEC][K.COMM] = agg_mult
    m[K.COMM][K.COMM] = agg_mult
    m[K.ID_CHANGE][K.ID_CHANGE] = agg_mult
    return m
