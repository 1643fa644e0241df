"""What a repair after loss changes in the process cache: pure decisions.

After the backend reports lost records the cache may hold processes that
have exited (their exit was lost) and lack ones that run (their fork was
lost). :func:`plan` compares what the cache held when the check began with
what /proc listed then, both as pid -> start time (ns since boot): a pid is
the same process only with the same start time, to the clock tick, so a pid
reused in between is never mistaken for the one cached.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["plan"]


def plan(
    cached: Mapping[int, int | None],
    listed: Mapping[int, int],
    tick_ns: int,
) -> tuple[list[tuple[int, int | None]], list[int]]:
    """(gone, missing): the cached (pid, start) that /proc no longer shows,
    and the listed pids the cache lacks, by ascending pid. A pid cached with
    another start time than listed is both: its process is gone, and the
    one that reused the pid is missing. A cached process of unknown start
    time is taken to be the listed one."""
    gone: list[tuple[int, int | None]] = []
    missing: list[int] = []
    for pid, start in sorted(cached.items()):
        now = listed.get(pid)
        if now is None:
            gone.append((pid, start))
        elif start is not None and abs(now - start) >= tick_ns:
            gone.append((pid, start))
            missing.append(pid)
    missing.extend(pid for pid in listed if pid not in cached)
    missing.sort()
    return gone, missing
