"""Decoding of the EBPF backend's ring records into raw events.

Pure: bytes in, :class:`quark.raw.RawEvent` out, or
:class:`quark.DecodeError` for a record that is truncated or inconsistent;
the one question asked outside is a ptrace child's process and parent
(``owner_of``, /proc by default), which the kernel record cannot carry.
The record's layout is not written here: :class:`Decoder` takes it from the
BPF object's BTF (:mod:`quark.backends.ebpf_layout`), and copies each
``q_event`` member named as a task field of :class:`quark.Process` to the
:class:`quark.raw.RawTask` member of that name.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from typing import Any

from quark.backends.ebpf_layout import Layout, Record
from quark.errors import DecodeError, ProtocolError
from quark.events import (
    ID_CHANGE,
    QQ,
    File,
    FileChange,
    FileOp,
    ModuleLoad,
    PacketDirection,
    Ptrace,
    Shm,
    ShmKind,
    SockAddr,
    Tty,
)
from quark.fields import Src
from quark.procfs import thread_owner
from quark.raw.types import (
    TASK_FIELDS,
    RawEvent,
    RawKind,
    RawPacket,
    RawSock,
    RawTask,
    SockOp,
    task_event,
)
from quark.raw.types import fsdecode as _fsdecode
from quark.raw.types import memo as _memo

__all__ = ["PROTO_VERSION", "Decoder", "Pending", "Result"]

#: The version of bpf/proto.h that this decoder speaks.
PROTO_VERSION = 8


class Pending:
    """A raw event read at a syscall's entry: it happened only if the same
    thread's next :class:`Result` says the syscall succeeded (``ok``)."""

    __slots__ = ("ok", "raw")

    def __init__(self, raw: RawEvent, ok: Callable[[int], bool]) -> None:
        self.raw = raw
        self.ok = ok


class Result:
    """How the syscall of thread ``tid`` whose entry was Pending ended."""

    __slots__ = ("ret", "tid")

    def __init__(self, tid: int, ret: int) -> None:
        self.tid = tid
        self.ret = ret


#: what decode() returns: a raw event, one that waits for its syscall's
#: result, that result, or None for a record that is not an event here
# a tuple: a folded fork's FORK raw event, then its record's EXEC or EXIT
Decoded = RawEvent | tuple[RawEvent, RawEvent] | Pending | Result | None

_SHM_DIR = "/dev/shm/"
_O_CREAT = os.O_CREAT


def _succeeded(ret: int) -> bool:
    return ret == 0


def _made(ret: int) -> bool:
    return ret >= 0

# proto.h's enum q_kind -> raw kinds
_KINDS = {
    "Q_FORK": RawKind.WAKE_UP_NEW_TASK,
    "Q_EXEC": RawKind.EXEC,
    "Q_EXIT": RawKind.EXIT_THREAD,
    "Q_COMM": RawKind.COMM,
    "Q_ID_CHANGE": RawKind.ID_CHANGE,
    "Q_GETPID": RawKind.GETPID,
    "Q_CGROUP": RawKind.CGROUP,
}
# the task fields a record carries by name, but only for some kinds
_SPECIAL = frozenset({"comm", "exit_code"})


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


def _split(area: bytes) -> tuple[str, ...]:
    """NUL-separated strings (argv, environ), a trailing NUL or not.

    Decoded once, then split: NUL is ASCII and surrogateescape works byte
    by byte, so this equals decoding each part, in one C call.
    """
    if not area:
        return ()
    parts = _fsdecode(area).split("\0")
    if parts[-1] == "":
        parts.pop()
    return tuple(parts)


