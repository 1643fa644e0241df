"""The recorded raw-event stream: JSON lines.

Line 1 is the header, every other line one record::

    {"quark": "raw-stream", "version": 1, "clock": "CLOCK_MONOTONIC", ...}
    {"seed": {"pid": 1, "task": {...}, "exe": "/sbin/init", "args": [...]}}
    {"raw": {"kind": "EXEC", "time": 123, "pid": 42, "task": {...}, ...}}
    {"lost": 3}
    {"now": 456}

- ``seed``: a process found by the /proc scrape at open. Seeds come before
  the first ``raw``.
- ``socket``: a TCP connection or listener found in /proc/net/tcp{,6} at
  open (with ``QQ.SOCK_CONN``): ``{"local": [address, port], "remote":
  [...], "pid": N or null, "time": T, "net_inonum": N or null}``; before
  the first ``raw`` too.
- ``raw``: one raw event (:meth:`quark.raw.RawEvent.to_dict`): ``kind`` is a
  :class:`quark.raw.RawKind` name; ``time`` ns on CLOCK_MONOTONIC; ``pid`` the
  tgid, ``tid`` when different; ``task`` the :class:`quark.raw.RawTask`
  members that are known; ``exe``, ``args``, ``comm``, ``id_change``.
  A SOCK_CONN record has ``sock`` (a :class:`quark.raw.RawSock`)::

      "sock": {"op": "CONNECT", "local": ["127.0.0.1", 40000],
               "remote": ["127.0.0.1", 80], "bytes_sent": 5,
               "bytes_received": 7, "net_inonum": 4026531840,
               "at_exit": true}

  ``op`` a :class:`quark.raw.SockOp` name, each end ``[address, port]``
  (the family follows the address); members that are None or False are
  left out. A PACKET record has ``packet`` (a :class:`quark.raw.RawPacket`):
  ``{"direction": "EGRESS", "origin": "dns", "orig_len": 60,
  "data": "<hex>"}``.
  A FILE record has ``file`` (a :class:`quark.File`)::

      "file": {"op": ["CREATE"], "path": "/tmp/x", "old_path": "/tmp/w",
               "sym_target": "t", "inode": 9, "mode": 33188, "size": 0,
               "uid": 0, "gid": 0, "atime": 1, "mtime": 1, "ctime": 1,
               "change": ["CONTENT", "TRUNCATE"]}

  ``op`` and ``change`` lists of :class:`quark.FileOp` and
  :class:`quark.FileChange` names (``change`` left out when empty), the
  times ns since the epoch; members that are None are left out. A SHM
  record has ``shm`` (a :class:`quark.Shm`): ``{"kind": "SHMGET",
  "key": 1234, "size": 4096, "flags": 950, "path": "/dev/shm/x"}``,
  ``kind`` a :class:`quark.ShmKind` name, members that are None left out.
  A TTY record has ``tty`` (a :class:`quark.Tty`, ``data`` in hex), a
  PTRACE record ``ptrace`` (a :class:`quark.Ptrace`), a MODULE_LOAD record
  ``module_load`` (a :class:`quark.ModuleLoad`, members that are None left
  out), each member by its name.
- ``lost``: the backend's cumulative lost counter, when it changed.
- ``now``: the consumer's clock at a read, so a replay releases events when
  the live queue could have (optional).

Strings are JSON strings; bytes that were not UTF-8 are kept as Python's
surrogate escapes (``\\udcXX``), so they round-trip exactly. Unknown keys are
ignored (forward compatibility); a wrong version is refused.

Every line ends with a newline, so a recording whose writer was killed
(SIGKILL, a crash) or whose disk filled ends with a partial line at most:
the reader reads every complete line and then reports the cut
(:attr:`StreamReader.cut`: the file, line and byte where it is) instead of
an error. A write that fails (``ENOSPC``, ``EIO``) stops the recording, not
the queue: :attr:`StreamWriter.error` says why, and it is logged once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from quark.errors import ConfigError, DecodeError
from quark.events import (
    File,
    FileChange,
    FileOp,
    ModuleLoad,
    PacketDirection,
    Ptrace,
    Shm,
    ShmKind,
    SockAddr,
    Socket,
    SockOrigin,
    Tty,
)
from quark.raw.types import (
    MODULE_MEMBERS,
    PTRACE_MEMBERS,
    TASK_FIELDS,
    TTY_MEMBERS,
    Payload,
    RawEvent,
    RawKind,
    RawPacket,
    RawSock,
    RawTask,
    Seed,
    SockOp,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "Lost",
    "Now",
    "StreamReader",
    "StreamWriter",
    "decode_raw",
    "decode_seed",
    "decode_socket",
    "encode_socket",
]

FORMAT = "raw-stream"
VERSION = 1

log = logging.getLogger("quark.record")


class Lost(int):
    """A cumulative lost counter read from the stream."""


class Now(int):
    """The consumer's clock at a read."""


