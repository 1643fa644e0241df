"""The golden form of delivered events (see tools/regen_golden.py).

One JSON object per event, keys sorted: ``events`` (the EV names joined by
"+"), ``time``, ``id_change``, ``process`` (every known member), and a
final ``stats`` line.
"""

from __future__ import annotations

import json
import os
from typing import Any

import quark
from quark.dump import events_str

# stream name -> variant -> Queue keyword arguments
STREAMS: dict[str, dict[str, dict[str, Any]]] = {
    "basic": {
        "default": {},
        "min_agg": {"flags": quark.QQ.MIN_AGG},
        "grace0": {"cache_grace_time": 0},
    },
}


def deliver(path: str | os.PathLike[str], **kw: Any) -> str:
    lines = []
    with quark.Queue(backend="replay", path=os.fspath(path), **kw) as q:
        for ev in q:
            p = ev.process
            proc = None
            if p is not None:
                proc = {k: v for k, v in p._asdict().items() if v is not None}
            lines.append({
                "events": events_str(ev.events),
                "time": ev.time,
                "id_change": None if ev.id_change is None
                else int(ev.id_change),
                "process": proc,
            })  # fmt: skip
        s = q.stats()
        lines.append({"stats": {
            "insertions": s.insertions, "removals": s.removals,
            "aggregations": s.aggregations,
            "non_aggregations": s.non_aggregations, "lost": s.lost,
            "garbage_collections": s.garbage_collections,
            "cache_size": s.cache_size,
        }})  # fmt: skip
    return "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines)
