"""Upstream's human-readable event dump (``quark_event_dump``).

::

    ->4242 (FORK+EXEC+EXIT)
      COMM\tcomm=true
      CMDL\tcmdline=[ /bin/true, -x ]
      PROC\tppid=4241
      ...
      EXIT\texit_code=0 exit_time=123

Unknown members print as ``?``; a process snapshot (the initial dump of the
cache) has no ``(...)`` part.
"""

from __future__ import annotations

import os

from quark.events import ELT, EV, Event, Process

__all__ = ["dump_event", "dump_process", "events_str"]

_NAMES = [(bit, bit.name) for bit in EV if bit.name]


def events_str(events: int) -> str:
    """``FORK+EXEC+EXIT``: the bits' names joined with ``+``."""
    return "+".join(name for bit, name in _NAMES if events & bit)


def _v(x: object) -> str:
    return "?" if x is None else str(x)


def _x(x: int | None) -> str:
    return "?" if x is None else f"0x{x:x}"


def dump_process(p: Process, events: int = 0) -> str:
    """The dump of one process, as the event ``events`` carried it."""
    out = [f"->{p.pid}"]
    if events:
        out.append(f" ({events_str(events)})")
    out.append("\n")
    if p.comm:
        out.append(f"  COMM\tcomm={p.comm}\n")
    cmdline = p.cmdline
    if cmdline is not None:
        out.append(f"  CMDL\tcmdline=[ {', '.join(cmdline)} ]\n")
    if p.ppid is not None:
        elt = p.entry_leader_type
        elt_name = ELT(elt).name if elt is not None else "?"
        out.append(
            f"  PROC\tppid={p.ppid}\n"
            f"  PROC\tuid={_v(p.uid)} gid={_v(p.gid)} suid={_v(p.suid)} "
            f"sgid={_v(p.sgid)} euid={_v(p.euid)} egid={_v(p.egid)} "
            f"pgid={_v(p.pgid)} sid={_v(p.sid)}\n"
            f"  PROC\tcap_inheritable={_x(p.cap_inheritable)} "
            f"cap_permitted={_x(p.cap_permitted)} "
            f"cap_effective={_x(p.cap_effective)}\n"
            f"  PROC\tcap_bset={_x(p.cap_bset)} "
            f"cap_ambient={_x(p.cap_ambient)}\n"
            f"  PROC\ttime_boot={_v(p.start_time)} "
            f"tty_major={_v(p.tty_major)} tty_minor={_v(p.tty_minor)}\n"
            f"  PROC\tuts_inonum={_v(p.uts_inonum)} "
            f"ipc_inonum={_v(p.ipc_inonum)}\n"
            f"  PROC\tmnt_inonum={_v(p.mnt_inonum)} "
            f"net_inonum={_v(p.net_inonum)}\n"
            f"  PROC\tentity_id={_v(p.entity_id)} "
            f"entry_leader_type={elt_name} "
            f"entry_leader={_v(p.entry_leader)}\n"
        )
    if p.cwd is not None:
        out.append(f"  CWD\tcwd={p.cwd}\n")
    if p.exe is not None:
        out.append(f"  EXE\texe={p.exe}\n")
    env = p.env
    if env is not None:
        size = sum(len(os.fsencode(e)) + 1 for e in env)
        out.append(f"  ENV\tenv_len={size}\n")
    if p.cgroup is not None:
        out.append(f"  CGRP\tcgroup={p.cgroup}\n")
    if p.exit_time is not None:
        out.append(
            f"  EXIT\texit_code={_v(p.exit_code)} exit_time={p.exit_time}\n"
        )
    return "".join(out)


def dump_event(ev: Event) -> str:
    if ev.process is None:
        return f"->? ({events_str(ev.events)})\n"
    return dump_process(ev.process, ev.events)
