"""The process cache as a Graphviz DOT graph (quark-mon -C)."""

from __future__ import annotations

from collections.abc import Iterable

from quark.events import Process

__all__ = ["cache_graph"]

# 16 colours, picked by ppid % 16 so that siblings share one
COLOURS = (
    "aquamarine", "bisque", "burlywood", "cadetblue1", "chartreuse",
    "coral", "cornflowerblue", "darkgoldenrod1", "darkolivegreen1",
    "darkseagreen1", "gold", "khaki", "lightpink", "lightsalmon",
    "plum", "thistle",
)  # fmt: skip


def _q(s: object) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"')


def cache_graph(processes: Iterable[Process]) -> str:
    """``digraph``: one box per process, an edge from parent to child."""
    procs = list(processes)
    pids = {p.pid for p in procs}
    out = ["digraph quark {", "  ranksep=2.0;", "  nodesep=0.65;",
           "  node [shape=box, style=filled];"]  # fmt: skip
    for p in procs:
        lines = [f"pid {p.pid}", f"{p.exe or p.comm or '?'}"]
        if p.comm:
            lines.append(f"comm {p.comm}")
        if p.cwd:
            lines.append(f"cwd {p.cwd}")
        if p.uid is not None:
            lines.append(f"uid {p.uid} euid {p.euid} gid {p.gid}")
        if p.exit_time is not None:
            lines.append(f"exit {p.exit_code}")
        label = "\\n".join(_q(x) for x in lines)
        colour = COLOURS[(p.ppid or 0) % len(COLOURS)]
        out.append(f'  "{p.pid}" [label="{label}", fillcolor="{colour}"];')
    for p in procs:
        if p.ppid is not None and p.ppid in pids:
            out.append(f'  "{p.ppid}" -> "{p.pid}";')
    out.append("}")
    return "\n".join(out) + "\n"
