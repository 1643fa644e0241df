"""Events as Elastic Common Schema (ECS) documents, one JSON object each.

Fixes upstream's known bugs (docs: upstream §8): every document has
``@timestamp``; ``event.category`` and ``event.type`` are set as ECS defines
them for processes (fork/exec: ``start``, exit: ``end``, id change and
comm change: ``change``, the initial snapshot: ``info``); the user and group
objects stand directly under ``process`` (``process.user``,
``process.real_user``, ``process.saved_user``, likewise groups), where ECS
puts them; fractions of seconds are zero-padded.

A process in a container (:attr:`quark.Process.container`) adds
``container.id`` and ``container.runtime``, and ``orchestrator.type``,
``orchestrator.resource.type`` (``pod``) and ``orchestrator.resource.id``
(the pod's uid) when its cgroup path shows a Kubernetes pod.

Network events (``EV.SOCK_CONN_*``, ``EV.PACKET``) get ``event.category:
["network"]``, ``source``, ``destination`` and ``network`` objects; which
end is the source follows who opened the connection, not which side we are:

* an ACCEPT came from the remote end: ``source`` is the remote address,
  ``destination`` the local one, ``network.direction: "ingress"``;
* a CONNECT went out: ``source`` is local, ``destination`` remote,
  ``network.direction: "egress"``;
* a SCRAPE (found in /proc/net/tcp at open) or an unknown origin is laid out
  like a CONNECT, but with ``network.direction: "unknown"``: who opened it is
  not known, and a guess would be a lie.

``source.bytes`` and ``destination.bytes`` (what each end sent) and
``network.bytes`` (both ways) are set once the bytes are known, at close.
``network.type`` is the protocol on the wire: ``ipv4`` for an IPv6 socket
whose ends are both IPv4-mapped (``::ffff:a.b.c.d``; the addresses are
printed as the socket holds them).

A DNS packet's ``source`` and ``destination`` come from its IP and UDP
headers (an IPv6 packet with extension headers keeps its addresses but gets
no ports and no ``dns``); the DNS message is decoded by dnspython:
``dns.id``, ``dns.type`` (``query`` or ``answer``), ``dns.op_code``,
``dns.header_flags``, ``dns.question.{name,type,class}``, and for an answer
``dns.response_code``, ``dns.answers`` (``name``, ``type``, ``class``,
``ttl``, ``data``) and ``dns.resolved_ip``. A packet that cannot be decoded
(cut short by the capture, or not DNS) keeps its network fields and has no
``dns`` object.

File events (``EV.FILE``) get ``event.category: ["file"]`` and
``event.type`` from the operations, lowest bit first, each once:
``creation`` (CREATE), ``change`` (MODIFY, MOVE), ``deletion`` (REMOVE).
``event.action`` is upstream's ``file[-created][-written][-renamed]
[-deleted]``, with one difference: a MODIFY that is known to have changed
only attributes (permissions, owner, xattrs; no CONTENT or TRUNCATE) says
``-attributes-changed`` instead of ``-written``, and one that changed both
says ``-written-attributes-changed``; a MODIFY whose change is not known
stays ``-written``. The ``file`` object has ``path``, ``name``,
``directory`` and ``extension`` (after the last dot of the name, without
it; none for ``.bashrc`` or ``a.``) when the path is known, ``type``
(``file``, ``dir`` or ``symlink``, from the mode, or ``symlink`` when
there is a target), ``inode``, ``uid`` and ``gid`` as strings (ECS
keywords), ``owner`` and ``group`` (names looked up, cached), ``size``,
``mode`` (the permission bits as 4 octal digits, ``"0644"``),
``accessed``, ``mtime``, ``ctime``, and ``target_path`` (a symlink's
target as given). A MOVE's old name goes where Elastic Defend puts it,
``file.Ext.original.path`` and ``file.Ext.original.name`` (ECS has no
field for it); ``file.path`` is the new name. What a MODIFY changed is
``quark.file.change`` (``["CONTENT", "TRUNCATE"]``), when known.

Shared-memory events (``EV.SHM``; upstream has no ECS for them) get
``event.category: ["process"]``, ``event.type: ["info"]``,
``event.action: "shared-memory-created"`` and a ``quark.shm`` object with
``kind`` (``SHMGET``, ``SHM_OPEN`` or ``MEMFD_CREATE``), ``key``, ``size``,
``flags`` (numbers) and ``path``, each only when known.

Terminal output (``EV.TTY``) is laid out as Elastic's session view reads
it: ``event.category: ["process"]``, ``event.type: ["info"]``,
``event.action: "text_output"``, and under ``process``:

* ``io.type: "tty"``; ``io.text``, the bytes written decoded as UTF-8
  (an invalid sequence becomes U+FFFD); ``io.total_bytes_captured``, how
  many bytes were; ``io.total_bytes_skipped``, how many were not
  (``Tty.truncated``); and when some were, ``io.bytes_skipped: [{"offset":
  N, "length": M}]`` with the offset at the end of ``io.text`` (in bytes
  of its UTF-8): the kernel counts the bytes it could not keep, not where
  they were, and a write over the 8192 bytes kept loses its end;
* ``tty``, the terminal written to (for a pty master, its slave), which in
  this document replaces the controlling terminal of the process
  snapshot: ``tty.char_device.major`` and ``.minor``, ``tty.columns`` and
  ``tty.rows`` (left out when 0, a window never set).

ECS has no field for the terminal's modes: ``quark.tty.iflag``,
``quark.tty.oflag``, ``quark.tty.cflag`` and ``quark.tty.lflag`` (numbers)
are its termios flags.

Ptrace requests (``EV.PTRACE``) get ``event.category: ["process"]`` and
``event.type: ["access"]`` (ECS's type for one process acting on
another); ``event.action`` is ``ptrace-`` and the request's name in lower
case (``ptrace-attach``, ``ptrace-seize``, ``ptrace-pokedata``), or
``ptrace`` for a number without a name here. ``process`` is the tracer;
ECS has no field for the traced process nor for the request, so they are
``quark.ptrace``: ``child_pid`` (the tracee's pid), ``request`` (the
number), ``request_name`` (``PTRACE_ATTACH``, as the kernel's headers
spell it: the generic requests, and those of x86-64 or arm64 when the
host is one; left out when unknown) and ``addr`` and ``data``, the
request's arguments as hex strings (``"0x7ffd5c2f1000"``: they are
unsigned 64-bit values, which neither an Elasticsearch ``long`` nor a
JavaScript number holds whole).

Module loads (``EV.MODULE_LOAD``) get ``event.category: ["driver"]``
(ECS's category for kernel modules), ``event.type: ["start"]`` and
``event.action: "module-loaded"``; ``process`` is the loader. ECS has no
module fields (``file.*`` describes a file, and the kernel's tracepoint
gives no path): ``quark.module.name``, ``quark.module.version`` and
``quark.module.src_version`` (each left out when the module has none)
and ``quark.module.taints`` (the kernel's taint mask for the module, a
number).

A bypass event (``EV.BYPASS``, a raw ring record) has no ECS form, as
upstream's ``quark_event_to_ecs`` refuses one (EINVAL):
:meth:`EcsEncoder.document` raises :class:`quark.ConfigError` for it
(``quark-mon -B -E`` prints the records itself).

Extension fields: ECS leaves a field set of the producer's own name for
what it has no field for; this module's are ``quark.file.change``,
``quark.shm.*``, ``quark.tty.*``, ``quark.ptrace.*`` and
``quark.module.*``, as above.

Times: ``Event.time`` and ``exit_time`` are CLOCK_MONOTONIC and
``start_time`` CLOCK_BOOTTIME; both become wall-clock times through offsets
measured once when the encoder is made (so a clock step after that is not
followed, and suspend is accounted for in the boot-time offset only).
"""