def _task_builder(layout: Layout) -> Callable[[tuple[Any, ...]], RawTask]:
    """``build(values) -> RawTask`` for the unpacked header ``values``.

    Written as source and compiled once, as :mod:`dataclasses` does: it
    runs for every ring record. It makes the object without calling its
    ``__init__`` and stores every member (``None`` for those the record
    does not carry), because binding some thirty keyword arguments was
    most of the cost: 0.34 against 1.69 us per record (timeit, the CI
    machine, 2026-12-01), and the keyword call was the line where the
    consumer spent the most (a tenth of its CPU, py-spy).
    """
    ev = layout.record("q_event")
    lines = ["def build(v):", "    t = new(RawTask)"]
    for f in TASK_FIELDS:
        if f.name in _SPECIAL or f.name not in ev.names:
            lines.append(f"    t.{f.name} = None")
            continue
        # an optional field the kernel could not read is 0: unknown
        unknown = " or None" if f.src is Src.TASK_OPT else ""
        lines.append(f"    t.{f.name} = v[{ev.index(f.name)}]{unknown}")
    lines.append("    return t")
    ns: dict[str, Any] = {"RawTask": RawTask, "new": object.__new__}
    exec(compile("\n".join(lines), "<ebpf task builder>", "exec"), ns)
    build: Callable[[tuple[Any, ...]], RawTask] = ns["build"]
    return build


class Decoder:
    """Decodes the records of the BPF object whose layout is ``layout``;
    ``kinds`` are the event kinds asked for (a file opened in /dev/shm is
    an SHM event with ``QQ.SHM``, and never a FILE event). Without
    ``cgroups`` the records' cgroup areas are ignored and their moves
    dropped: the system's cgroup path is one no program can read (see
    :class:`quark.procfs.CgroupSource`).

    Raises :class:`quark.ProtocolError` when the object speaks another
    protocol version, or lacks a member or constant this code reads.
    """

    def __init__(
        self,
        layout: Layout,
        kinds: QQ = QQ.FILE | QQ.SHM,
        owner_of: OwnerOf = thread_owner,
        *,
        cgroups: bool = True,
    ) -> None:
        if layout.version != PROTO_VERSION:
            raise ProtocolError(
                f"{layout.origin} speaks wire protocol "
                f"{layout.version} (bpf/proto.h Q_PROTO_VERSION), this "
                f"library {PROTO_VERSION}: rebuild the object "
                "(python bpf/build.py) or reinstall quark"
            )
        for bit in ID_CHANGE:
            if layout.const(f"Q_ID_{bit.name}") != bit.value:
                raise ProtocolError(
                    f"{layout.origin}: Q_ID_{bit.name} is "
                    f"{layout.const(f'Q_ID_{bit.name}')}, not {bit.value}"
                )
        self.layout = layout
        self.decode = _make_decode(layout, kinds, owner_of, cgroups)


def _check_head(layout: Layout, *records: Record) -> None:
    """Records of the other kinds begin as q_event does (kind, size, time,
    pid, tid): decode() reads the kind before it knows the record."""
    head = layout.record("q_event")
    for rec in records:
        for name in ("kind", "size", "time", "pid", "tid"):
            if rec.offsets[name] != head.offsets[name]:
                raise ProtocolError(
                    f"{layout.origin}: {rec.name}.{name} is not where "
                    f"q_event.{name} is"
                )


