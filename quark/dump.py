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

Terminal output, ptrace requests, module loads and bypass records go there
too, each after the kinds above::

    ->4242 (PTRACE)
      PTRA\tpid=4243 request=0x10 addr=0x0 data=0x0
      ...
    ->4242 (MODULE_LOAD)
      MODL\tname=dummy version=? srcversion=6A1F0C2B0D5E taints=0x0
      ...
    ->4242 (TTY)
      TTY\tmajor=136 minor=3 size=80x24 len=18 truncated=0
      TTY\tiflag=0x500 oflag=0x5 cflag=0xbf lflag=0x8a3b
      TTY\tdata="hi \\x1b[1mthere\\x1b[0m\\r\\n"
      ...
    ->? (BYPASS)
      BYPS\tlen=120 head=64
        0000: 0b 00 00 00 78 00 00 00 ...  ....x...
        ...

The PTRA line is upstream's (``pid`` is the tracee, the request and its
arguments in hex); upstream prints no line for the others. The MODL line
shows what is not known as ``?`` and the taints in hex. A TTY event's
first line is the terminal (for a pty master, its slave), its window as
columns x rows, how many bytes were captured and how many were not; the
second its termios flags; the third the bytes written, quoted, shown so
that no byte can act on the terminal the dump is read on: printable
characters (UTF-8 decoded) as they are, ``\\\\``, ``\\"``, ``\\t``,
``\\r``, ``\\n`` escaped, and every other byte as ``\\xNN``. A bypass
record (no process: its header is the wire's, not read here) shows its
length and its first 64 bytes in hex.

A process in a container ends with a CONT line (upstream's shows the
Kubernetes name and image; ours what the cgroup path tells)::

      CONT\tid=f6aa2e3f... runtime=containerd pod_uid=a00e... qos=Burstable
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from quark.events import (
    ELT,
    EV,
    Event,
    File,
    ModuleLoad,
    Packet,
    Process,
    Ptrace,
    Shm,
    Socket,
    Tty,
)
from quark.fields import Dump, Field

__all__ = [
    "BYPASS_HEAD",
    "dump_event",
    "dump_process",
    "events_str",
    "hexdump",
    "tty_text",
]

# plain ints: an IntFlag's & builds a new member, many times slower
_NAMES = [(int(bit), bit.name) for bit in EV if bit.name]
_EVENTS: dict[int, str] = {}


def events_str(events: int) -> str:
    """``FORK+EXEC+EXIT``: the bits' names joined with ``+``."""
    events = int(events)
    text = _EVENTS.get(events)
    if text is None:
        text = "+".join(name for bit, name in _NAMES if events & bit)
        if len(_EVENTS) < 4096:  # few combinations ever come
            _EVENTS[events] = text
    return text


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
    joined = "\0".join(x)
    if joined.isascii():  # the common case: one character, one byte
        return str(len(joined) + 1 if x else 0)
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


# Formatted lines by their values, per line: most lines (credentials,
# capabilities, namespaces, cwd, cgroup, environment) are the same for
# many processes, and the strings in them are shared objects (the
# decoders' memo), so a lookup costs less than formatting again.
_MEMO_MAX = 4096
_memo: list[dict[Any, str]] = [{} for _ in _LINES]


def _formatter(n: int) -> Callable[[Any], str]:
    """``fmt(key)``: line ``n`` for its values ``key`` (the value itself
    for a line of one), kept in the memo."""
    tag, _, items = _LINES[n]
    memo = _memo[n]
    single = len(items) == 1

    def fmt(key: Any) -> str:
        values = (key,) if single else key
        text = " ".join(
            f"{label}={f(x)}"
            for (_, label, f), x in zip(items, values, strict=True)
        )
        line = f"  {tag}\t{text}\n"
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = line
        return line

    return fmt


def _lines_writer() -> Callable[[tuple[Any, ...], list[str]], None]:
    """``write(values, out)``: every line of a process whose gate is known.

    Written as source and compiled once, as :mod:`dataclasses` does: it
    runs for every event quark-mon prints, and unrolled it takes about
    half the time of a loop over the lines that builds each key with a
    comprehension. A value that cannot be a dict key raises TypeError.
    """
    src = ["def write(v, out):"]
    ns: dict[str, Any] = {}
    for n, (_, gate, items) in enumerate(_LINES):
        slots = [i for i, _, _ in items]
        if len(slots) == 1:
            key = f"v[{slots[0]}]"
        else:
            key = "(" + ", ".join(f"v[{i}]" for i in slots) + ",)"
        ns[f"m{n}"], ns[f"f{n}"] = _memo[n], _formatter(n)
        src += [
            f"    if v[{gate}] is not None:",
            f"        k = {key}",
            f"        line = m{n}.get(k)",
            f"        out.append(f{n}(k) if line is None else line)",
        ]
    exec(compile("\n".join(src), "<dump lines>", "exec"), ns)
    write: Callable[[tuple[Any, ...], list[str]], None] = ns["write"]
    return write


_write_lines = _lines_writer()


def _process_lines(p: Process, out: list[str]) -> None:
    v = p._v
    start = len(out)
    try:
        _write_lines(v, out)
    except TypeError:
        # a value that cannot be a key (a list, from a caller's own
        # Process): formatted, and nothing kept
        del out[start:]
        for tag, gate, items in _LINES:
            if v[gate] is None:
                continue
            text = " ".join(f"{label}={f(v[i])}" for i, label, f in items)
            out.append(f"  {tag}\t{text}\n")
    c = p.container
    if c is not None:
        out.append(f"  CONT\tid={c.id} runtime={c.runtime} "
                   f"pod_uid={_v(c.pod_uid)} qos={_v(c.qos)}\n")  # fmt: skip


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


_U64 = (1 << 64) - 1


def _ptrace_lines(pt: Ptrace, out: list[str]) -> None:
    # upstream prints the s64 request and the u64 arguments with %llx
    out.append(
        f"  PTRA\tpid={_v(pt.child_pid)} request={_hex64(pt.request)} "
        f"addr={_hex64(pt.addr)} data={_hex64(pt.data)}\n"
    )


def _hex64(x: Any) -> str:
    return "?" if x is None else f"0x{x & _U64:x}"


def _module_lines(m: ModuleLoad, out: list[str]) -> None:
    out.append(
        f"  MODL\tname={_v(m.name)} version={_v(m.version)} "
        f"srcversion={_v(m.src_version)} taints={_hex(m.taints)}\n"
    )


# characters shown escaped although printable, and the controls that have
# a short escape
_ESCAPES = {
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\t"): "\\t",
    ord("\r"): "\\r",
    ord("\n"): "\\n",
}


def tty_text(data: bytes) -> str:
    """``data`` shown safely on one line: UTF-8 decoded, printable
    characters as they are, the backslash, the double quote, tab, CR and
    LF escaped as in C, and every other byte (controls, escape sequences,
    invalid UTF-8, the bidirectional and other format characters) as
    ``\\xNN``, so that nothing in it can act on a terminal."""
    if data.isascii() and data.isalnum():
        return data.decode()  # the common short word: no loop
    out = []
    esc = _ESCAPES
    for ch in data.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        e = esc.get(o)
        if e is not None:
            out.append(e)
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def _tty_lines(t: Tty, out: list[str]) -> None:
    data = t.data or b""
    out.append(
        f"  TTY\tmajor={_v(t.major)} minor={_v(t.minor)} "
        f"size={_v(t.cols)}x{_v(t.rows)} len={len(data)} "
        f"truncated={_v(t.truncated)}\n"
    )
    out.append(
        f"  TTY\tiflag={_hex(t.iflag)} oflag={_hex(t.oflag)} "
        f"cflag={_hex(t.cflag)} lflag={_hex(t.lflag)}\n"
    )
    out.append(f'  TTY\tdata="{tty_text(data)}"\n')


#: how many bytes of a bypass record the dump shows
BYPASS_HEAD = 64


def _bypass_lines(data: bytes, out: list[str]) -> None:
    head = data[:BYPASS_HEAD]
    out.append(f"  BYPS\tlen={len(data)} head={len(head)}\n")
    out.append(hexdump(head))


def dump_event(ev: Event) -> str:
    """The dump of one event: the header line, its socket, packet, file,
    shared-memory, ptrace, module, terminal or bypass lines when it has
    them, then its process's lines."""
    p = ev.process
    v = ev._v
    if not any(x is not None for x in v[_PAYLOADS]):
        if p is None:
            return f"->? ({events_str(ev.events)})\n"
        return dump_process(p, ev.events)
    out = [f"->{'?' if p is None else p.pid} ({events_str(ev.events)})\n"]
    sock = ev.socket
    if sock is not None:
        _socket_lines(sock, out)
    pkt = ev.packet
    if pkt is not None:
        _packet_lines(pkt, out)
    file = ev.file
    if file is not None:
        _file_lines(file, out)
    shm = ev.shm
    if shm is not None:
        _shm_lines(shm, out)
    pt = ev.ptrace
    if pt is not None:
        _ptrace_lines(pt, out)
    mod = ev.module_load
    if mod is not None:
        _module_lines(mod, out)
    tty = ev.tty
    if tty is not None:
        _tty_lines(tty, out)
    raw = ev.bypass
    if raw is not None:
        _bypass_lines(raw, out)
    if p is not None:
        _process_lines(p, out)
    return "".join(out)


# the Event members that have lines of their own (id_change has none)
_PAYLOADS = slice(Event.FIELDS.index("socket"), len(Event.FIELDS))
assert Event.FIELDS[_PAYLOADS] == (
    "socket", "packet", "file", "shm", "tty", "ptrace", "module_load",
    "bypass",
)  # fmt: skip