from __future__ import annotations

import grp
import ipaddress
import json
import posixpath
import pwd
import socket as _socket
import stat as _stat
import struct
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from quark.container import Container
from quark.errors import ConfigError
from quark.events import (
    EV,
    Event,
    File,
    FileChange,
    FileOp,
    ModuleLoad,
    Packet,
    PacketDirection,
    Process,
    Ptrace,
    Shm,
    SockAddr,
    Socket,
    SockOrigin,
    Tty,
)
from quark.sysinfo import HostInfo, host_info

__all__ = [
    "CAPABILITIES",
    "MODULE_ACTION",
    "PTRACE_ACTION",
    "SHM_ACTION",
    "TTY_ACTION",
    "EcsEncoder",
    "event_action",
    "file_action",
    "ptrace_action",
    "ptrace_request_name",
    "rfc3339",
]

CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

_PROCESS_CHANGE = EV.ID_CHANGE | EV.SETPROCTITLE
SHM_ACTION = "shared-memory-created"
#: what Elastic's session view asks for terminal output
TTY_ACTION = "text_output"
MODULE_ACTION = "module-loaded"
PTRACE_ACTION = "ptrace"
#: a getpid(2) returned (QQ.GETPID, for benchmarks): a process event of
#: type info
GETPID_ACTION = "getpid"
_SOCK_CONN = EV.SOCK_CONN_ESTABLISHED | EV.SOCK_CONN_CLOSED


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def rfc3339(ns: int) -> str:
    """``2026-11-24T23:35:01.000000005Z``: UTC, 9 zero-padded digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    if secs != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second[0] = secs
    return f"{_second[1]}.{frac:09d}Z"


def event_action(events: int) -> str:
    """Upstream's ``event.action``: ``process-forked-executed-exited``,
    ``connection-established``, ``connection-closed``, ``packet``, and
    ours for the kinds upstream has none for (``text_output``,
    ``ptrace``, ``module-loaded``, ``shared-memory-created``,
    ``getpid``)."""
    if not events & (EV.FORK | EV.EXEC | EV.EXIT | _PROCESS_CHANGE):
        if events & _SOCK_CONN:
            out = "connection"
            if events & EV.SOCK_CONN_ESTABLISHED:
                out += "-established"
            if events & EV.SOCK_CONN_CLOSED:
                out += "-closed"
            return out
        if events & EV.PACKET:
            return "packet"
        if events & EV.FILE:
            return "file"
        if events & EV.SHM:
            return SHM_ACTION
        if events & EV.TTY:
            return TTY_ACTION
        if events & EV.PTRACE:
            return PTRACE_ACTION
        if events & EV.MODULE_LOAD:
            return MODULE_ACTION
        if events & EV.GETPID:
            return GETPID_ACTION
        return "unknown" if events else "process"
    out = "process"
    if events & EV.FORK:
        out += "-forked"
    if events & EV.EXEC:
        out += "-executed"
    if events & EV.EXIT:
        out += "-exited"
    return out


def _types(events: int) -> list[str]:
    out = []
    if events & (EV.FORK | EV.EXEC):
        out.append("start")
    if events & EV.EXIT:
        out.append("end")
    if events & _PROCESS_CHANGE:
        out.append("change")
    return out or ["info"]


_CAPS_CACHE: dict[int, list[str]] = {}


def _caps(mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    names = _CAPS_CACHE.get(mask)
    if names is None:
        n = len(CAPABILITIES)
        names = [
            CAPABILITIES[i] if i < n else f"CAP_{i}"
            for i in range(64)
            if mask >> i & 1
        ]
        if len(_CAPS_CACHE) < 4096:
            _CAPS_CACHE[mask] = names
    return names


def _named(
    cache: dict[int, dict[str, str]], v: int, getname: Callable[[int], str]
) -> dict[str, str]:
    obj = cache.get(v)
    if obj is None:
        obj = {"id": str(v)}
        try:
            obj["name"] = getname(v)
        except KeyError:
            pass  # no such user or group here: the id alone
        cache[v] = obj
    return obj


def _user_name(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


# -- network events ------------------------------------------------------


def _endpoint(a: SockAddr) -> dict[str, Any]:
    return {"address": a.address, "ip": a.address, "port": a.port}


def _wire_type(s: Socket) -> str:
    if s.local.family == _socket.AF_INET:
        return "ipv4"
    for a in (s.local, s.remote):
        try:
            ip = ipaddress.IPv6Address(a.address)
        except ValueError:
            return "ipv6"
        if ip.ipv4_mapped is None:
            return "ipv6"
    return "ipv4"


def _socket_fields(doc: dict[str, Any], s: Socket) -> None:
    """``source``, ``destination`` and ``network`` of a TCP connection."""
    if s.conn_origin == SockOrigin.ACCEPT:
        src, dst = s.remote, s.local
        src_sent, dst_sent = s.bytes_received, s.bytes_sent
        direction = "ingress"
    else:
        src, dst = s.local, s.remote
        src_sent, dst_sent = s.bytes_sent, s.bytes_received
        connect = s.conn_origin == SockOrigin.CONNECT
        direction = "egress" if connect else "unknown"
    source = _endpoint(src)
    destination = _endpoint(dst)
    network: dict[str, Any] = {
        "transport": "tcp",
        "type": _wire_type(s),
        "direction": direction,
    }
    if src_sent is not None:
        source["bytes"] = src_sent
    if dst_sent is not None:
        destination["bytes"] = dst_sent
    if src_sent is not None and dst_sent is not None:
        network["bytes"] = src_sent + dst_sent
    doc["source"] = source
    doc["destination"] = destination
    doc["network"] = network


_UDP = 17
_UDP_HEADER = struct.Struct("!HHHH")  # sport, dport, length, checksum


def _ip_udp(data: bytes) -> tuple[str, Any, Any, bytes | None] | None:
    """(network.type, source, destination, UDP payload) from the packet's
    IP and UDP headers: the endpoints are ``(ip, port)``, the port None and
    the payload None when there is no UDP header to read (another
    protocol, a later fragment, IPv6 extension headers, a short capture).
    None when even the IP header cannot be read."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        if len(data) < 20 or ihl < 20:
            return None
        total, frag = struct.unpack_from("!2xH2xH", data)
        proto = data[9]
        src_ip = str(ipaddress.IPv4Address(data[12:16]))
        dst_ip = str(ipaddress.IPv4Address(data[16:20]))
        kind, off, end = "ipv4", ihl, total
        later_fragment = frag & 0x1FFF != 0
    elif version == 6:
        if len(data) < 40:
            return None
        (plen,) = struct.unpack_from("!H", data, 4)
        proto = data[6]  # an extension header here: no UDP header read
        src_ip = str(ipaddress.IPv6Address(data[8:24]))
        dst_ip = str(ipaddress.IPv6Address(data[24:40]))
        kind, off, end = "ipv6", 40, 40 + plen
        later_fragment = False
    else:
        return None
    if proto != _UDP or later_fragment or len(data) < off + 8:
        return kind, (src_ip, None), (dst_ip, None), None
    sport, dport, ulen, _ = _UDP_HEADER.unpack_from(data, off)
    # the payload ends where both the UDP and the IP lengths say it does (a
    # length of 0, as offloads and jumbograms leave it, says nothing); what
    # the capture cut off is simply missing, and then fails to decode
    if end < off + 8:
        end = len(data)
    if ulen >= 8:
        end = min(end, off + ulen)
    payload = data[off + 8 : end]
    return kind, (src_ip, sport), (dst_ip, dport), payload