def _net_decoders(
    layout: Layout,
) -> dict[int, Callable[[bytes], Decoded]]:
    """Decoders of the network kinds' records, by their q_kind value."""
    c = layout.const
    sk = layout.record("q_sock_event")
    pk = layout.record("q_packet_event")
    _check_head(layout, sk, pk)
    ops = {c(f"Q_SOCK_{op.name}"): op for op in SockOp}
    dirs = {c(f"Q_PACKET_{d.name}"): d for d in PacketDirection}
    at_exit = c("Q_SOCK_AT_EXIT")
    cap_max = c("Q_PACKET_MAX")
    s_unpack, s_size = sk.fmt.unpack_from, sk.size
    si = {n: sk.index(n) for n in sk.names}
    p_unpack, p_size = pk.fmt.unpack_from, pk.size
    pi = {n: pk.index(n) for n in pk.names}
    inet, inet6 = socket.AF_INET, socket.AF_INET6
    sock_kind, packet_kind = RawKind.SOCK_CONN, RawKind.PACKET

    # A connection's two ends repeat in its events, and a busy host talks
    # to few addresses: ipaddress costs more than the rest of the record.
    @functools.lru_cache(maxsize=8192)
    def addr(family: int, raw: bytes, port: int) -> SockAddr:
        return SockAddr.of(raw[:4] if family == inet else raw, port)

    def sock(rec: bytes) -> RawEvent:
        if len(rec) < s_size:
            raise DecodeError(
                f"ebpf socket record of {len(rec)} bytes, not {s_size}"
            )
        v = s_unpack(rec)
        op = ops.get(v[si["op"]])
        family = v[si["family"]]
        if op is None or family not in (inet, inet6):
            raise DecodeError(
                f"ebpf socket record with op {v[si['op']]}, family {family}"
            )
        closing = op is SockOp.CLOSE
        payload = RawSock(
            op,
            addr(family, v[si["local_addr"]], v[si["local_port"]]),
            addr(family, v[si["remote_addr"]], v[si["remote_port"]]),
            bytes_sent=v[si["bytes_sent"]] if closing else None,
            bytes_received=v[si["bytes_received"]] if closing else None,
            net_inonum=v[si["net_inonum"]] or None,
            at_exit=bool(v[si["flags"]] & at_exit),
        )
        return RawEvent(
            sock_kind, v[si["time"]], v[si["pid"]], v[si["tid"]],
            payload=payload,
        )  # fmt: skip

    def packet(rec: bytes) -> RawEvent:
        if len(rec) < p_size:
            raise DecodeError(
                f"ebpf packet record of {len(rec)} bytes is shorter than "
                f"its {p_size}-byte header"
            )
        v = p_unpack(rec)
        cap, orig = v[pi["cap_len"]], v[pi["orig_len"]]
        size = v[pi["size"]]
        direction = dirs.get(v[pi["direction"]])
        if (
            direction is None
            or cap > orig
            or cap > cap_max
            or size != p_size + cap
            or size > len(rec)
        ):
            raise DecodeError(
                f"ebpf packet record: {cap} of {orig} bytes captured, "
                f"record of {size} ({len(rec)} arrived), direction "
                f"{v[pi['direction']]}"
            )
        payload = RawPacket(direction, "dns", orig, rec[p_size:size])
        pid = v[pi["pid"]]
        return RawEvent(
            packet_kind, v[pi["time"]], pid, v[pi["tid"]], payload=payload
        )

    return {c("Q_SOCK"): sock, c("Q_PACKET"): packet}


def _join(directory: bytes, name: bytes) -> str:
    """A name as a process gave it, made absolute with the components of
    the directory it is relative to."""
    if name.startswith(b"/"):
        return _fsdecode(name)
    base = _components(directory)
    if not name:
        return base
    return (base if base == "/" else base + "/") + _fsdecode(name)


