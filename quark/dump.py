"""Upstream's human-readable event dump (``quark_event_dump``).

::

    ->4242 (FORK+EXEC+EXIT)
      COMM\tcomm=true
      CMDL\tcmdline=[ /bin/true, -x ]
      PROC\tppid=4241
      ...
      EXIT\texit_code=0 exit_time=123

Unknown members print as ``?``; a process snapshot (the initial dump of the
cache) has no ``(...)`` part.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from quark.events import ELT, EV, Event, Process
from quark.fields import Dump, Field

__all__ = ["dump_event", "dump_process", "events_str"]

_NAMES = [(bit, bit.name) for bit in EV if bit.name]


def events_str(events: int) -> str:
    """``FORK+EXEC+EXIT``: the bits' names joined with ``+``."""
    return "+".join(name for bit, name in _NAMES if events & bit)


def _v(x: Any) -> str:
    return "?" if x is None else str(x)


def _hex(x: Any) -> str:
    return "?" if x is None else f"0x{x:x}"


def _elt(x: Any) -> str:
    return "?" if x is None else ELT(x).name


def _list(x: Any) -> str:
    return "?" if x is None else f"[ {', '.join(x)} ]"


def _size(x: Any) -> str:
    if x is None:
        return "?"
    return str(sum(len(os.fsencode(e)) + 1 for e in x))


# Dump.fmt -> how a value prints
_FMT: dict[str | None, Callable[[Any], str]] = {
    None: _v, "hex": _hex, "elt": _elt, "list": _list, "size": _size,
}  # fmt: skip
_Line = tuple[str, int, tuple[tuple[int, str, Callable[[Any], str]], ...]]


def _lines() -> tuple[_Line, ...]:
    """(tag, gate slot, ((slot, label, format), ...)) per dump line, from
    the table of process fields."""
    by_line: dict[int, list[tuple[Field, Dump]]] = {}
    gates: dict[str, int] = {}
    for f in Process.TABLE:
        d = f.decl.dump
        if d is not None:
            by_line.setdefault(d.line, []).append((f, d))
            if d.gate:
                gates[d.tag] = f.index
    out = []
    for line in sorted(by_line):
        row = by_line[line]
        tag = row[0][1].tag
        items = tuple(
            (f.index, d.label or f.name, _FMT[d.fmt]) for f, d in row
        )
        out.append((tag, gates[tag], items))
    return tuple(out)


_LINES = _lines()


def dump_process(p: Process, events: int = 0) -> str:
    """The dump of one process, as the event ``events`` carried it."""
    out = [f"->{p.pid}"]
    if events:
        out.append(f" ({events_str(events)})")
    out.append("\n")
    v = p._v
    for tag, gate, items in _LINES:
        if v[gate] is None:
            continue
        text = " ".join(f"{label}={fmt(v[i])}" for i, label, fmt in items)
        out.append(f"  {tag}\t{text}\n")
    return "".join(out)


def dump_event(ev: Event) -> str:
    if ev.process is None:
        return f"->? ({events_str(ev.events)})\n"
    return dump_process(ev.process, ev.events)