def _dns_name(name: Any) -> str:
    return str(name.to_text(omit_final_dot=True))


def _dns_fields(wire: bytes) -> dict[str, Any] | None:
    """The ECS ``dns`` object of one DNS message, or None when dnspython
    cannot decode it."""
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True)
    except Exception:
        # captured bytes are untrusted and dnspython's errors are not a
        # closed set (DNSException, ValueError, UnicodeError, ...): any
        # failure means "not a DNS message we can read"
        return None
    answer = bool(msg.flags & dns.flags.QR)
    out: dict[str, Any] = {
        "id": str(msg.id),
        "type": "answer" if answer else "query",
        "op_code": dns.opcode.to_text(msg.opcode()),
    }
    flags = dns.flags.to_text(msg.flags).split()
    flags = [f for f in flags if f != "QR"]
    if flags:
        out["header_flags"] = flags
    if msg.question:
        q = msg.question[0]
        out["question"] = {
            "name": _dns_name(q.name),
            "type": dns.rdatatype.to_text(q.rdtype),
            "class": dns.rdataclass.to_text(q.rdclass),
        }
    if answer:
        out["response_code"] = dns.rcode.to_text(msg.rcode())
        answers = []
        resolved = []
        for rrset in msg.answer:
            name = _dns_name(rrset.name)
            rtype = dns.rdatatype.to_text(rrset.rdtype)
            rclass = dns.rdataclass.to_text(rrset.rdclass)
            for rdata in rrset:
                data = rdata.to_text()
                answers.append({"name": name, "type": rtype,
                                "class": rclass, "ttl": rrset.ttl,
                                "data": data})  # fmt: skip
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    resolved.append(data)
        if answers:
            out["answers"] = answers
        if resolved:
            out["resolved_ip"] = resolved
    return out