def _fs_decoders(
    layout: Layout, kinds: QQ
) -> dict[int, Callable[[bytes], Decoded]]:
    """Decoders of the FILE, SHM and RESULT records, by q_kind value."""
    c = layout.const
    fe = layout.record("q_file_event")
    se = layout.record("q_shm_event")
    re_ = layout.record("q_result_event")
    _check_head(layout, fe, se, re_)
    for op in FileOp:
        if c(f"Q_FILE_{op.name}") != op.value:
            raise ProtocolError(f"{layout.origin}: Q_FILE_{op.name} moved")
    changes = {
        c(f"Q_FC_{ch.name}"): ch for ch in FileChange if ch.name is not None
    }
    ff = {n: c(f"Q_FF_{n}") for n in (
        "STAT", "PENDING", "TMPFS_ROOT", "PATH_TRUNC", "OLD_TRUNC",
        "CREATED",
    )}  # fmt: skip
    lens = fe.span("len")
    if lens.stop - lens.start != c("Q_FV_NUM"):
        raise ProtocolError(f"{layout.origin}: q_file_event.len != Q_FV_NUM")
    order = sorted(
        (c(f"Q_FV_{v}"), v)
        for v in ("PATH", "NAME", "OLD_PATH", "OLD_NAME", "SYM")
    )
    area = {v: i for i, (_, v) in enumerate(order)}
    f_unpack, f_size = fe.fmt.unpack_from, fe.size
    fi = {n: fe.index(n) for n in fe.names if not n.startswith("len_")}
    s_unpack, s_size = se.fmt.unpack_from, se.size
    si = {n: se.index(n) for n in se.names}
    r_unpack, r_size = re_.fmt.unpack_from, re_.size
    ri = {n: re_.index(n) for n in re_.names}
    shm_kinds = {c("Q_SHM_SHMGET"): ShmKind.SHMGET,
                 c("Q_SHM_MEMFD_CREATE"): ShmKind.MEMFD_CREATE}  # fmt: skip
    want_file = bool(kinds & QQ.FILE)
    want_shm = bool(kinds & QQ.SHM)
    file_kind, shm_kind = RawKind.FILE, RawKind.SHM

    single_ops = {op.value: op for op in FileOp}

    def change_of(bits: int) -> FileChange:
        out = FileChange(0)
        for bit, ch in changes.items():
            if bits & bit:
                out |= ch
        return out

    def file(rec: bytes) -> Decoded:
        if len(rec) < f_size:
            raise DecodeError(
                f"ebpf file record of {len(rec)} bytes is shorter than its "
                f"{f_size}-byte header"
            )
        v = f_unpack(rec)
        sizes = v[lens]
        total = f_size + sum(sizes)
        rsize = v[fi["size"]]
        if rsize > len(rec) or total > rsize:
            raise DecodeError(
                f"ebpf file record says {rsize} bytes with {total} of "
                f"fields, but {len(rec)} arrived"
            )
        parts = []
        off = f_size
        for n in sizes:
            parts.append(rec[off : off + n])
            off += n
        flags = v[fi["flags"]]
        op = single_ops.get(v[fi["op"]])
        if op is None:  # one operation per record
            raise DecodeError(f"ebpf file record with op {v[fi['op']]}")
        pending = bool(flags & ff["PENDING"])

        def name(dir_key: str, name_key: str, trunc: int) -> str | None:
            if flags & trunc:
                return None  # not known whole
            n = parts[area[name_key]]
            if pending:
                return _join(parts[area[dir_key]], n.rstrip(b"\0"))
            return _components(parts[area[dir_key]])

        path = name("PATH", "NAME", ff["PATH_TRUNC"])
        stat: dict[str, int] = {}
        if flags & ff["STAT"]:
            stat = {
                "inode": v[fi["inode"]], "mode": v[fi["mode"]],
                "size": v[fi["fsize"]], "uid": v[fi["uid"]],
                "gid": v[fi["gid"]], "atime": v[fi["atime"]],
                "mtime": v[fi["mtime"]], "ctime": v[fi["ctime"]],
            }  # fmt: skip
        pid, tid, t = v[fi["pid"]], v[fi["tid"]], v[fi["time"]]
        if flags & ff["TMPFS_ROOT"] and path is not None:
            if path.startswith(_SHM_DIR) and "/" not in path[len(_SHM_DIR):]:
                # shm_open(3): an SHM event whatever its flags, and not a
                # FILE one (upstream's #256)
                if not want_shm:
                    return None
                oflags = v[fi["open_flags"]]
                if flags & ff["CREATED"]:
                    oflags |= _O_CREAT  # the kernel strips it after open
                shm = Shm(ShmKind.SHM_OPEN, flags=oflags, path=path)
                return RawEvent(shm_kind, t, pid, tid, payload=shm)
            if not flags & ff["CREATED"]:
                return None  # opened, not made: not an event
        if not want_file:
            return None
        sym = parts[area["SYM"]].rstrip(b"\0")
        payload = File(
            op, path,
            old_path=(
                name("OLD_PATH", "OLD_NAME", ff["OLD_TRUNC"])
                if op is FileOp.MOVE else None
            ),
            sym_target=_fsdecode(sym) if sym else None,
            change=change_of(v[fi["change"]]),
            **stat,
        )  # fmt: skip
        raw = RawEvent(file_kind, t, pid, tid, payload=payload)
        return Pending(raw, _succeeded) if pending else raw

    def shm(rec: bytes) -> Decoded:
        if len(rec) < s_size:
            raise DecodeError(
                f"ebpf shm record of {len(rec)} bytes, not {s_size}"
            )
        v = s_unpack(rec)
        kind = shm_kinds.get(v[si["shm_kind"]])
        if kind is None:
            raise DecodeError(
                f"ebpf shm record of kind {v[si['shm_kind']]}"
            )
        if kind is ShmKind.SHMGET:
            payload = Shm(
                kind, key=v[si["key"]], size=v[si["shm_size"]],
                flags=v[si["shm_flags"]],
            )  # fmt: skip
        else:
            name = _cstr(v[si["name"]])
            payload = Shm(kind, flags=v[si["shm_flags"]],
                          path=f"memfd:{name}")  # fmt: skip
        raw = RawEvent(
            shm_kind, v[si["time"]], v[si["pid"]], v[si["tid"]],
            payload=payload,
        )  # fmt: skip
        return Pending(raw, _made)

    def result(rec: bytes) -> Decoded:
        if len(rec) < r_size:
            raise DecodeError(
                f"ebpf result record of {len(rec)} bytes, not {r_size}"
            )
        v = r_unpack(rec)
        return Result(v[ri["tid"]], v[ri["ret"]])

    return {c("Q_FILE"): file, c("Q_SHM"): shm, c("Q_RESULT"): result}


