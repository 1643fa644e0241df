"""kprobe_events through tracefs, for the KPROBE backend.

Every probe quark installs lives in a group of its own,
``quark_<pid>_<n>`` (the installing process, and a counter so that two
queues of one process never share a name), so that closing removes exactly
ours, and the probes a crashed process left behind (its pid is gone) are
found and removed at the next open.
"""

from __future__ import annotations

import errno as _errno
import itertools
import os
import re

from quark.errors import NotSupportedError, PrivilegeError, QuarkError
from quark.sys import libc

__all__ = ["KprobeEvents", "ensure_mounted", "find_tracefs"]

ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
GROUP_PREFIX = "quark_"
_LINE = re.compile(r"^[pr]:(?P<group>[^/\s]+)/(?P<name>\S+)\s")
_OWNER = re.compile(rf"^{GROUP_PREFIX}(?P<pid>\d+)(?:_\d+)?$")
_SEQ = itertools.count()


def ensure_mounted(target: str, fstype: str) -> None:
    """Mount ``fstype`` on ``target`` if it is missing there (and the
    directory exists)."""
    if libc.is_mounted(target, fstype) or not os.path.isdir(target):
        return
    try:
        libc.mount(fstype, target, fstype)
    except OSError as e:
        if e.errno in (_errno.EPERM, _errno.EACCES):
            raise PrivilegeError(
                f"cannot mount {fstype} on {target}: not root?",
                errno=e.errno,
            ) from None
        raise NotSupportedError(
            f"cannot mount {fstype} on {target}: {e.strerror}",
            errno=e.errno,
        ) from None


def find_tracefs(roots: tuple[str, ...] = ROOTS) -> str:
    """The tracing directory that has kprobe_events."""
    for root in roots:
        if os.path.exists(os.path.join(root, "kprobe_events")):
            return root
    raise NotSupportedError(
        "no kprobe_events in tracefs (CONFIG_KPROBE_EVENTS off?)",
        errno=_errno.ENOENT,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KprobeEvents:
    """Adds and removes this process's kprobes."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or find_tracefs()
        self.path = os.path.join(self.root, "kprobe_events")
        self.group = f"{GROUP_PREFIX}{os.getpid()}_{next(_SEQ)}"
        self._names: list[str] = []
        self.removed_stale = self._remove_stale()

    def _write(self, line: str) -> None:
        # os.open, not open(..., "a"): Python seeks to the end of a file
        # opened for append, and kprobe_events refuses lseek (EINVAL). Never
        # O_TRUNC: that would remove every probe of the system.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except PermissionError as e:
            raise PrivilegeError(
                f"cannot write {self.path}: not root?", errno=e.errno
            ) from None
        except OSError as e:
            why = self.last_error()
            raise QuarkError(
                f"kprobe_events refused {line!r}: {e.strerror}"
                + (f" ({why})" if why else ""),
                errno=e.errno,
            ) from None

    def last_error(self) -> str:
        """The kernel's reason for the last refusal (tracefs error_log,
        Linux 5.4 and later), or ''."""
        try:
            with open(os.path.join(self.root, "error_log")) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return ""
        for ln in reversed(lines):
            if "error:" in ln:
                return ln.split("error:", 1)[1].strip()
        return ""

    def lines(self) -> list[str]:
        with open(self.path) as f:
            return f.read().splitlines()

    def _remove_stale(self) -> int:
        """Remove probes of quark groups whose process is gone."""
        n = 0
        for line in self.lines():
            m = _LINE.match(line)
            owner = _OWNER.match(m.group("group")) if m else None
            if m is None or owner is None:
                continue
            if not _pid_alive(int(owner.group("pid"))):
                self._write(f"-:{m.group('group')}/{m.group('name')}")
                n += 1
        return n

    def add(self, name: str, target: str, args: str = "") -> int:
        """``p:GROUP/NAME TARGET ARGS``; returns the event id (for perf)."""
        self._write(f"p:{self.group}/{name} {target} {args}".rstrip())
        self._names.append(name)
        with open(os.path.join(self.root, "events", self.group, name,
                               "id")) as f:  # fmt: skip
            return int(f.read())

    def format(self, name: str) -> str:
        with open(os.path.join(self.root, "events", self.group, name,
                               "format")) as f:  # fmt: skip
            return f.read()

    def close(self) -> None:
        """Remove every probe this object added. Idempotent."""
        names, self._names = self._names, []
        for name in reversed(names):
            try:
                self._write(f"-:{self.group}/{name}")
            except QuarkError:
                continue  # already gone: nothing left to release