def _packet_fields(doc: dict[str, Any], pkt: Packet) -> None:
    """``source``, ``destination``, ``network`` and ``dns`` of a captured
    packet."""
    network: dict[str, Any] = {"transport": "udp"}
    if pkt.origin:
        network["protocol"] = pkt.origin
    network["direction"] = (
        "egress" if pkt.direction == PacketDirection.EGRESS else "ingress"
    )
    doc["network"] = network
    ip_udp = _ip_udp(pkt.data)
    if ip_udp is None:
        return
    kind, src, dst, payload = ip_udp
    network["type"] = kind
    for key, (ip, port) in (("source", src), ("destination", dst)):
        end: dict[str, Any] = {"address": ip, "ip": ip}
        if port is not None:
            end["port"] = port
        doc[key] = end
    if payload is not None and pkt.origin == "dns":
        dns_doc = _dns_fields(payload)
        if dns_doc is not None:
            doc["dns"] = dns_doc


def _packet_action(pkt: Packet) -> str:
    """Upstream's ``packet-dns-sent`` / ``packet-dns-received``."""
    out = "packet"
    if pkt.origin:
        out += f"-{pkt.origin}"
    if pkt.direction == PacketDirection.EGRESS:
        out += "-sent"
    elif pkt.direction == PacketDirection.INGRESS:
        out += "-received"
    return out