#: (tgid, ppid) of the process a thread id belongs to, or None
OwnerOf = Callable[[int], "tuple[int, int] | None"]
_OWNER_TTL_NS = 1_000_000_000
_OWNERS_MAX = 4096


def _other_decoders(
    layout: Layout, owner_of: OwnerOf
) -> dict[int, Callable[[bytes], Decoded]]:
    """Decoders of the TTY, PTRACE and MODULE records, by q_kind value."""
    c = layout.const
    te = layout.record("q_tty_event")
    pe = layout.record("q_ptrace_event")
    me = layout.record("q_module_event")
    _check_head(layout, te, pe, me)
    tty_max = c("Q_TTY_MAX")
    pending = c("Q_FF_PENDING")
    t_unpack, t_size = te.fmt.unpack_from, te.size
    ti = {n: te.index(n) for n in te.names}
    p_unpack, p_size = pe.fmt.unpack_from, pe.size
    pi = {n: pe.index(n) for n in pe.names}
    m_unpack, m_size = me.fmt.unpack_from, me.size
    mi = {n: me.index(n) for n in me.names}
    owners: dict[tuple[int, int], tuple[int, tuple[int, int] | None]] = {}
    tty_members = [(n, ti[n]) for n in (
        "major", "minor", "cols", "rows", "iflag", "oflag", "cflag", "lflag",
        "truncated",
    )]  # fmt: skip

    def tty(rec: bytes) -> Decoded:
        if len(rec) < t_size:
            raise DecodeError(
                f"ebpf tty record of {len(rec)} bytes is shorter than its "
                f"{t_size}-byte header"
            )
        v = t_unpack(rec)
        n, size = v[ti["data_len"]], v[ti["size"]]
        if n > tty_max or size != t_size + n or size > len(rec):
            raise DecodeError(
                f"ebpf tty record: {n} bytes of data, record of {size} "
                f"({len(rec)} arrived)"
            )
        payload = Tty(data=rec[t_size:size],
                      **{k: v[i] for k, i in tty_members})  # fmt: skip
        return RawEvent(
            RawKind.TTY, v[ti["time"]], v[ti["pid"]], v[ti["tid"]],
            payload=payload,
        )  # fmt: skip

    def ptrace(rec: bytes) -> Decoded:
        if len(rec) < p_size:
            raise DecodeError(
                f"ebpf ptrace record of {len(rec)} bytes, not {p_size}"
            )
        v = p_unpack(rec)
        pid, t, tid = v[pi["pid"]], v[pi["time"]], v[pi["tid"]]
        # a debugger sends requests by the thousand: /proc is read once
        # per tracer and tracee a second (a tid is not reused that fast)
        key = (pid, v[pi["child"]])
        hit = owners.get(key)
        if hit is not None and t - hit[0] < _OWNER_TTL_NS:
            owner = hit[1]
        else:
            if len(owners) >= _OWNERS_MAX:
                owners.clear()
            owner = owner_of(key[1])
            owners[key] = (t, owner)
        if owner is None:
            child = v[pi["child"]]  # gone already: its tid is all there is
        else:
            child, parent = owner
            if parent == pid or child == pid:
                return None  # its own child, or itself (as upstream)
        payload = Ptrace(child, v[pi["request"]], v[pi["addr"]],
                         v[pi["data"]])  # fmt: skip
        raw = RawEvent(RawKind.PTRACE, t, pid, tid, payload=payload)
        return Pending(raw, _made) if v[pi["flags"]] & pending else raw

    def module(rec: bytes) -> Decoded:
        if len(rec) < m_size:
            raise DecodeError(
                f"ebpf module record of {len(rec)} bytes, not {m_size}"
            )
        v = m_unpack(rec)
        payload = ModuleLoad(
            _cstr(v[mi["name"]]),
            _cstr(v[mi["version"]]) or None,
            _cstr(v[mi["srcversion"]]) or None,
            v[mi["taints"]],
        )
        return RawEvent(
            RawKind.MODULE_LOAD, v[mi["time"]], v[mi["pid"]], v[mi["tid"]],
            payload=payload,
        )  # fmt: skip

    return {c("Q_TTY"): tty, c("Q_PTRACE"): ptrace, c("Q_MODULE"): module}