def _task(d: Any, where: str) -> RawTask | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise DecodeError(f"{where}: 'task' must be an object")
    try:
        return RawTask.from_dict(d)
    except TypeError as e:
        raise DecodeError(f"{where}: {e}") from None


def _int(d: dict[str, Any], key: str, where: str, default: Any = ...) -> Any:
    v = d.get(key, default)
    if v is ...:
        raise DecodeError(f"{where}: missing {key!r}")
    if (
        v is not None
        and v is not default
        and (not isinstance(v, int) or isinstance(v, bool))
    ):
        raise DecodeError(f"{where}: {key!r} must be an integer, not {v!r}")
    return v


def _strs(v: Any, key: str, where: str) -> tuple[str, ...] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DecodeError(f"{where}: {key!r} must be a list of strings")
    return tuple(v)


def _str(v: Any, key: str, where: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise DecodeError(f"{where}: {key!r} must be a string")
    return v


def _addr(v: Any, key: str, where: str) -> SockAddr:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not isinstance(v[0], str)
        or not isinstance(v[1], int)
        or isinstance(v[1], bool)
        or not 0 <= v[1] <= 0xFFFF
    ):
        raise DecodeError(
            f"{where}: sock.{key} must be [address, port], not {v!r}"
        )
    try:
        return SockAddr.of(v[0], v[1])
    except ValueError:
        raise DecodeError(
            f"{where}: sock.{key}: {v[0]!r} is not an IP address"
        ) from None


def _enum(cls: Any, v: Any, key: str, where: str) -> Any:
    try:
        if not isinstance(v, str):
            raise KeyError(v)
        return cls[v]
    except KeyError:
        names = ", ".join(m.name for m in cls)
        raise DecodeError(
            f"{where}: {key} must be one of {names}, not {v!r}"
        ) from None


def _count(d: dict[str, Any], key: str, where: str) -> int | None:
    v: int | None = _int(d, key, where, None)
    if v is not None and v < 0:
        raise DecodeError(f"{where}: {key!r} must be >= 0, not {v}")
    return v


def _sock(v: Any, where: str) -> RawSock:
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: 'sock' must be an object")
    at_exit = v.get("at_exit", False)
    if not isinstance(at_exit, bool):
        raise DecodeError(f"{where}: sock.at_exit must be true or false")
    return RawSock(
        _enum(SockOp, v.get("op"), "sock.op", where),
        _addr(v.get("local"), "local", where),
        _addr(v.get("remote"), "remote", where),
        bytes_sent=_count(v, "bytes_sent", f"{where}: sock"),
        bytes_received=_count(v, "bytes_received", f"{where}: sock"),
        net_inonum=_count(v, "net_inonum", f"{where}: sock"),
        at_exit=at_exit,
    )


def _packet(v: Any, where: str) -> RawPacket:
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: 'packet' must be an object")
    origin = v.get("origin")
    if not isinstance(origin, str):
        raise DecodeError(f"{where}: packet.origin must be a string")
    orig_len = _count(v, "orig_len", f"{where}: packet")
    if orig_len is None:
        raise DecodeError(f"{where}: packet: missing 'orig_len'")
    data = v.get("data")
    try:
        if not isinstance(data, str):
            raise ValueError
        raw = bytes.fromhex(data)
    except ValueError:
        raise DecodeError(
            f"{where}: packet.data must be a string of hex digits"
        ) from None
    return RawPacket(
        _enum(PacketDirection, v.get("direction"), "packet.direction", where),
        origin,
        orig_len,
        raw,
    )


def _flags(cls: Any, v: Any, key: str, where: str) -> Any:
    """A list of ``cls`` member names, OR-ed."""
    if not isinstance(v, list):
        names = ", ".join(m.name for m in cls)
        raise DecodeError(
            f"{where}: {key} must be a list of {names}, not {v!r}"
        )
    out = cls(0)
    for name in v:
        out |= _enum(cls, name, key, where)
    return out


