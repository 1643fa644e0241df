"""Decoding of the EBPF backend's ring records (``bpf/proto.h``) into raw
events. Pure: bytes in, :class:`quark.raw.RawEvent` out, or
:class:`quark.DecodeError` for a record that is truncated or inconsistent.
"""

from __future__ import annotations

import struct

from quark.errors import DecodeError
from quark.raw.types import RawEvent, RawKind, RawTask
from quark.raw.types import fsdecode as _fsdecode

__all__ = ["HEADER", "PROTO_VERSION", "decode"]

PROTO_VERSION = 1

# struct q_event: 172 bytes of fields, 176 with the tail padding.
HEADER = struct.Struct("<IIQIIII5QQI6I2I2I4Ii16s5HH")
HEADER_SIZE = 176
assert HEADER.size <= HEADER_SIZE

Q_FORK, Q_EXEC, Q_EXIT, Q_COMM, Q_ID_CHANGE = 1, 2, 3, 4, 5
F_ARGS_TRUNC = 1 << 0
F_ENV_TRUNC = 1 << 1
F_EXE_TRUNC = 1 << 2
F_CWD_TRUNC = 1 << 3
F_CGROUP_TRUNC = 1 << 4

_KINDS = {
    Q_FORK: RawKind.WAKE_UP_NEW_TASK,
    Q_EXEC: RawKind.EXEC,
    Q_EXIT: RawKind.EXIT_THREAD,
    Q_COMM: RawKind.COMM,
    Q_ID_CHANGE: RawKind.ID_CHANGE,
}


def _cstr(b: bytes) -> str:
    return _fsdecode(b.split(b"\0", 1)[0])


def _components(area: bytes) -> str:
    """Leaf-first, NUL-terminated components -> an absolute path."""
    if not area:
        return "/"
    parts = area.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    parts.reverse()
    return _fsdecode(b"/" + b"/".join(parts))


def _split(area: bytes, *, whole: bool) -> tuple[str, ...]:
    """NUL-separated strings. ``whole``: drop a trailing partial entry.

    Decoded once, then split: NUL is ASCII and surrogateescape works byte
    by byte, so this equals decoding each part, in one C call.
    """
    if not area:
        return ()
    parts = _fsdecode(area).split("\0")
    if parts[-1] == "":
        parts.pop()
    elif whole:
        parts.pop()  # cut by the size limit: keep whole entries only
    return tuple(parts)


def decode(rec: bytes) -> RawEvent:
    """One ring record -> one raw event."""
    if len(rec) < HEADER_SIZE:
        raise DecodeError(
            f"ebpf record of {len(rec)} bytes is shorter than its "
            f"{HEADER_SIZE}-byte header"
        )
    (
        kind, size, time, pid, tid, id_change, flags,
        cap_inh, cap_prm, cap_eff, cap_bset, cap_amb, start,
        ppid, uid, gid, suid, sgid, euid, egid, pgid, sid,
        tty_major, tty_minor, uts, ipc, mnt, net, exit_code, comm,
        l_exe, l_args, l_env, l_cwd, l_cgroup, _pad,
    ) = HEADER.unpack_from(rec)  # fmt: skip
    raw_kind = _KINDS.get(kind)
    if raw_kind is None:
        raise DecodeError(f"ebpf record of unknown kind {kind}")
    total = HEADER_SIZE + l_exe + l_args + l_env + l_cwd + l_cgroup
    if size > len(rec) or total > size:
        raise DecodeError(
            f"ebpf record says {size} bytes with {total} of fields, "
            f"but {len(rec)} arrived"
        )
    task = RawTask(
        cap_inheritable=cap_inh, cap_permitted=cap_prm,
        cap_effective=cap_eff, cap_bset=cap_bset, cap_ambient=cap_amb,
        start_time=start, ppid=ppid, uid=uid, gid=gid, suid=suid,
        sgid=sgid, euid=euid, egid=egid, pgid=pgid, sid=sid,
        tty_major=tty_major, tty_minor=tty_minor, uts_inonum=uts,
        ipc_inonum=ipc, mnt_inonum=mnt, net_inonum=net,
    )  # fmt: skip
    ev = RawEvent(raw_kind, time, pid, tid, task=task)
    if kind == Q_COMM:
        ev.comm = _cstr(comm)  # the new name; task.comm stays unknown
        return ev
    task.comm = _cstr(comm)
    if kind == Q_EXIT:
        task.exit_code = exit_code
        return ev
    if kind == Q_ID_CHANGE:
        ev.id_change = id_change
        return ev
    off = HEADER_SIZE
    exe = rec[off : off + l_exe]
    off += l_exe
    args = rec[off : off + l_args]
    off += l_args
    env = rec[off : off + l_env]
    off += l_env
    cwd = rec[off : off + l_cwd]
    off += l_cwd
    cgroup = rec[off : off + l_cgroup]
    # A path cut short is only its tail: unknown, not made up, and it
    # replaces the old value ("" for cwd and exe, see RawTask/RawEvent).
    task.cwd = "" if flags & F_CWD_TRUNC else _components(cwd)
    task.cgroup = None if flags & F_CGROUP_TRUNC else _components(cgroup)
    if kind == Q_EXEC:
        if l_exe and not flags & F_EXE_TRUNC:
            ev.exe = _components(exe)
        elif flags & F_EXE_TRUNC:
            ev.exe = ""
        ev.args = _split(args, whole=False)
        if l_env or not flags & F_ENV_TRUNC:
            task.env = _split(env, whole=bool(flags & F_ENV_TRUNC))
    return ev
