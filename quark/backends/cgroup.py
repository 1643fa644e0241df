"""The cgroup v2 root, where the EBPF backend attaches its cgroup programs.

cgroup v2 is not always at /sys/fs/cgroup: a hybrid layout mounts it at
/sys/fs/cgroup/unified (the CI host does), and a minimal system may not
mount it at all. The root is found in /proc/self/mountinfo; when no mount
of it exists, a private one is made in a temporary directory, the root is
opened, and the mount is detached at once (the open descriptor keeps the
cgroup, and nothing is left behind, even if the process dies).
"""

from __future__ import annotations

import errno as _errno
import os
import tempfile

from quark.errors import NotSupportedError, PrivilegeError
from quark.sys import libc

__all__ = ["cgroup2_root", "open_cgroup2_root"]

_MNT_DETACH = 2


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the root of the cgroup v2 hierarchy is mounted, if anywhere
    (a mount of a sub-cgroup, as in a container, is not the root)."""
    try:
        with open(mountinfo) as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if (
            len(fields) >= 5
            and tail
            and tail[0] == "cgroup2"
            and fields[3] == "/"
        ):
            return _unescape(fields[4])
    return None


def open_cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> int:
    """An O_RDONLY descriptor of the cgroup v2 root directory."""
    where = cgroup2_root(mountinfo)
    if where is not None:
        return os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tmp = tempfile.mkdtemp(prefix="quark-cgroup2.")
    try:
        try:
            libc.mount("cgroup2", tmp, "cgroup2")
        except OSError as e:
            if e.errno in (_errno.EPERM, _errno.EACCES):
                raise PrivilegeError(
                    "cgroup v2 is not mounted and mounting it needs root",
                    errno=e.errno,
                ) from None
            raise NotSupportedError(
                f"no cgroup v2 hierarchy: not mounted, and mounting it "
                f"failed: {e.strerror} (CONFIG_CGROUPS, cgroup_no_v1?)",
                errno=e.errno,
            ) from None
        try:
            return os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            libc.umount2(tmp, _MNT_DETACH)
    finally:
        os.rmdir(tmp)
