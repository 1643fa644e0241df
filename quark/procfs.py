"""Scrape /proc to seed the process cache at open.

The parsers take text; :func:`scrape` walks a /proc root that tests can point
at a fixture tree. A process that exits while it is being read is simply
left out (its events, if any, are already being captured: the backend is
listening before the scrape starts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from quark.raw.types import RawTask, Seed

__all__ = [
    "clock_ticks",
    "parse_cgroup",
    "parse_stat",
    "parse_status",
    "scrape",
    "scrape_pid",
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


def parse_cgroup(text: str) -> str | None:
    """The cgroup v2 path (``0::`` line), else the v1 ``pids`` path."""
    v1 = None
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            return path
        if "pids" in controllers.split(","):
            v1 = path
    return v1


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
    hz = hz or clock_ticks()
    seeds = []
    for pid in sorted(_pids(root)):
        s = scrape_pid(root, pid, max_env=max_env, hz=hz)
        if s is not None:
            seeds.append(s)
    return seeds
