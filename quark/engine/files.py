"""Merging a process's operations on one file into one :class:`File`.

The engine's FILE+FILE cell (:func:`quark.engine.aggregate.agg_file`)
decides which raw FILE events go together; :func:`merge_files` makes the
one record the delivered event carries. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from quark.events import File

__all__ = ["merge_files"]


def merge_files(head: File, children: list[File]) -> File:
    """One record for ``head`` followed by the ``children`` merged into it,
    in order.

    - ``op`` and ``change`` are the OR of all of them.
    - ``path``, ``old_path`` and ``sym_target`` are the head's, or where
      the head's is None, the first child's that is not.
    - Each stat member (``inode``, ``mode``, ``size``, ``uid``, ``gid``
      and the three times) is the last operation's that knows it: a
      REMOVE done by path knows none and keeps the earlier ones, so a file
      removed at the end still shows its last stat.

    Returns ``head`` itself when there are no children.
    """
    if not children:
        return head
    op = head.op
    change = head.change
    for c in children:
        op |= c.op
        change |= c.change
    ops = [head, *children]

    def first(name: str) -> Any:
        for f in ops:
            v = getattr(f, name)
            if v is not None:
                return v
        return None

    def last(name: str) -> Any:
        for f in reversed(ops):
            v = getattr(f, name)
            if v is not None:
                return v
        return None

    return File(
        op,
        first("path"),
        old_path=first("old_path"),
        sym_target=first("sym_target"),
        inode=last("inode"),
        mode=last("mode"),
        size=last("size"),
        uid=last("uid"),
        gid=last("gid"),
        atime=last("atime"),
        mtime=last("mtime"),
        ctime=last("ctime"),
        change=change,
    )
