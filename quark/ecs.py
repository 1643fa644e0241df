"""Events as Elastic Common Schema (ECS) documents, one JSON object each.

Fixes upstream's known bugs (docs: upstream §8): every document has
``@timestamp``; ``event.category`` and ``event.type`` are set as ECS defines
them for processes (fork/exec: ``start``, exit: ``end``, id change and
comm change: ``change``, the initial snapshot: ``info``); the user and group
objects stand directly under ``process`` (``process.user``,
``process.real_user``, ``process.saved_user``, likewise groups), where ECS
puts them; fractions of seconds are zero-padded.

Times: ``Event.time`` and ``exit_time`` are CLOCK_MONOTONIC and
``start_time`` CLOCK_BOOTTIME; both become wall-clock times through offsets
measured once when the encoder is made (so a clock step after that is not
followed, and suspend is accounted for in the boot-time offset only).
"""

from __future__ import annotations

import grp
import json
import pwd
import time
from collections.abc import Callable
from typing import Any

from quark.events import EV, Event, Process
from quark.sysinfo import HostInfo, host_info

__all__ = ["CAPABILITIES", "EcsEncoder", "event_action", "rfc3339"]

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


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def rfc3339(ns: int) -> str:
    """``2026-11-24T23:35:01.000000005Z``: UTC, 9 zero-padded digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    if secs != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second[0] = secs
    return f"{_second[1]}.{frac:09d}Z"


def event_action(events: int) -> str:
    """Upstream's ``event.action``: ``process-forked-executed-exited``."""
    if not events & (EV.FORK | EV.EXEC | EV.EXIT | _PROCESS_CHANGE):
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
        self.host = self._host(host or host_info())
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

    def document(self, ev: Event) -> dict[str, Any]:
        """The ECS document as a dict."""
        events = int(ev.events)
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