def _network_types(events: int) -> list[str]:
    out = []
    if events & EV.SOCK_CONN_ESTABLISHED:
        out.append("start")
    if events & EV.SOCK_CONN_CLOSED:
        out.append("end")
    return out or ["info"]


# -- file and shared-memory events ----------------------------------------

# (bit, action part, event.type) in upstream's action order
_FILE_OPS = (
    (FileOp.CREATE, "-created", "creation"),
    (FileOp.MODIFY, "-written", "change"),
    (FileOp.MOVE, "-renamed", "change"),
    (FileOp.REMOVE, "-deleted", "deletion"),
)
_CONTENT = FileChange.CONTENT | FileChange.TRUNCATE
_ATTRIBUTES = FileChange.PERMISSIONS | FileChange.OWNER | FileChange.XATTRS


def file_action(f: File) -> str:
    """Upstream's ``file[-created][-written][-renamed][-deleted]``; a
    MODIFY known to have changed only attributes is ``-attributes-changed``
    rather than ``-written`` (both when it changed both)."""
    op = f.op or 0
    change = f.change or 0
    out = "file"
    for bit, part, _ in _FILE_OPS:
        if not op & bit:
            continue
        if bit == FileOp.MODIFY and change & _ATTRIBUTES:
            if change & _CONTENT:
                out += part
            out += "-attributes-changed"
        else:
            out += part
    return out


def _file_types(f: File) -> list[str]:
    op = f.op or 0
    out: list[str] = []
    for bit, _, kind in _FILE_OPS:
        if op & bit and kind not in out:
            out.append(kind)
    return out or ["info"]


def _path_fields(d: dict[str, Any], path: str) -> None:
    """``path``, ``name``, ``directory`` and ``extension`` of one path."""
    d["path"] = path
    directory, name = posixpath.split(path)
    if name:
        d["name"] = name
        ext = posixpath.splitext(name)[1]
        if len(ext) > 1:
            d["extension"] = ext[1:]
    if directory:
        d["directory"] = directory


_FILE_TYPES = (
    (_stat.S_ISREG, "file"),
    (_stat.S_ISDIR, "dir"),
    (_stat.S_ISLNK, "symlink"),
)


def _change_names(change: int) -> list[str]:
    """``["CONTENT", "TRUNCATE"]``, lowest bit first; hex for a bit
    without a name."""
    out = []
    v = int(change)
    while v:
        low = v & -v
        v ^= low
        out.append(FileChange(low).name or f"0x{low:x}")
    return out


def _classify(
    doc: dict[str, Any], category: str, type_: str, action: str
) -> None:
    """An event of one kind's ECS category, type and action."""
    event = doc["event"]
    event["category"] = [category]
    event["type"] = [type_]
    event["action"] = action


def _shm_fields(doc: dict[str, Any], s: Shm) -> None:
    obj: dict[str, Any] = {}
    if s.kind is not None:
        obj["kind"] = getattr(s.kind, "name", None) or str(s.kind)
    for key in ("key", "size", "flags", "path"):
        v = getattr(s, key)
        if v is not None:
            obj[key] = v
    doc.setdefault("quark", {})["shm"] = obj


# -- terminal output, ptrace requests and module loads --------------------


def _tty_fields(proc: dict[str, Any], doc: dict[str, Any], t: Tty) -> None:
    """``process.io`` and ``process.tty`` of terminal output, and its
    termios flags under ``quark.tty``."""
    data = t.data or b""
    text = data.decode("utf-8", "replace")
    skipped = t.truncated or 0
    io: dict[str, Any] = {
        "type": "tty",
        "text": text,
        "total_bytes_captured": len(data),
        "total_bytes_skipped": skipped,
    }
    if skipped:
        offset = len(data) if text.isascii() else len(text.encode())
        io["bytes_skipped"] = [{"offset": offset, "length": skipped}]
    proc["io"] = io
    tty: dict[str, Any] = {"char_device": {"major": t.major, "minor": t.minor}}
    if t.cols:
        tty["columns"] = t.cols
    if t.rows:
        tty["rows"] = t.rows
    proc["tty"] = tty
    doc.setdefault("quark", {})["tty"] = {
        "iflag": t.iflag, "oflag": t.oflag, "cflag": t.cflag,
        "lflag": t.lflag,
    }  # fmt: skip


