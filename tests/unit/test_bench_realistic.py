"""The pure helpers of the realistic benchmarks (ebpf, storm, stall):
parsing what quark-mon, auditctl and /proc print, counting complete
processes, and assembling the JSON results. No timing here."""

from __future__ import annotations

import json

from quark import EV, Event
from quark.bench import ebpf, stall, storm
from quark.bench._load import (
    ARGV,
    Tracker,
    env_bytes,
    incomplete,
    status_kb,
)
from quark.events import Process


def _ev(events: EV, pid: int, ppid: int) -> Event:
    return Event(events=events, time=1, process=Process(pid=pid, ppid=ppid))


def test_argv_is_a_command_with_three_arguments() -> None:
    assert ARGV[0] == "/bin/true"
    assert len(ARGV) == 4


def test_env_bytes_counts_as_execve_copies() -> None:
    # "A=1\0" and "PATH=/bin\0", in bytes (é is two)
    assert env_bytes({"A": "1", "PATH": "/bin"}) == 4 + 10
    assert env_bytes({"X": "é"}) == 5
    assert env_bytes({}) == 0


def test_status_kb() -> None:
    text = "Name:\tpython\nVmHWM:\t   67012 kB\nVmRSS:\t   36100 kB\n"
    assert status_kb(text, "VmHWM") == 67012
    assert status_kb(text, "VmRSS") == 36100


def test_tracker_aggregated_and_split_events() -> None:
    t = Tracker(parents={10}, pid_max=100)
    t.add(_ev(EV.FORK | EV.EXEC | EV.EXIT, 20, 10))  # aggregated
    t.add(_ev(EV.FORK, 21, 10))  # split in three
    t.add(_ev(EV.EXEC, 21, 10))
    t.add(_ev(EV.EXIT, 21, 10))
    t.add(_ev(EV.FORK | EV.EXIT, 22, 10))  # its exec never came
    t.add(_ev(EV.FORK | EV.EXEC | EV.EXIT, 23, 99))  # not a child of ours
    assert t.delivered == 6
    assert list(t.complete[20:24]) == [1, 1, 0, 0]
    assert not any(t.flags)  # every instance closed by its exit


def test_tracker_pid_reuse_counts_instances() -> None:
    t = Tracker(parents={10}, pid_max=100)
    t.add(_ev(EV.FORK | EV.EXEC | EV.EXIT, 30, 10))
    t.add(_ev(EV.FORK | EV.EXIT, 30, 10))  # second instance, no exec
    t.add(_ev(EV.FORK | EV.EXEC | EV.EXIT, 30, 10))
    assert t.complete[30] == 2
    # spawned three times at pid 30, twice at 31 (never seen)
    assert incomplete(t.complete, [30, 31, 30, 31, 30]) == 3


def test_incomplete_ignores_surplus() -> None:
    assert incomplete({1: 3, 2: 0}, [1, 2]) == 1
    assert incomplete({1: 1}, []) == 0


MON_STDERR = """\
 inserts  removes     aggs non-aggs     lost  gc-cols backend
      10        0        0        0        0        0 ebpf
some log line
 inserts  removes     aggs non-aggs     lost  gc-cols backend
   15315    15300     4790       12        1        0 ebpf
"""


def test_parse_mon_stats_takes_the_last_row() -> None:
    st = ebpf.parse_mon_stats(MON_STDERR)
    assert st["inserts"] == 15315
    assert st["lost"] == 1
    assert st["non-aggs"] == 12
    assert "backend" not in st


def test_parse_mon_stats_none() -> None:
    assert ebpf.parse_mon_stats("") == {}
    assert ebpf.parse_mon_stats(" inserts  lost\n") == {}


AUDITCTL_S = """\
enabled 1
failure 1
pid 4242
rate_limit 0
backlog_limit 8192
lost 7
backlog 0
backlog_wait_time 15000
backlog_wait_time_actual 0
loginuid_immutable 0 unlocked
"""


def test_parse_audit_status() -> None:
    st = ebpf.parse_audit_status(AUDITCTL_S)
    assert st["enabled"] == 1
    assert st["pid"] == 4242
    assert st["lost"] == 7
    assert st["backlog_limit"] == 8192
    assert st["loginuid_immutable"] == 0


def test_audit_rule_is_one_execve_rule() -> None:
    assert " ".join(ebpf.AUDIT_RULE) == "-a always,exit -F arch=b64 -S execve"


