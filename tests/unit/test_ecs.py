"""ECS documents, the text dump and the DOT graph, without a kernel."""

from __future__ import annotations

import json

from quark import EV, ID_CHANGE, Event, Process
from quark.dump import dump_event, dump_process, events_str
from quark.ecs import EcsEncoder, event_action, rfc3339
from quark.graph import cache_graph
from quark.sysinfo import HostInfo

HOST = HostInfo("h", "x86_64", "6.1.0", "boot-id", {"NAME": "Debian"})
PARENT = Process(pid=10, ppid=1, comm="bash", exe="/usr/bin/bash",
                 cmdline=["bash"], euid=0)  # fmt: skip
CHILD = Process(
    pid=11, ppid=10, uid=1000, euid=0, suid=0, gid=100, egid=100, sgid=100,
    comm="sudo", exe="/usr/bin/sudo", cmdline=["sudo", "-i", "\udcff"],
    cwd="/root", start_time=5 * 10**9, exit_code=-9, exit_time=7 * 10**9,
    cap_effective=(1 << 21) | (1 << 45), cap_permitted=0, tty_major=136,
    tty_minor=3, entity_id="CwAAAAAAAAAAAAAA",
)  # fmt: skip


def _enc() -> EcsEncoder:
    return EcsEncoder({10: PARENT}.get, host=HOST, clock_offsets=(0, 0))


def test_timestamps_are_rfc3339_with_zero_padded_fractions() -> None:
    assert rfc3339(5_000_000) == "1970-01-01T00:00:00.005000000Z"
    assert rfc3339(1_700_000_000_000_000_001).endswith(".000000001Z")


def test_actions_and_types() -> None:
    assert event_action(EV.FORK | EV.EXEC | EV.EXIT) == (
        "process-forked-executed-exited"
    )
    assert event_action(EV.EXEC) == "process-executed"
    doc = _enc().document(Event(events=EV.ID_CHANGE, time=1, process=CHILD,
                                id_change=ID_CHANGE.SETUID))  # fmt: skip
    assert doc["event"]["type"] == ["change"]
    assert doc["event"]["category"] == ["process"]
    snap = _enc().document(Event(events=EV(0), time=1, process=CHILD))
    assert snap["event"]["type"] == ["info"]


def test_process_fields_where_ecs_puts_them() -> None:
    text = _enc().encode(Event(events=EV.EXEC | EV.EXIT, time=7 * 10**9,
                               process=CHILD))  # fmt: skip
    text.encode("utf-8")  # valid UTF-8 even with undecodable argv bytes
    doc = json.loads(text)
    p = doc["process"]
    assert p["user"]["id"] == "0" and p["real_user"]["id"] == "1000"
    assert p["saved_user"]["id"] == "0" and p["group"]["id"] == "100"
    assert "user" not in p["user"]  # upstream nested them: we do not
    assert p["args"] == ["sudo", "-i", "\ufffd"] and p["args_count"] == 3
    assert (
        p["exit_code"] == -9 and p["end"] == "1970-01-01T00:00:07.000000000Z"
    )
    assert p["start"] == "1970-01-01T00:00:05.000000000Z"
    assert p["interactive"] is True
    assert p["tty"]["char_device"] == {"major": 136, "minor": 3}
    assert p["thread"]["capabilities"]["effective"] == ["CAP_SYS_ADMIN",
                                                        "CAP_45"]  # fmt: skip
    assert p["parent"]["pid"] == 10 and p["parent"]["name"] == "bash"
    assert doc["host"]["os"]["kernel"] == "6.1.0"


def test_dump_format() -> None:
    out = dump_event(Event(events=EV.FORK | EV.EXEC | EV.EXIT, time=1,
                           process=CHILD))  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "->11 (FORK+EXEC+EXIT)"
    assert "  COMM\tcomm=sudo" in lines
    assert "  EXIT\texit_code=-9 exit_time=7000000000" in lines
    assert dump_process(PARENT).splitlines()[0] == "->10"
    assert events_str(EV.EXIT | EV.FORK) == "FORK+EXIT"


def test_dump_of_every_field_is_upstreams_layout() -> None:
    """The dump, driven by Process's table, line for line: upstream's tags
    and order, a PROC block only with a ppid, EXIT only after an exit."""
    p = CHILD._replace(
        pgid=11, sid=11, cap_inheritable=0, cap_bset=0xFF, cap_ambient=0,
        uts_inonum=1, ipc_inonum=2, mnt_inonum=3, net_inonum=4,
        entry_leader=11, entry_leader_type=6, exe_inode=42,
        cgroup="/user.slice", env=["A=1", "B=\udcff"],
    )  # fmt: skip
    assert dump_process(p, EV.EXEC) == (
        "->11 (EXEC)\n"
        "  COMM\tcomm=sudo\n"
        "  CMDL\tcmdline=[ sudo, -i, \udcff ]\n"
        "  PROC\tppid=10\n"
        "  PROC\tuid=1000 gid=100 suid=0 sgid=100 euid=0 egid=100 pgid=11 "
        "sid=11\n"
        "  PROC\tcap_inheritable=0x0 cap_permitted=0x0 "
        "cap_effective=0x200000200000\n"
        "  PROC\tcap_bset=0xff cap_ambient=0x0\n"
        "  PROC\ttime_boot=5000000000 tty_major=136 tty_minor=3\n"
        "  PROC\tuts_inonum=1 ipc_inonum=2\n"
        "  PROC\tmnt_inonum=3 net_inonum=4\n"
        "  PROC\tentity_id=CwAAAAAAAAAAAAAA entry_leader_type=TERM "
        "entry_leader=11\n"
        "  CWD\tcwd=/root\n"
        "  EXE\texe=/usr/bin/sudo exe_inode=42\n"
        "  ENV\tenv_len=8\n"
        "  CGRP\tcgroup=/user.slice\n"
        "  EXIT\texit_code=-9 exit_time=7000000000\n"
    )
    bare = dump_process(Process(pid=5, exit_code=1))
    assert bare == "->5\n"  # no ppid: no PROC; no exit_time: no EXIT


def test_graph_has_nodes_and_edges() -> None:
    dot = cache_graph([PARENT, CHILD])
    assert dot.startswith("digraph quark {")
    assert '"10" -> "11";' in dot
    assert dot.count("[label=") == 2