# include/uapi/linux/ptrace.h: the requests every architecture has
_PTRACE_GENERIC = {
    0: "TRACEME", 1: "PEEKTEXT", 2: "PEEKDATA", 3: "PEEKUSR",
    4: "POKETEXT", 5: "POKEDATA", 6: "POKEUSR", 7: "CONT", 8: "KILL",
    9: "SINGLESTEP", 16: "ATTACH", 17: "DETACH", 24: "SYSCALL",
    0x4200: "SETOPTIONS", 0x4201: "GETEVENTMSG", 0x4202: "GETSIGINFO",
    0x4203: "SETSIGINFO", 0x4204: "GETREGSET", 0x4205: "SETREGSET",
    0x4206: "SEIZE", 0x4207: "INTERRUPT", 0x4208: "LISTEN",
    0x4209: "PEEKSIGINFO", 0x420A: "GETSIGMASK", 0x420B: "SETSIGMASK",
    0x420C: "SECCOMP_GET_FILTER", 0x420D: "SECCOMP_GET_METADATA",
    0x420E: "GET_SYSCALL_INFO", 0x420F: "GET_RSEQ_CONFIGURATION",
    0x4210: "SET_SYSCALL_USER_DISPATCH_CONFIG",  # 6.2
    0x4211: "GET_SYSCALL_USER_DISPATCH_CONFIG",  # 6.2
    0x4212: "SET_SYSCALL_INFO",  # 6.16
}  # fmt: skip
# arch/*/include/uapi/asm/ptrace*.h: the numbers below 0x4200 that are
# not generic mean different requests on different architectures
_PTRACE_ARCH = {
    "x86_64": {
        12: "GETREGS", 13: "SETREGS", 14: "GETFPREGS", 15: "SETFPREGS",
        18: "GETFPXREGS", 19: "SETFPXREGS", 21: "OLDSETOPTIONS",
        25: "GET_THREAD_AREA", 26: "SET_THREAD_AREA", 30: "ARCH_PRCTL",
        31: "SYSEMU", 32: "SYSEMU_SINGLESTEP", 33: "SINGLEBLOCK",
    },
    "aarch64": {
        31: "SYSEMU", 32: "SYSEMU_SINGLESTEP", 33: "PEEKMTETAGS",
        34: "POKEMTETAGS",
    },
}  # fmt: skip


def ptrace_request_name(request: int, architecture: str = "") -> str | None:
    """``PTRACE_ATTACH``: the kernel's name of a ptrace(2) request on
    ``architecture`` (``platform.machine()``: the generic requests only
    when it is neither ``x86_64`` nor ``aarch64``), or None."""
    name = _PTRACE_GENERIC.get(request)
    if name is None:
        name = _PTRACE_ARCH.get(architecture, {}).get(request)
        if name is None:
            return None
    return f"PTRACE_{name}"


def ptrace_action(request: int, architecture: str = "") -> str:
    """``ptrace-attach``: the ``event.action`` of a ptrace request;
    ``ptrace`` for one without a name."""
    name = ptrace_request_name(request, architecture)
    if name is None:
        return PTRACE_ACTION
    return f"ptrace-{name[7:].lower().replace('_', '-')}"


def _hex64(v: int) -> str:
    return f"0x{v & 0xFFFFFFFFFFFFFFFF:x}"


def _ptrace_fields(doc: dict[str, Any], pt: Ptrace, arch: str) -> None:
    obj: dict[str, Any] = {"child_pid": pt.child_pid, "request": pt.request}
    name = ptrace_request_name(pt.request, arch)
    if name is not None:
        obj["request_name"] = name
    obj["addr"] = _hex64(pt.addr)
    obj["data"] = _hex64(pt.data)
    doc.setdefault("quark", {})["ptrace"] = obj


def _container_fields(doc: dict[str, Any], c: Container) -> None:
    """``container.{id,runtime}`` and, when the cgroup path shows a
    Kubernetes pod, ``orchestrator.type: kubernetes`` and
    ``orchestrator.resource.{type: pod, id: <pod uid>}`` (ECS has no field
    for the pod's QoS class)."""
    doc["container"] = {"id": c.id, "runtime": c.runtime}
    if c.pod_uid is not None:
        doc["orchestrator"] = {
            "type": "kubernetes",
            "resource": {"type": "pod", "id": c.pod_uid},
        }


def _module_fields(doc: dict[str, Any], m: ModuleLoad) -> None:
    obj: dict[str, Any] = {"name": m.name}
    if m.version is not None:
        obj["version"] = m.version
    if m.src_version is not None:
        obj["src_version"] = m.src_version
    obj["taints"] = m.taints
    doc.setdefault("quark", {})["module"] = obj