def test_prog_ids_from_fdinfo() -> None:
    prog = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t69138\n"
    link = "pos:\t0\nlink_type:\ttracing\nlink_id:\t12\nprog_id:\t69138\n"
    other = "pos:\t0\nflags:\t02\nmnt_id:\t25\n"
    more = "prog_type:\t5\nprog_id:\t7\n"
    assert ebpf.prog_ids([prog, link, other, more]) == {69138, 7}
    assert ebpf.prog_ids([]) == set()


LIB = {
    "spawned": 100.0,
    "spawn_rate_per_s": 1600.0,
    "consumer_cpu_pct": 2.25,
    "bpf_cpu_pct": 0.5,
    "lost": 0.0,
    "raw_inserted": 300.0,
}


def test_ebpf_result() -> None:
    res = ebpf.result(
        1600, 30, LIB, dict(LIB, consumer_cpu_pct=6.0), LIB,
        {"unavailable": "auditctl -s failed: no audit"},
    )  # fmt: skip
    json.dumps(res)
    assert res["delivery_pct_of_core"] == 2.75
    assert res["text_pct_of_core"] == 6.5
    assert res["ecs_pct_of_core"] == 2.75
    assert res["auditd"] == {"unavailable": "auditctl -s failed: no audit"}
    assert res["argv"] == list(ARGV)
    assert isinstance(res["env_bytes"], int)


def test_ebpf_lines_say_why_auditd_is_missing() -> None:
    line = ebpf._audit_line({"unavailable": "the configuration is locked"})
    assert "not measured" in line
    assert "locked" in line
    ok = {
        "spawned": 10, "spawn_rate_per_s": 1600.0, "lost": 0,
        "auditd_cpu_pct": 18.2, "rules_restored": True,
    }  # fmt: skip
    assert "18.20%" in ebpf._audit_line(ok)
    assert "kauditd" not in ebpf._audit_line(ok)
    assert "NOT restored" in ebpf._audit_line(dict(ok, rules_restored=False))


def test_storm_result() -> None:
    res = storm.result(60, 4, {"lost": 0, "peak_rss_mb": 41.23456})
    json.dumps(res)
    assert res["peak_rss_mb"] == 41.235
    assert res["spawners"] == 4
    assert res["targets"] == {
        "not_complete": 0, "lost": 0, "peak_rss_mb": storm.RSS_GOAL_MB,
    }  # fmt: skip


def test_stall_shares() -> None:
    assert stall.shares(5000, 4) == [1250] * 4
    assert stall.shares(10, 4) == [3, 3, 2, 2]
    assert stall.shares(2, 4) == [1, 1, 0, 0]
    assert sum(stall.shares(4999, 3)) == 4999


def test_stall_result() -> None:
    res = stall.result(5000, 4.0, 4, {"lost": 0, "ring_high_water": 1})
    json.dumps(res)
    assert res["processes"] == 5000
    assert res["targets"] == {"lost": 0, "not_complete": 0}


_LIB = "/usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2"
_SMAPS = "\n".join([
    "55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0" + " " * 26 + "[heap]",
    "Size:                132 kB",
    "Rss:                 120 kB",
    "7fb597c1b000-7fb599c1c000 r--s 00001000 00:10 1038" + " " * 23
    + "anon_inode:bpf-map",
    "Size:              32772 kB",
    "Rss:               32772 kB",
    "Pss:               32772 kB",
    "7fb599c7f000-7fb599c89000 r--p 00000000 fe:00 339358 " + _LIB,
    "Size:                 40 kB",
    "Rss:                  40 kB",
    "7fb59b5bb000-7fb59b5bc000 rw-s 00000000 00:10 1038 anon_inode:bpf-map",
    "Size:                  4 kB",
    "Rss:                   4 kB",
])  # fmt: skip


def test_the_rings_mapping_is_told_apart_in_smaps() -> None:
    from quark.bench._load import mapped_rss_kb

    assert mapped_rss_kb(_SMAPS, "anon_inode:bpf-map") == 32772 + 4
    assert mapped_rss_kb(_SMAPS, "[heap]") == 120
    assert mapped_rss_kb(_SMAPS, "nothing") == 0


def test_guest_counts_the_spawned_execs_quark_mon_wrote() -> None:
    from quark.bench.guest import spawned_execs

    text = "\n".join([
        "->101 (FORK+EXEC+EXIT)",
        "  COMM\tcomm=true",
        "->102 (FORK)",  # no exec
        "->103 (EXEC+EXIT)",
        "->999 (FORK+EXEC+EXIT)",  # not spawned by the bench
        "  CMDL\tcmdline=[ ->101 (EXEC) ]",  # not an event line
    ])  # fmt: skip
    assert spawned_execs(text, {101, 102, 103}) == 2
    assert spawned_execs("", {101}) == 0