def _file(v: Any, where: str) -> File:
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: 'file' must be an object")
    op = _flags(FileOp, v.get("op"), "file.op", where)
    if not op:
        raise DecodeError(f"{where}: file.op must name an operation")
    at = f"{where}: file"
    return File(
        op,
        _str(v.get("path"), "file.path", where),
        old_path=_str(v.get("old_path"), "file.old_path", where),
        sym_target=_str(v.get("sym_target"), "file.sym_target", where),
        inode=_count(v, "inode", at),
        mode=_count(v, "mode", at),
        size=_count(v, "size", at),
        uid=_count(v, "uid", at),
        gid=_count(v, "gid", at),
        atime=_int(v, "atime", at, None),
        mtime=_int(v, "mtime", at, None),
        ctime=_int(v, "ctime", at, None),
        change=_flags(FileChange, v.get("change", []), "file.change", where),
    )


def _shm(v: Any, where: str) -> Shm:
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: 'shm' must be an object")
    at = f"{where}: shm"
    return Shm(
        _enum(ShmKind, v.get("kind"), "shm.kind", where),
        key=_int(v, "key", at, None),
        size=_count(v, "size", at),
        flags=_count(v, "flags", at),
        path=_str(v.get("path"), "shm.path", where),
    )


def _required(
    v: Any, key: str, where: str, names: tuple[str, ...], signed: set[str]
) -> dict[str, int]:
    """The integer members ``names`` of the object ``v``, each present and
    not null; >= 0 unless named in ``signed``."""
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: {key!r} must be an object")
    at = f"{where}: {key}"
    out: dict[str, int] = {}
    for n in names:
        if n not in v:
            raise DecodeError(f"{at}: missing {n!r}")
        if v[n] is None:
            raise DecodeError(f"{at}: {n!r} must be an integer, not null")
        x = _int(v, n, at) if n in signed else _count(v, n, at)
        assert x is not None
        out[n] = x
    return out


def _tty(v: Any, where: str) -> Tty:
    m = _required(v, "tty", where, TTY_MEMBERS, set())
    data = v.get("data")
    if not isinstance(data, str) or not all(c in _HEX for c in data):
        raise DecodeError(f"{where}: tty.data must be hex digits")
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise DecodeError(f"{where}: tty.data must be hex") from None
    return Tty(data=raw, **m)


def _ptrace(v: Any, where: str) -> Ptrace:
    return Ptrace(**_required(v, "ptrace", where, PTRACE_MEMBERS,
                              {"request"}))  # fmt: skip


def _module_load(v: Any, where: str) -> ModuleLoad:
    if not isinstance(v, dict):
        raise DecodeError(f"{where}: 'module_load' must be an object")
    name = _str(v.get("name"), "module_load.name", where)
    if name is None:
        raise DecodeError(f"{where}: module_load.name is missing")
    if "taints" in v and v["taints"] is None:
        raise DecodeError(
            f"{where}: module_load: 'taints' must be an integer, not null"
        )
    taints = _count(v, "taints", f"{where}: module_load")
    return ModuleLoad(
        name,
        _str(v.get("version"), "module_load.version", where),
        _str(v.get("src_version"), "module_load.src_version", where),
        taints or 0,
    )


_HEX = frozenset("0123456789abcdefABCDEF")

assert MODULE_MEMBERS == ("name", "version", "src_version", "taints")

#: Which member carries each payload kind's payload, and its decoder.
_PAYLOADS: dict[RawKind, tuple[str, Callable[[Any, str], Any]]] = {
    RawKind.SOCK_CONN: ("sock", _sock),
    RawKind.PACKET: ("packet", _packet),
    RawKind.FILE: ("file", _file),
    RawKind.SHM: ("shm", _shm),
    RawKind.TTY: ("tty", _tty),
    RawKind.PTRACE: ("ptrace", _ptrace),
    RawKind.MODULE_LOAD: ("module_load", _module_load),
}


def _payload(
    d: dict[str, Any], kind: RawKind, where: str
) -> Payload | None:
    want = _PAYLOADS.get(kind)
    for key, _ in _PAYLOADS.values():
        if d.get(key) is not None and (want is None or key != want[0]):
            raise DecodeError(f"{where}: a {kind.name} record has no {key!r}")
    if want is None:
        return None
    key, decode = want
    v = d.get(key)
    if v is None:
        raise DecodeError(f"{where}: a {kind.name} record needs {key!r}")
    payload: Payload = decode(v, where)
    return payload


