"""libc calls the standard library lacks: mount(2)."""

from __future__ import annotations

import ctypes
import os

__all__ = ["is_mounted", "mount"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
    ctypes.c_void_p,
]  # fmt: skip
_libc.mount.restype = ctypes.c_int


def mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """mount(2); raises OSError with errno on failure."""
    if (
        _libc.mount(
            source.encode(), target.encode(), fstype.encode(), flags, None
        )
        != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, f"mount {fstype} on {target}: {os.strerror(code)}")


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
