"""Facts about this host for ECS ``host.*``, read once."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

__all__ = ["HostInfo", "host_info"]


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    architecture: str
    kernel: str
    boot_id: str | None
    os_release: dict[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()


def _os_release(path: str = "/etc/os-release") -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    out[key] = value.strip().strip('"')
    except OSError:
        pass
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ipv4s() -> list[str]:
    """Local addresses from /proc/net/fib_trie (``/32 host LOCAL``)."""
    text = _read("/proc/net/fib_trie") or ""
    out: list[str] = []
    last = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            last = s[3:].strip()
        elif (
            "host LOCAL" in s
            and last
            and last not in out
            and not last.startswith("127.")
        ):
            out.append(last)
    return out


def _ipv6s() -> list[str]:
    out: list[str] = []
    for line in (_read("/proc/net/if_inet6") or "").splitlines():
        hexaddr = line.split()[0]
        addr = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr))
        if addr != "::1" and addr not in out:
            out.append(addr)
    return out


def _macs() -> list[str]:
    out: list[str] = []
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return out
    for name in names:
        mac = _read(f"/sys/class/net/{name}/address")
        if mac and mac != "00:00:00:00:00:00" and mac not in out:
            out.append(mac.upper().replace(":", "-"))
    return out


def host_info() -> HostInfo:
    u = os.uname()
    return HostInfo(
        hostname=socket.gethostname(),
        architecture=u.machine,
        kernel=u.release,
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        os_release=_os_release(),
        ips=tuple(_ipv4s() + _ipv6s()),
        macs=tuple(_macs()),
    )