def decode_raw(d: Any, where: str = "raw") -> RawEvent:
    if not isinstance(d, dict):
        raise DecodeError(f"{where}: a raw record must be an object")
    kind_name = d.get("kind")
    try:
        kind = RawKind[str(kind_name)] if isinstance(kind_name, str) else None
        if kind is None:
            raise KeyError(kind_name)
    except (KeyError, TypeError):
        raise DecodeError(f"{where}: unknown raw kind {kind_name!r}") from None
    pid = _int(d, "pid", where)
    task = _task(d.get("task"), where)
    if task is not None:
        for f in TASK_FIELDS:
            v = getattr(task, f.name)
            if f.text:
                _str(v, f.name, where)
            elif f.listy:
                _strs(list(v) if v is not None else None, f.name, where)
            elif v is not None and (
                not isinstance(v, int) or isinstance(v, bool)
            ):
                raise DecodeError(f"{where}: task.{f.name} must be an integer")
    return RawEvent(
        kind,
        _int(d, "time", where),
        pid,
        _int(d, "tid", where, pid),
        cpu=_int(d, "cpu", where, None),
        task=task,
        exe=_str(d.get("exe"), "exe", where),
        args=_strs(d.get("args"), "args", where),
        comm=_str(d.get("comm"), "comm", where),
        id_change=_int(d, "id_change", where, 0),
        payload=_payload(d, kind, where),
    )


def decode_socket(d: Any, where: str = "socket") -> Socket:
    """A scraped socket of the stream (``conn_origin`` SCRAPE)."""
    if not isinstance(d, dict):
        raise DecodeError(f"{where}: a socket record must be an object")
    pid = _int(d, "pid", where, None)
    return Socket(
        _addr(d.get("local"), "local", where),
        _addr(d.get("remote"), "remote", where),
        pid_origin=pid,
        pid_last_use=pid,
        established_time=_int(d, "time", where),
        close_time=None,
        conn_origin=SockOrigin.SCRAPE,
        net_inonum=_int(d, "net_inonum", where, None),
    )


def encode_socket(s: Socket) -> dict[str, Any]:
    return {
        "local": [s.local.address, s.local.port],
        "remote": [s.remote.address, s.remote.port],
        "pid": s.pid_origin,
        "time": s.established_time,
        "net_inonum": s.net_inonum,
    }


def decode_seed(d: Any, where: str = "seed") -> Seed:
    if not isinstance(d, dict):
        raise DecodeError(f"{where}: a seed record must be an object")
    task = _task(d.get("task", {}), where)
    assert task is not None
    return Seed(
        _int(d, "pid", where),
        task,
        exe=_str(d.get("exe"), "exe", where),
        args=_strs(d.get("args"), "args", where),
    )


