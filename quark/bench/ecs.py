"""``python -m quark.bench ecs [--json] [--docs N]``: ECS documents per second.

Encodes realistic events (aggregated fork+exec+exit with argv, cwd, caps,
ids, a parent from the cache) on one core, with the stdlib ``json`` and,
when it is installed, ``orjson``, measured in the same run. Goal: at least
50,000 documents per second.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from quark.ecs import EcsEncoder
from quark.events import EV, Event, Process
from quark.sysinfo import host_info

__all__ = ["main"]


def _events(n: int) -> tuple[list[Event], dict[int, Process]]:
    parent = Process(
        pid=100, ppid=1, uid=1000, gid=1000, suid=1000, sgid=1000,
        euid=1000, egid=1000, start_time=10**12, comm="bash",
        exe="/usr/bin/bash", cmdline=["-bash"], cwd="/home/user",
        entity_id="ZAAAAAAAAAAAAAAA", tty_major=136, tty_minor=1,
    )  # fmt: skip
    out = []
    for i in range(n):
        p = Process(
            pid=1000 + i, ppid=100, uid=1000, gid=1000, suid=1000,
            sgid=1000, euid=1000, egid=1000, pgid=100, sid=100,
            cap_inheritable=0, cap_permitted=0, cap_effective=0,
            cap_bset=0x1FFFFFFFFFF, cap_ambient=0, start_time=2 * 10**12 + i,
            tty_major=136, tty_minor=1, entity_id="6AMAAAAAAAAAAAAA",
            comm="grep", exe="/usr/bin/grep",
            cmdline=["grep", "-r", "needle", f"/srv/data/{i}"],
            cwd="/home/user/src", exit_code=i % 2, exit_time=3 * 10**12 + i,
        )  # fmt: skip
        out.append(
            Event(
                events=EV.FORK | EV.EXEC | EV.EXIT,
                time=3 * 10**12 + i,
                process=p,
            )
        )
    return out, {100: parent}


def _rate(enc: EcsEncoder, events: list[Event]) -> float:
    t0 = time.perf_counter()
    for ev in events:
        enc.encode(ev)
    return len(events) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench ecs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--docs", type=int, default=50_000)
    args = ap.parse_args(argv)
    events, procs = _events(args.docs)
    host = host_info()
    result: dict[str, Any] = {"benchmark": "ecs", "docs": args.docs,
                              "goal_docs_per_s": 50_000}  # fmt: skip
    from quark.ecs import _stdlib_dumps

    enc = EcsEncoder(procs.get, host=host, dumps=_stdlib_dumps)
    result["stdlib_json_docs_per_s"] = round(max(
        _rate(enc, events) for _ in range(3)))  # fmt: skip
    try:
        import orjson
    except ImportError:
        result["orjson_docs_per_s"] = None
    else:
        fast = EcsEncoder(
            procs.get,
            host=host,
            dumps=lambda o: orjson.dumps(o).decode(),
            clock_offsets=(enc.mono_offset, enc.boot_offset),
        )
        assert json.loads(fast.encode(events[0])) == json.loads(
            enc.encode(events[0])
        )
        result["orjson_docs_per_s"] = round(max(
            _rate(fast, events) for _ in range(3)))  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        o = result["orjson_docs_per_s"]
        print(
            f"ecs: {result['stdlib_json_docs_per_s']:,} docs/s with the "
            f"stdlib json"
            + ("" if o is None else f", {o:,} with orjson")
            + " (goal >= 50,000, one core)"
        )
    return 0
