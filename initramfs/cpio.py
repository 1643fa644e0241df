"""A writer of the cpio "newc" format, the one the kernel unpacks as an
initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).

Each member: the magic ``070701``, thirteen 8-digit hex fields (ino, mode,
uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
namesize, check), the name with its NUL, padding to 4 bytes, the data,
padding to 4 bytes. The archive ends with a member named ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

__all__ = ["Entry", "write_newc"]


@dataclass(frozen=True)
class Entry:
    """One member: a directory, a regular file or a symlink."""

    name: str  # relative, no leading "/"
    mode: int  # full st_mode: S_IFDIR/S_IFREG/S_IFLNK | permissions
    data: bytes = b""  # file content, or the symlink's target

    @classmethod
    def dir(cls, name: str, perm: int = 0o755) -> Entry:
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> Entry:
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode())


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(ino: int, mode: int, data: bytes, name: bytes) -> bytes:
    namez = name + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return (
        header
        + namez
        + _pad(len(header) + len(namez))
        + data
        + _pad(len(data))
    )


def write_newc(entries: list[Entry]) -> bytes:
    """The archive of ``entries``, in order (parents before children)."""
    out = []
    seen = set()
    for ino, e in enumerate(entries, start=1):
        name = e.name.strip("/")
        if not name or name in seen:
            raise ValueError(f"bad or duplicate cpio member name {e.name!r}")
        seen.add(name)
        if stat.S_IFMT(e.mode) == stat.S_IFDIR and e.data:
            raise ValueError(f"directory {name} cannot have data")
        out.append(_member(ino, e.mode, e.data, name.encode()))
    out.append(_member(0, 0, b"", b"TRAILER!!!"))
    return b"".join(out)
