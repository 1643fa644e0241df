"""Scrape /proc to seed the process and socket caches at open.

The parsers take text; :func:`scrape` and :func:`scrape_sockets` walk a
/proc root that tests can point at a fixture tree. A process that exits
while it is being read is simply left out (its events, if any, are already
being captured: the backend is listening before the scrape starts).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from quark.errors import DecodeError
from quark.events import SockAddr, Socket, SockOrigin
from quark.raw.types import RawTask, Seed

__all__ = [
    "CgroupSource",
    "cgroup_source",
    "clock_ticks",
    "parse_cgroup",
    "parse_stat",
    "parse_status",
    "parse_tcp_table",
    "read_cgroup_source",
    "scrape",
    "scrape_pid",
    "scrape_sockets",
    "thread_owner",
    "tty_split",
]


def clock_ticks() -> int:
    """USER_HZ, the unit of /proc/PID/stat times."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def parse_status(text: str) -> dict[str, int]:
    """Ids, ppid and capability sets from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "PPid":
            out["ppid"] = int(value)
        elif key == "Uid":
            r, e, s, _fs = (int(x) for x in value.split())
            out.update(uid=r, euid=e, suid=s)
        elif key == "Gid":
            r, e, s, _fs = (int(x) for x in value.split())
            out.update(gid=r, egid=e, sgid=s)
        elif key == "CapInh":
            out["cap_inheritable"] = int(value, 16)
        elif key == "CapPrm":
            out["cap_permitted"] = int(value, 16)
        elif key == "CapEff":
            out["cap_effective"] = int(value, 16)
        elif key == "CapBnd":
            out["cap_bset"] = int(value, 16)
        elif key == "CapAmb":
            out["cap_ambient"] = int(value, 16)
    return out


def thread_owner(tid: int, procfs: str = "/proc") -> tuple[int, int] | None:
    """(tgid, ppid) of the process thread ``tid`` belongs to (in this
    procfs's pid namespace), or None when it is gone."""
    try:
        status = _read(f"{procfs}/{tid}/status", 4096).decode()
    except OSError:
        return None
    tgid = ppid = None
    for line in status.splitlines():
        if line.startswith("Tgid:"):
            tgid = int(line.split()[1])
        elif line.startswith("PPid:"):
            ppid = int(line.split()[1])
            break  # PPid follows Tgid
    if tgid is None or ppid is None:
        return None
    return tgid, ppid


def tty_split(tty_nr: int) -> tuple[int, int]:
    """(major, minor) of a /proc/PID/stat ``tty_nr`` (new_encode_dev)."""
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    return major, minor


def parse_stat(text: str, hz: int) -> dict[str, int]:
    """pgid, sid, tty and the start time (ns since boot) from
    /proc/PID/stat. The comm may hold spaces and parentheses: fields start
    after the last ``)``."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    pgid = int(rest[2])
    sid = int(rest[3])
    major, minor = tty_split(int(rest[4]))
    start_ticks = int(rest[19])
    if 1_000_000_000 % hz == 0:
        start = start_ticks * (1_000_000_000 // hz)
    else:
        start = start_ticks * 1_000_000_000 // hz
    return {
        "pgid": pgid,
        "sid": sid,
        "tty_major": major,
        "tty_minor": minor,
        "start_time": start,
    }


#: The v1 hierarchies whose path stands for a process's cgroup when no v2
#: one is mounted (a legacy layout), best first. ``pids``, as upstream: a
#: runtime puts a container in every controller's hierarchy at the same
#: path (runc's cgroupfs and systemd drivers), and pids is mounted on
#: every system where containers run; then systemd's named hierarchy,
#: which holds every unit; then any.
CGROUP_V1_ORDER = ("pids", "name=systemd")


def parse_cgroup(text: str) -> str | None:
    """The path that :attr:`quark.Process.cgroup` holds, from the text of
    /proc/PID/cgroup.

    - v2 (unified) and hybrid layouts: the ``0::`` line, the unified
      hierarchy. On a hybrid host the runtimes put containers there too
      (systemd units are in every hierarchy; runc's cgroupfs driver joins
      /sys/fs/cgroup/unified), and it is the one the EBPF program reads
      (``task->cgroups->dfl_cgrp``).
    - v1 (legacy) layouts, where no cgroup2 is mounted and the kernel
      shows no ``0::`` line: the first of :data:`CGROUP_V1_ORDER` that is
      mounted, else the first v1 line.
    """
    v1: dict[str, str] = {}
    first = None
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            return path
        if not controllers:
            continue
        if first is None:
            first = path
        for c in controllers.split(","):
            v1.setdefault(c, path)
    for c in CGROUP_V1_ORDER:
        if c in v1:
            return v1[c]
    return first


@dataclass(frozen=True)
class CgroupSource:
    """The hierarchy whose path :func:`parse_cgroup` takes on this system,
    so that the backends' records read the same one.

    - ``hierarchy``: its id (0: cgroup v2), as /proc/PID/cgroup and the
      ``cgroup_attach_task`` tracepoint number it; None when it is v1's
      named ``name=systemd`` or another without a controller, which a BPF
      program cannot reach (records then carry no cgroup: the scrape and
      fork inheritance give it).
    - ``ssid``: for a v1 controller, its subsystem id (``task->cgroups->
      subsys[ssid]``): its line's index in /proc/cgroups.
    """

    hierarchy: int | None
    ssid: int | None = None

    @property
    def v2(self) -> bool:
        return self.hierarchy == 0


def cgroup_source(self_cgroup: str, proc_cgroups: str) -> CgroupSource:
    """Which hierarchy :func:`parse_cgroup` reads, from the texts of
    /proc/self/cgroup and /proc/cgroups."""
    v1: dict[str, int] = {}
    for line in self_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, _path = rest.partition(":")
        if hid == "0" and controllers == "":
            return CgroupSource(0)
        for c in controllers.split(","):
            if c and hid.isdigit():
                v1.setdefault(c, int(hid))
    for c in CGROUP_V1_ORDER:
        if c not in v1:
            continue
        # /proc/cgroups lists every subsystem in subsystem id order
        names = [
            ln.split()[0]
            for ln in proc_cgroups.splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        if c in names:
            return CgroupSource(v1[c], names.index(c))
        return CgroupSource(None)  # a named hierarchy: no subsystem
    return CgroupSource(None)


def read_cgroup_source() -> CgroupSource:
    """:func:`cgroup_source` of the running system (v2 when it cannot
    tell)."""
    try:
        with open("/proc/self/cgroup") as f:
            mine = f.read()
        with open("/proc/cgroups") as f:
            table = f.read()
    except OSError:
        return CgroupSource(0)
    return cgroup_source(mine, table)


def _split_nul(data: bytes) -> tuple[str, ...]:
    if not data:
        return ()
    if data.endswith(b"\0"):
        data = data[:-1]
    return tuple(os.fsdecode(a) for a in data.split(b"\0"))


def _read(path: str, limit: int = -1) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ns_inode(path: str) -> int | None:
    link = _readlink(path)
    if link is None or "[" not in link:
        return None
    return int(link[link.index("[") + 1 : link.rindex("]")])


def _read_env(path: str, max_env: int) -> tuple[str, ...] | None:
    if max_env <= 0:
        return None
    try:
        data = _read(path, max_env)
    except OSError:
        return None
    if len(data) == max_env and not data.endswith(b"\0"):
        data = data[: data.rfind(b"\0") + 1]  # keep whole entries only
    return _split_nul(data)


def scrape_pid(root: str, pid: int, *, max_env: int, hz: int) -> Seed | None:
    """One process, or None if it vanished or is not readable."""
    d = f"{root}/{pid}"
    try:
        status = parse_status(_read(f"{d}/status").decode())
        stat = parse_stat(_read(f"{d}/stat").decode(errors="replace"), hz)
    except (OSError, ValueError, IndexError):
        return None
    values: dict[str, Any] = {**status, **stat}
    for ns in ("uts", "ipc", "mnt", "net"):
        values[f"{ns}_inonum"] = _ns_inode(f"{d}/ns/{ns}")
    try:
        values["comm"] = os.fsdecode(_read(f"{d}/comm").rstrip(b"\n"))
    except OSError:
        pass
    cwd = _readlink(f"{d}/cwd")
    values["cwd"] = cwd
    try:
        values["cgroup"] = parse_cgroup(_read(f"{d}/cgroup").decode())
    except OSError:
        pass
    exe = _readlink(f"{d}/exe")
    if exe is not None:
        try:
            values["exe_inode"] = os.stat(f"{d}/exe").st_ino
        except OSError:
            pass
    kthread = exe is None and status.get("ppid") in (0, 2)
    if not kthread:
        values["env"] = _read_env(f"{d}/environ", max_env)
    try:
        args: tuple[str, ...] | None = _split_nul(_read(f"{d}/cmdline"))
    except OSError:
        args = None
    if args == ():
        args = None  # kernel threads and zombies have no argv
    return Seed(pid, RawTask(**values), exe=exe, args=args)


def _pids(root: str) -> Iterator[int]:
    with os.scandir(root) as it:
        for entry in it:
            if entry.name.isdigit():
                yield int(entry.name)


def scrape(
    root: str = "/proc", *, max_env: int = 4096, hz: int | None = None
) -> list[Seed]:
    """Every process (thread-group leaders only) under ``root``, by pid."""
    return scrape_counted(root, max_env=max_env, hz=hz)[0]


def scrape_counted(
    root: str = "/proc", *, max_env: int = 4096, hz: int | None = None
) -> tuple[list[Seed], int]:
    """:func:`scrape`, and how many listed pids were skipped: those that
    vanished (or turned unreadable) between the listing and their read."""
    hz = hz or clock_ticks()
    seeds = []
    skipped = 0
    for pid in sorted(_pids(root)):
        s = scrape_pid(root, pid, max_env=max_env, hz=hz)
        if s is None:
            skipped += 1
        else:
            seeds.append(s)
    return seeds, skipped


# -- TCP sockets -------------------------------------------------------------

_TCP_ESTABLISHED = "01"
_TCP_CLOSE_WAIT = "08"  # the peer closed, the socket is still held
_TCP_LISTEN = "0A"
_TCP_STATES = (_TCP_ESTABLISHED, _TCP_CLOSE_WAIT, _TCP_LISTEN)


def _tcp_addr(text: str, little: bool) -> SockAddr:
    """``ADDR:PORT`` of /proc/net/tcp{,6}: the address is the kernel's
    ``__be32`` words, each printed as a host-order u32 (``%08X``), the port
    a host-order number."""
    hexaddr, _, hexport = text.partition(":")
    port = int(hexport, 16)
    if len(hexaddr) == 8:
        n = int(hexaddr, 16)
        b = n.to_bytes(4, "little" if little else "big")
        return SockAddr(socket.AF_INET, f"{b[0]}.{b[1]}.{b[2]}.{b[3]}", port)
    if len(hexaddr) == 32:
        raw = bytes.fromhex(hexaddr)
        if little:
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        return SockAddr.of(raw, port)  # as every SockAddr spells it
    raise ValueError(f"bad address {text!r}")


def parse_tcp_table(
    text: str, path: str = "tcp", *, little: bool = sys.byteorder == "little"
) -> list[tuple[SockAddr, SockAddr, int]]:
    """``(local, remote, inode)`` of every ESTABLISHED, CLOSE_WAIT or
    LISTEN socket of a /proc/net/tcp or tcp6 table that a process holds
    (inode > 0: a connection still in its listener's accept queue has none
    yet; its ACCEPT will tell of it). Malformed lines are skipped; a text
    that is not such a table raises DecodeError naming ``path``."""
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if header[:2] != ["sl", "local_address"] or "inode" not in header:
        raise DecodeError(f"{path}: not a TCP socket table (bad header)")
    out = []
    for line in lines[1:]:
        f = line.split()
        # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...
        if len(f) < 10 or f[3] not in _TCP_STATES:
            continue
        try:
            inode = int(f[9])
            if inode <= 0:
                continue
            out.append(
                (_tcp_addr(f[1], little), _tcp_addr(f[2], little), inode)
            )
        except ValueError:
            continue
    return out


def _socket_holders(root: str, inodes: Iterable[int]) -> dict[int, int]:
    """The lowest pid holding each socket inode (``socket:[INODE]`` links
    under ``root/PID/fd``). Processes that cannot be read or that vanish are
    skipped; the walk stops once every inode has its holder."""
    want = set(inodes)
    found: dict[int, int] = {}
    if not want:
        return found
    try:
        pids = sorted(_pids(root))
    except OSError:
        return found
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    for pid in pids:
        try:
            dfd = os.open(f"{root}/{pid}/fd", flags)
        except OSError:
            continue  # no permission, or gone
        try:
            names = os.listdir(dfd)
            for name in names:
                try:
                    link = os.readlink(name, dir_fd=dfd)
                except OSError:
                    continue  # closed since the listing
                if not link.startswith("socket:["):
                    continue
                try:
                    inode = int(link[8:-1])
                except ValueError:
                    continue
                if inode in want:
                    want.discard(inode)
                    found[inode] = pid
            if not want:
                break
        except OSError:
            continue
        finally:
            os.close(dfd)
    return found


def scrape_sockets(procfs: str = "/proc", now: int = 0) -> list[Socket]:
    """The TCP sockets of this network namespace that are ESTABLISHED,
    CLOSE_WAIT (the peer closed, the socket is still held) or LISTENing,
    from ``procfs``/net/tcp and tcp6 (no tcp6: no IPv6), each
    with the lowest pid holding it (None if none is found),
    ``conn_origin=SCRAPE`` and ``established_time=now``. Ordered as the
    tables list them, IPv4 first."""
    try:
        net_inonum: int | None = os.stat(f"{procfs}/self/ns/net").st_ino
    except OSError:
        net_inonum = None
    entries: list[tuple[SockAddr, SockAddr, int]] = []
    for name in ("tcp", "tcp6"):
        path = f"{procfs}/net/{name}"
        try:
            text = _read(path).decode("ascii", errors="replace")
        except FileNotFoundError:
            continue  # no IPv6 (or no TCP at all): no sockets of it
        entries += parse_tcp_table(text, path)
    holders = _socket_holders(procfs, (inode for _, _, inode in entries))
    out = []
    for local, remote, inode in entries:
        pid = holders.get(inode)
        out.append(
            Socket(
                local,
                remote,
                pid_origin=pid,
                pid_last_use=pid,
                established_time=now,
                close_time=None,
                conn_origin=SockOrigin.SCRAPE,
                net_inonum=net_inonum,
            )
        )
    return out
