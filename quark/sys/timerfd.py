"""timerfd(2) on CLOCK_MONOTONIC: a descriptor that becomes readable when
its one-shot timer expires, until the timer is set again (setting it,
armed or not, clears a past expiry, so no read(2) is needed)."""

from __future__ import annotations

import ctypes
import os
import time

from quark.sys.libc import check, libc

__all__ = ["Timer"]

TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timer:
    """One timerfd. :meth:`arm` (after ``ns``) and :meth:`disarm` are one
    syscall each."""

    def __init__(self) -> None:
        lib = libc()
        settime = self._settime = lib.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int,
                            ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        settime.restype = ctypes.c_int
        create = lib.timerfd_create
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        create.restype = ctypes.c_int
        self.fd = check(
            create(time.CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK),
            "timerfd_create",
        )
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)

    def arm(self, ns: int) -> None:
        """Expire once, ``ns`` (at least 1) from now."""
        ns = max(1, ns)
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(ns, 1_000_000_000)
        check(self._settime(self.fd, 0, self._ref, None), "timerfd_settime")

    def disarm(self) -> None:
        """Stop, and clear an expiry not read yet (not readable any more)."""
        v = self._spec.it_value
        v.tv_sec = v.tv_nsec = 0
        check(self._settime(self.fd, 0, self._ref, None), "timerfd_settime")

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
