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

Socket and packet events put their lines first, after the header line and
before the process's, as upstream does::

    ->4242 (SOCK_CONN_CLOSED)
      SOCK\tlocal=10.0.0.1:40000 remote=[2001:db8::1]:443 received=9 sent=7
      SOCK\torigin=CONNECT pid_origin=4242 pid_last_use=4242 ...
      PKT\torigin=dns, len=60/60, direction=EGRESS
        0000: 45 00 00 3c ...  E..<
      COMM\tcomm=curl
      ...

The packet's bytes follow as a hex and ASCII dump, 16 bytes a line, each
line with its offset in hex (upstream prints the offset in decimal).

File and shared-memory events put theirs there too, after any socket or
packet lines::

    ->4242 (FILE)
      FILE\top=CREATE|MODIFY change=CONTENT
      FILE\tpath=/tmp/new
      FILE\told_path=/tmp/old
      FILE\tsym_target=../target
      FILE\tmode=0100644 uid=0 gid=0 size=5 inode=1234
      FILE\tatime=1700000000000000000 mtime=... ctime=...
      SHM\tkind=SHM_OPEN key=? size=? flags=0102 path=/dev/shm/x
      COMM\tcomm=sh
      ...

The FILE lines are upstream's: ``op`` names the bits lowest first,
``old_path`` and ``sym_target`` lines show only when there is one, the mode
is the whole ``st_mode`` in octal and the times are ns since the epoch.
Two things are ours: ``change=`` (what a MODIFY changed, as
:class:`quark.FileChange` names it) ends the op line when known, and the
path line is always there (``path=?`` when the path could not be known
whole) where upstream leaves it out. Bits without a name print in hex.
Upstream prints no SHM line; ours has the SysV key in hex as ``ipcs``
shows it, and the flags (shmget's shmflg, or the open or memfd flags) in
octal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from quark.events import ELT, EV, Event, File, Packet, Process, Shm, Socket
from quark.fields import Dump, Field

__all__ = ["dump_event", "dump_process", "events_str", "hexdump"]

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


def _process_lines(p: Process, out: list[str]) -> None:
    v = p._v
    for tag, gate, items in _LINES:
        if v[gate] is None:
            continue
        text = " ".join(f"{label}={fmt(v[i])}" for i, label, fmt in items)
        out.append(f"  {tag}\t{text}\n")


def dump_process(p: Process, events: int = 0) -> str:
    """The dump of one process, as the event ``events`` carried it."""
    out = [f"->{p.pid}"]
    if events:
        out.append(f" ({events_str(events)})")
    out.append("\n")
    _process_lines(p, out)
    return "".join(out)


def _name(x: Any) -> str:
    return "?" if x is None else x.name


def _socket_lines(s: Socket, out: list[str]) -> None:
    out.append(
        f"  SOCK\tlocal={s.local} remote={s.remote} "
        f"received={_v(s.bytes_received)} sent={_v(s.bytes_sent)}\n"
    )
    out.append(
        f"  SOCK\torigin={_name(s.conn_origin)} "
        f"pid_origin={_v(s.pid_origin)} pid_last_use={_v(s.pid_last_use)} "
        f"established_time={_v(s.established_time)} "
        f"close_time={_v(s.close_time)} net_inonum={_v(s.net_inonum)}\n"
    )


def _printable(b: int) -> str:
    return chr(b) if 0x20 <= b < 0x7F else "."


def hexdump(data: bytes, indent: str = "    ") -> str:
    """``0010: 45 00 ... 00 01  E..<....``: 16 bytes a line, the offset in
    hex, then the bytes in hex, then as ASCII (``.`` when not printable);
    each line starts with ``indent`` and ends with a newline."""
    out = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(_printable(b) for b in chunk)
        out.append(f"{indent}{off:04x}: {hexes:<47}  {text}\n")
    return "".join(out)


def _packet_lines(pkt: Packet, out: list[str]) -> None:
    out.append(
        f"  PKT\torigin={pkt.origin}, len={len(pkt.data)}/{pkt.orig_len}, "
        f"direction={_name(pkt.direction)}\n"
    )
    out.append(hexdump(pkt.data))


def _bits(x: Any) -> str:
    """``CREATE|MODIFY``: a flag's set bits, lowest first, by name (hex
    for a bit without one, as upstream's INVALID would hide which)."""
    if x is None:
        return "?"
    names = []
    v = int(x)
    while v:
        low = v & -v
        v ^= low
        name = getattr(type(x)(low), "name", None)
        names.append(name or f"0x{low:x}")
    return "|".join(names)


def _oct(x: Any) -> str:
    return "?" if x is None else f"0{x:o}"


def _file_lines(f: File, out: list[str]) -> None:
    op = f"  FILE\top={_bits(f.op)}"
    if f.change:
        op += f" change={_bits(f.change)}"
    out.append(op + "\n")
    out.append(f"  FILE\tpath={_v(f.path)}\n")
    if f.old_path is not None:
        out.append(f"  FILE\told_path={f.old_path}\n")
    if f.sym_target is not None:
        out.append(f"  FILE\tsym_target={f.sym_target}\n")
    out.append(
        f"  FILE\tmode={_oct(f.mode)} uid={_v(f.uid)} gid={_v(f.gid)} "
        f"size={_v(f.size)} inode={_v(f.inode)}\n"
    )
    out.append(
        f"  FILE\tatime={_v(f.atime)} mtime={_v(f.mtime)} "
        f"ctime={_v(f.ctime)}\n"
    )


def _key(x: Any) -> str:
    return "?" if x is None else f"0x{x & 0xFFFFFFFF:08x}"


def _shm_lines(s: Shm, out: list[str]) -> None:
    out.append(
        f"  SHM\tkind={_name(s.kind)} key={_key(s.key)} size={_v(s.size)} "
        f"flags={_oct(s.flags)} path={_v(s.path)}\n"
    )


def dump_event(ev: Event) -> str:
    """The dump of one event: the header line, its socket, packet, file
    and shared-memory lines when it has them, then its process's lines."""
    p = ev.process
    sock = ev.socket
    pkt = ev.packet
    file = ev.file
    shm = ev.shm
    if sock is None and pkt is None and file is None and shm is None:
        if p is None:
            return f"->? ({events_str(ev.events)})\n"
        return dump_process(p, ev.events)
    out = [f"->{'?' if p is None else p.pid} ({events_str(ev.events)})\n"]
    if sock is not None:
        _socket_lines(sock, out)
    if pkt is not None:
        _packet_lines(pkt, out)
    if file is not None:
        _file_lines(file, out)
    if shm is not None:
        _shm_lines(shm, out)
    if p is not None:
        _process_lines(p, out)
    return "".join(out)
