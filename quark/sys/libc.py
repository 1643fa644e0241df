"""The C library: one handle, and errno turned into :class:`OSError`.

- :func:`libc` loads the process's libc on first use (never at import) and
  declares every symbol of :data:`SYMBOLS` once; every caller shares it;
- :func:`oserror` is the one place where an errno becomes an exception
  with a message ``"<what>: <strerror>"``; :func:`check` raises it for a
  call that returned a negative value with ``errno`` set.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "SYMBOLS",
    "check",
    "is_mounted",
    "last_errno",
    "libc",
    "mount",
    "oserror",
]

# name: (restype, argtypes); argtypes None leaves a variadic function
# undeclared (the caller passes ctypes objects).
SYMBOLS: dict[str, tuple[Any, list[Any] | None]] = {
    "mount": (
        ctypes.c_int,
        [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ],
    ),
    "syscall": (ctypes.c_long, None),
    "vsnprintf": (
        ctypes.c_int,
        [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p],
    ),
}


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's C library, loaded once, with ``use_errno``."""
    handle = ctypes.CDLL(None, use_errno=True)
    for name, (restype, argtypes) in SYMBOLS.items():
        fn = getattr(handle, name)
        fn.restype = restype
        if argtypes is not None:
            fn.argtypes = argtypes
    return handle


def last_errno(default: int = _errno.EIO) -> int:
    """The ``errno`` of the last ctypes call of this thread (``default``
    when the failed call left it 0)."""
    return ctypes.get_errno() or default


def oserror(
    code: int,
    what: str,
    error: Callable[[int, str], OSError] = OSError,
) -> OSError:
    """The exception for errno ``code`` of ``what``: ``error(code,
    "what: strerror")``; ``error`` builds a subclass (libbpf's errors)."""
    return error(code, f"{what}: {os.strerror(code)}")


def check(rc: int, what: str) -> int:
    """``rc`` if not negative, else raise :func:`oserror` with ``errno``."""
    if rc < 0:
        raise oserror(last_errno(), what)
    return rc


def mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """mount(2); raises OSError with errno on failure."""
    rc = libc().mount(
        source.encode(), target.encode(), fstype.encode(), flags, None
    )
    check(rc, f"mount {fstype} on {target}")


def shmget(key: int, size: int, flags: int) -> int:
    """shmget(2): the id of a SysV shared memory segment."""
    fn = libc().shmget
    fn.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    return check(fn(key, size, flags), "shmget")


def shm_remove(shm_id: int) -> None:
    """shmctl(shm_id, IPC_RMID): the segment goes once detached."""
    check(libc().shmctl(shm_id, 0, None), "shmctl(IPC_RMID)")


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """ptrace(2) through libc (a PEEK request returns the word read)."""
    fn = libc().ptrace
    fn.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                   ctypes.c_void_p]  # fmt: skip
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    rc: int = fn(request, pid, addr or None, data or None)
    err = ctypes.get_errno()
    if rc == -1 and err:
        raise oserror(err, f"ptrace({request}, {pid})")
    return rc


def buffer_address(data: bytes) -> tuple[object, int]:
    """A buffer holding ``data`` and its address (keep the buffer)."""
    buf = ctypes.create_string_buffer(data)
    return buf, ctypes.addressof(buf)


def write_mapped(fd: int, data: bytes) -> None:
    """Write ``data`` at the start of the file open at ``fd`` through a
    shared writable mapping, not a write syscall."""
    import mmap

    with mmap.mmap(fd, len(data), mmap.MAP_SHARED) as m:
        m[: len(data)] = data


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2); raises OSError with errno on failure."""
    check(libc().umount2(target.encode(), flags), f"umount {target}")


def is_mounted(target: str, fstype: str, mounts: str = "/proc/mounts") -> bool:
    try:
        with open(mounts) as f:
            for line in f:
                parts = line.split()
                if (
                    len(parts) >= 3
                    and parts[1] == target
                    and parts[2] == fstype
                ):
                    return True
    except OSError:
        return False
    return False