def _make_decode(
    layout: Layout, asked: QQ, owner_of: OwnerOf, cgroups: bool = True
) -> Callable[[bytes], Decoded]:
    ev = layout.record("q_event")
    c = layout.const
    unpack = ev.fmt.unpack_from
    size = ev.size
    i_kind, i_size, i_time = (
        ev.index("kind"),
        ev.index("size"),
        ev.index("time"),
    )
    i_pid, i_tid = ev.index("pid"), ev.index("tid")
    i_flags, i_idc = ev.index("flags"), ev.index("id_change")
    i_comm, i_code = ev.index("comm"), ev.index("exit_code")
    i_fork = ev.index("fork_time")
    k_fork_raw = RawKind.WAKE_UP_NEW_TASK
    lens = ev.span("len")
    if lens.stop - lens.start != c("Q_VAR_NUM"):
        raise ProtocolError(
            f"{layout.origin}: q_event.len has {lens.stop - lens.start} "
            f"entries, Q_VAR_NUM is {c('Q_VAR_NUM')}"
        )
    # the variable areas, in enum q_var order
    order = sorted(
        (c(f"Q_VAR_{v}"), v) for v in ("EXE", "ARGS", "ENV", "CWD", "CGROUP")
    )
    names = [v for _, v in order]
    v_exe, v_args, v_env, v_cwd, v_cgroup = (
        names.index(v) for v in ("EXE", "ARGS", "ENV", "CWD", "CGROUP")
    )
    kinds = {c(name): kind for name, kind in _KINDS.items()}
    k_comm, k_exit, k_exec = c("Q_COMM"), c("Q_EXIT"), c("Q_EXEC")
    k_idc, k_getpid = c("Q_ID_CHANGE"), c("Q_GETPID")
    k_cgroup = c("Q_CGROUP")
    f_env = c("Q_F_ENV_TRUNC")
    f_exe, f_cwd = c("Q_F_EXE_TRUNC"), c("Q_F_CWD_TRUNC")
    f_cgroup = c("Q_F_CGROUP_TRUNC")
    build_task = _task_builder(layout)
    # Each distinct string decoded once per queue, and shared (see memo).
    cstr, path = _memo(_cstr, 1 << 18), _memo(_components, 1 << 20)
    strs = _memo(_split, 2 << 20)
    other_kinds: dict[int, Callable[[bytes], Decoded]] = {
        **_net_decoders(layout),
        **_fs_decoders(layout, asked),
        **_other_decoders(layout, owner_of),
    }

    def decode(rec: bytes) -> Decoded:
        """One ring record -> its raw event; an EXEC or EXIT record that
        carries its process's fork (q_event.fork_time, see folding in
        bpf/quark.bpf.c) -> (FORK, EXEC or EXIT). The FORK shares the
        record's task: nothing of the process came between its fork and
        this record (the programs send a kept-back fork before any other
        record of its pid), so the engine always merges the two and the
        fork's own values never show."""
        if len(rec) >= 4:
            other = other_kinds.get(int.from_bytes(rec[:4], "little"))
            if other is not None:
                return other(rec)
        if len(rec) < size:
            raise DecodeError(
                f"ebpf record of {len(rec)} bytes is shorter than its "
                f"{size}-byte header"
            )
        v = unpack(rec)
        kind = v[i_kind]
        raw_kind = kinds.get(kind)
        if raw_kind is None:
            raise DecodeError(f"ebpf record of unknown kind {kind}")
        area = v[lens]
        total = size + sum(area)
        rsize = v[i_size]
        if rsize > len(rec) or total > rsize:
            raise DecodeError(
                f"ebpf record says {rsize} bytes with {total} of fields, "
                f"but {len(rec)} arrived"
            )
        pid = v[i_pid]
        task = build_task(v)
        ev = task_event(raw_kind, v[i_time], pid, v[i_tid], task)
        if kind == k_comm:
            ev.comm = cstr(v[i_comm])  # the new name; task.comm unknown
            return ev
        task.comm = cstr(v[i_comm])
        if kind == k_exit:
            task.exit_code = v[i_code]
            if not v[i_fork]:
                return ev  # no areas; with a fork, the fork's cwd, cgroup
        if kind == k_idc:
            ev.id_change = v[i_idc]
            return ev
        if kind == k_getpid:
            return ev  # no areas: its cwd and cgroup are not "/"
        flags = v[i_flags]
        parts = []
        off = size
        for n in area:
            parts.append(rec[off : off + n])
            off += n
        # A path cut short is only its tail: unknown, not made up, and it
        # replaces the old value ("" for cwd and exe, see RawTask/RawEvent).
        if cgroups and not flags & f_cgroup:
            task.cgroup = path(parts[v_cgroup])
        if kind == k_cgroup:
            # the cgroup area alone: the cwd is not "/"
            return ev if cgroups else None
        task.cwd = "" if flags & f_cwd else path(parts[v_cwd])
        if kind == k_exec:
            exe = parts[v_exe]
            if flags & f_exe:
                ev.exe = ""
            elif exe:
                ev.exe = path(exe)
            ev.args = strs(parts[v_args])
            env = parts[v_env]
            if env or not flags & f_env:
                if flags & f_env:  # cut by max_env: whole entries only
                    env = env[: env.rfind(b"\0") + 1]
                task.env = strs(env)
        fork_time = v[i_fork]
        if fork_time and kind in (k_exec, k_exit):
            return task_event(k_fork_raw, fork_time, pid, pid, task), ev
        return ev

    return decode