class EcsEncoder:
    """Encodes events as ECS JSON documents (bytes, no newline).

    ``lookup`` finds a process by pid for ``process.parent`` (give
    ``queue.lookup``); ``dumps`` is the JSON serializer (``json.dumps`` by
    default, chosen by ``python -m quark.bench ecs``).
    """

    def __init__(
        self,
        lookup: Callable[[int], Process | None] | None = None,
        *,
        host: HostInfo | None = None,
        dumps: Callable[[Any], str] | None = None,
        clock_offsets: tuple[int, int] | None = None,
    ) -> None:
        self.lookup = lookup
        if clock_offsets is None:
            now_wall = time.time_ns()
            clock_offsets = (
                now_wall - time.monotonic_ns(),
                now_wall - time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            )
        self.mono_offset, self.boot_offset = clock_offsets
        self._users: dict[int, dict[str, str]] = {}
        # parent pid -> (its snapshot, its sub-document): snapshots are
        # immutable, so the same object encodes the same way
        self._parents: dict[int, tuple[Process, dict[str, Any]]] = {}
        self._groups: dict[int, dict[str, str]] = {}
        info = host or host_info()
        self.host = self._host(info)
        self._arch = info.architecture or ""
        self._dumps = dumps or default_dumps

    @staticmethod
    def _host(h: HostInfo) -> dict[str, Any]:
        osr = h.os_release
        os_obj = {
            "type": "linux",
            "kernel": h.kernel,
            "name": osr.get("NAME"),
            "version": osr.get("VERSION_ID"),
            "full": osr.get("PRETTY_NAME"),
            "family": osr.get("ID"),
        }
        host: dict[str, Any] = {
            "hostname": h.hostname,
            "name": h.hostname,
            "architecture": h.architecture,
            "os": {k: v for k, v in os_obj.items() if v is not None},
        }
        if h.boot_id:
            host["boot"] = {"id": h.boot_id}
        if h.ips:
            host["ip"] = list(h.ips)
        if h.macs:
            host["mac"] = list(h.macs)
        return host

    def _process(self, p: Process, *, top: bool) -> dict[str, Any]:
        d: dict[str, Any] = {}
        v = p._v
        for i, key, rule in _TOP if top else _NESTED:
            x = v[i]
            if x is not None:
                rule(self, d, key, x, v)
        return d

    # -- the rules that Process's table names (F(ecs=(key, rule))) ----------
    def _copy(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = x

    def _args(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        args = list(x)
        d[key] = args
        d["args_count"] = len(args)
        d["command_line"] = " ".join(args)

    def _boot_time(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = rfc3339(x + self.boot_offset)

    def _mono_time(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = rfc3339(x + self.mono_offset)

    def _parent(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = {"pid": x}  # replaced by the parent's document when known

    def _user(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = _named(self._users, x, _user_name)

    def _group(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d[key] = _named(self._groups, x, _group_name)

    def _tty(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        d["interactive"] = x != 0
        if x:
            d[key] = {"char_device": {"major": x, "minor": v[_TTY_MINOR]}}

    def _caps(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        thread = d.setdefault("thread", {"capabilities": {}})
        thread["capabilities"][key] = _caps(x)

    def _exit(self, d: dict[str, Any], key: str, x: Any, v: Any) -> None:
        if v[_EXIT_TIME] is not None:
            d[key] = x

    def _file(self, doc: dict[str, Any], f: File) -> None:
        """The ``file`` object (and ``quark.file``) of a file event."""
        d: dict[str, Any] = {}
        if f.path is not None:
            _path_fields(d, f.path)
        if f.mode is not None:
            for test, name in _FILE_TYPES:
                if test(f.mode):
                    d["type"] = name
                    break
        if f.sym_target is not None:
            d.setdefault("type", "symlink")
            d["target_path"] = f.sym_target
        if f.inode is not None:
            d["inode"] = str(f.inode)
        if f.uid is not None:
            user = _named(self._users, f.uid, _user_name)
            d["uid"] = user["id"]
            if "name" in user:
                d["owner"] = user["name"]
        if f.gid is not None:
            group = _named(self._groups, f.gid, _group_name)
            d["gid"] = group["id"]
            if "name" in group:
                d["group"] = group["name"]
        if f.size is not None:
            d["size"] = f.size
        if f.mode is not None:
            d["mode"] = f"{_stat.S_IMODE(f.mode):04o}"
        for key, ns in (("accessed", f.atime), ("mtime", f.mtime),
                        ("ctime", f.ctime)):  # fmt: skip
            if ns is not None:
                d[key] = rfc3339(ns)
        if f.old_path is not None:
            original: dict[str, Any] = {"path": f.old_path}
            name = posixpath.basename(f.old_path)
            if name:
                original["name"] = name
            d["Ext"] = {"original": original}
        doc["file"] = d
        if f.change:
            doc.setdefault("quark", {})["file"] = {
                "change": _change_names(f.change)
            }

    def document(self, ev: Event) -> dict[str, Any]:
        """The ECS document as a dict.

        Raises:
            ConfigError: ``ev`` is a bypass event (a raw ring record),
                which has no ECS form.
        """
        events = int(ev.events)
        if ev.bypass is not None or events & EV.BYPASS:
            raise ConfigError(
                "a BYPASS event is a raw ring record and has no ECS "
                "document (quark-mon -B -E prints its time and bytes)"
            )
        doc: dict[str, Any] = {
            "@timestamp": rfc3339(ev.time + self.mono_offset),
            "event": {
                "kind": "event",
                "category": ["process"],
                "type": _types(events),
                "action": event_action(events),
            },
            "host": self.host,
        }
        sock = ev.socket
        if sock is not None:
            event = doc["event"]
            event["category"] = ["network"]
            event["type"] = _network_types(events)
            _socket_fields(doc, sock)
        pkt = ev.packet
        if pkt is not None:
            event = doc["event"]
            event["category"] = ["network"]
            _packet_fields(doc, pkt)
            event["type"] = ["protocol"] if "dns" in doc else ["info"]
            event["action"] = _packet_action(pkt)
        file = ev.file
        if file is not None:
            event = doc["event"]
            event["category"] = ["file"]
            event["type"] = _file_types(file)
            event["action"] = file_action(file)
            self._file(doc, file)
        shm = ev.shm
        if shm is not None:
            _classify(doc, "process", "info", SHM_ACTION)
            _shm_fields(doc, shm)
        pt = ev.ptrace
        if pt is not None:
            _classify(doc, "process", "access",
                      ptrace_action(pt.request, self._arch))  # fmt: skip
            _ptrace_fields(doc, pt, self._arch)
        mod = ev.module_load
        if mod is not None:
            _classify(doc, "driver", "start", MODULE_ACTION)
            _module_fields(doc, mod)
        tty = ev.tty
        if tty is not None:
            _classify(doc, "process", "info", TTY_ACTION)
        p = ev.process
        if p is not None:
            proc = self._process(p, top=True)
            if p.ppid is not None and self.lookup is not None:
                parent = self.lookup(p.ppid)
                if parent is not None:
                    cached = self._parents.get(parent.pid)
                    if cached is None or cached[0] is not parent:
                        if len(self._parents) > 65536:
                            self._parents.clear()
                        cached = (parent, self._process(parent, top=False))
                        self._parents[parent.pid] = cached
                    proc["parent"] = cached[1]
            doc["process"] = proc
            container = p.container
            if container is not None:
                _container_fields(doc, container)
        if tty is not None:
            _tty_fields(doc.setdefault("process", {}), doc, tty)
        return doc

    def encode(self, ev: Event) -> str:
        return self._dumps(self.document(ev))


_Rule = Callable[[EcsEncoder, dict[str, Any], str, Any, Any], None]
# rule name -> (method, also in a parent's nested document)
_RULES: dict[str, tuple[_Rule, bool]] = {
    "copy": (EcsEncoder._copy, True),
    "args": (EcsEncoder._args, True),
    "boot_time": (EcsEncoder._boot_time, True),
    "mono_time": (EcsEncoder._mono_time, False),
    "parent": (EcsEncoder._parent, False),
    "user": (EcsEncoder._user, True),
    "group": (EcsEncoder._group, True),
    "tty": (EcsEncoder._tty, True),
    "caps": (EcsEncoder._caps, False),
    "exit": (EcsEncoder._exit, False),
}


def _plan(top: bool) -> tuple[tuple[int, str, _Rule], ...]:
    """(slot, key, rule) for every field of the table with an ECS key."""
    out = []
    for f in Process.TABLE:
        if f.decl.ecs is not None:
            key, name = f.decl.ecs
            rule, nested = _RULES[name]
            if top or nested:
                out.append((f.index, key, rule))
    return tuple(out)


_TOP = _plan(top=True)
_NESTED = _plan(top=False)
_TTY_MINOR = Process.FIELDS.index("tty_minor")
_EXIT_TIME = Process.FIELDS.index("exit_time")


def _sanitize(obj: Any) -> Any:
    """Bytes that were not UTF-8 (surrogate escapes) become U+FFFD: a JSON
    document must be valid UTF-8; the Process keeps the exact bytes."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape").decode(
            "utf-8", "replace"
        )
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_sanitize(v) for v in obj]
    return obj


def _stdlib_dumps(obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(_sanitize(obj), separators=(",", ":"),
                          ensure_ascii=False)  # fmt: skip
    return text


try:
    import orjson
except ImportError:  # the stdlib is the fallback: slower, same documents
    default_dumps = _stdlib_dumps
else:

    def _orjson_dumps(obj: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except orjson.JSONEncodeError:
            return orjson.dumps(_sanitize(obj)).decode()

    # chosen by measurement: python -m quark.bench ecs
    default_dumps = _orjson_dumps