class StreamReader:
    """Reads a recorded stream; iteration yields ``Seed``, ``RawEvent``,
    :class:`Lost` and :class:`Now` items. Errors name the line.

    ``cut`` is None, or once the end is read, where the stream is cut: its
    last line has no newline and is not a whole record (the writer was
    killed, or its disk filled, mid-line). That line is not an error: it
    is where the recording ends.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._f: IO[str] = open(  # noqa: SIM115 - closed by close()
                self.path, encoding="utf-8", errors="surrogateescape"
            )
        except OSError as e:
            raise DecodeError(
                f"cannot open recorded stream {self.path}: {e.strerror}",
                errno=e.errno,
            ) from None
        self.lineno = 0
        self.offset = 0  # bytes read so far
        self.cut: str | None = None
        try:
            self.header = self._header()
        except BaseException:
            self.close()
            raise

    def _where(self) -> str:
        return f"{self.path}:{self.lineno}"

    def _readline(self) -> str:
        line = self._f.readline()
        # the writer writes ASCII; surrogate escapes are one byte each
        self.offset += len(line.encode("utf-8", "surrogateescape"))
        return line

    def _header(self) -> dict[str, Any]:
        line = self._readline()
        self.lineno = 1
        if not line:
            raise DecodeError(f"{self._where()}: empty file, no header")
        try:
            h = json.loads(line)
        except ValueError as e:
            if not line.endswith("\n"):
                raise DecodeError(
                    f"{self._where()}: the stream is cut in its header "
                    f"({len(line)} bytes and no newline): the recording "
                    "ended before its first line was written"
                ) from None
            raise DecodeError(
                f"{self._where()}: header is not JSON: {e}"
            ) from None
        if not isinstance(h, dict) or h.get("quark") != FORMAT:
            raise DecodeError(
                f"{self._where()}: not a quark raw stream "
                f'(header must have "quark": "{FORMAT}")'
            )
        if h.get("version") != VERSION:
            raise DecodeError(
                f"{self._where()}: unsupported stream version "
                f"{h.get('version')!r} (this quark reads {VERSION})"
            )
        return h

    def __iter__(self) -> Iterator[Seed | Socket | RawEvent | Lost | Now]:
        while True:
            item = self.next_item()
            if item is None:
                return
            yield item

    def next_item(self) -> Seed | Socket | RawEvent | Lost | Now | None:
        """The next item, None at the end. A malformed line raises
        DecodeError naming it; the line is consumed, so reading can go on.
        A cut last line ends the stream and sets :attr:`cut`."""
        while True:
            line = self._readline()
            if not line:
                return None
            self.lineno += 1
            if line.strip():
                break
        if line.endswith("\n"):
            return self._decode_line(line)
        # the last line, without its newline: a whole record (only the
        # newline is missing), or where the recording was cut
        try:
            return self._decode_line(line)
        except DecodeError:
            size = len(line.encode("utf-8", "surrogateescape"))
            self.cut = (
                f"{self._where()}: the stream is cut here, after {size} "
                f"bytes of this line (it starts at byte {self.offset - size})"
                ": the recording ended mid-line, as when its writer is "
                "killed or its disk fills; every line before it was read"
            )
            return None

    def _decode_line(
        self, line: str
    ) -> Seed | Socket | RawEvent | Lost | Now:
        where = self._where()
        try:
            d = json.loads(line)
        except ValueError as e:
            raise DecodeError(f"{where}: not JSON: {e}") from None
        if not isinstance(d, dict) or len(d) != 1:
            raise DecodeError(
                f"{where}: a record is an object with exactly one key "
                "(seed, socket, raw, lost or now)"
            )
        ((key, value),) = d.items()
        if key == "raw":
            return decode_raw(value, where)
        if key == "seed":
            return decode_seed(value, where)
        if key == "socket":
            return decode_socket(value, where)
        if key in ("lost", "now"):
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < 0
            ):
                raise DecodeError(f"{where}: {key!r} must be an integer >= 0")
            return Lost(value) if key == "lost" else Now(value)
        raise DecodeError(f"{where}: unknown record type {key!r}")

    def close(self) -> None:
        self._f.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


class StreamWriter:
    """Writes a recorded stream (the header at open).

    A write that fails (a full disk, an I/O error) stops the recording:
    :attr:`error` says why, it is logged once, the file is closed with what
    was written, and every later call does nothing. The caller's work goes
    on; it is never raised. Each batch ends with :meth:`lost`, which
    flushes, so a process killed mid-run leaves its batches in the file.
    """

    def __init__(self, path: str | os.PathLike[str], **header: Any) -> None:
        self.path = os.fspath(path)
        self.error: str | None = None
        try:
            self._f: IO[str] | None = open(  # noqa: SIM115 - closed by close()
                self.path, "w", encoding="utf-8"
            )
        except OSError as e:
            raise ConfigError(
                f"cannot record to {self.path}: {e.strerror}", errno=e.errno
            ) from None
        self._last_lost = 0
        self._write(
            {
                "quark": FORMAT,
                "version": VERSION,
                "clock": "CLOCK_MONOTONIC",
                **header,
            }
        )

    def _fail(self, e: OSError) -> None:
        f, self._f = self._f, None
        self.error = (
            f"recording to {self.path} stopped: {e.strerror or e}; the queue "
            "goes on without it, and the file keeps what was written (a "
            "replay reads it up to the cut)"
        )
        log.error("%s", self.error)
        if f is not None:
            try:
                f.close()  # flushes what it can, then closes the descriptor
            except (OSError, ValueError):
                pass

    def _write(self, obj: Any) -> None:
        f = self._f
        if f is None:
            if self.error is not None:
                return  # stopped by a failed write
            raise ValueError("stream writer is closed")
        try:
            f.write(_dumps(obj))
            f.write("\n")
        except OSError as e:
            self._fail(e)

    def seed(self, seed: Seed) -> None:
        self._write({"seed": seed.to_dict()})

    def socket(self, sock: Socket) -> None:
        """A socket scraped at open (write these before any raw event)."""
        self._write({"socket": encode_socket(sock)})

    def raw(self, raw: RawEvent) -> None:
        self._write({"raw": raw.to_dict()})

    def lost(self, total: int) -> None:
        """The end of a batch: the lost counter, if it changed, then a
        flush."""
        if total != self._last_lost:
            self._last_lost = total
            self._write({"lost": total})
        self.flush()

    def now(self, now: int) -> None:
        self._write({"now": now})

    def flush(self) -> None:
        if self._f is not None:
            try:
                self._f.flush()
            except OSError as e:
                self._fail(e)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self._f = f
                self._fail(e)
