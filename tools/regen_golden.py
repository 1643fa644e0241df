#!/usr/bin/env python3
"""Regenerate the golden recorded streams in tests/data/raw and what the
engine delivers from them (*.expected.jsonl). Review the diff before
committing: the golden test compares byte for byte.

    python tools/regen_golden.py
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quark.raw.record import StreamWriter  # noqa: E402
from quark.raw.types import RawEvent, RawKind, RawTask, Seed  # noqa: E402
from tests.golden import STREAMS, deliver  # noqa: E402

DATA = ROOT / "tests" / "data" / "raw"
K = RawKind
MS = 1_000_000


def task(ppid: int, start: int, **kw: object) -> RawTask:
    ids: dict[str, object] = {
        "uid": 1000, "gid": 1000, "suid": 1000, "sgid": 1000,
        "euid": 1000, "egid": 1000, "pgid": ppid, "sid": ppid,
    }  # fmt: skip
    ids.update(kw)
    return RawTask(ppid=ppid, start_time=start, **ids)  # type: ignore[arg-type]


def basic(w: StreamWriter) -> None:
    """Aggregation, signals, comm changes, pid reuse, non-UTF-8 argv."""
    w.seed(
        Seed(
            1,
            task(0, 1, comm="init", cwd="/"),
            exe="/sbin/init",
            args=("init",),
        )
    )
    w.seed(
        Seed(
            100,
            task(1, 2, comm="bash", cwd="/home/u", env=("HOME=/home/u",)),
            exe="/usr/bin/bash",
            args=("-bash",),
        )
    )
    t = 10 * MS
    # a short-lived process: one event
    w.raw(RawEvent(K.WAKE_UP_NEW_TASK, t, 200, task=task(100, t)))
    w.raw(
        RawEvent(
            K.EXEC,
            t + MS,
            200,
            task=task(100, t, comm="ls"),
            exe="/usr/bin/ls",
            args=("ls", "-l", "\udcff\udcfe"),
        )
    )
    w.raw(
        RawEvent(
            K.EXIT_THREAD, t + 2 * MS, 200, task=task(100, t, exit_code=0)
        )
    )
    # killed by SIGKILL
    w.raw(RawEvent(K.WAKE_UP_NEW_TASK, t + 3 * MS, 201, task=task(100, t)))
    w.raw(
        RawEvent(
            K.EXIT_THREAD, t + 4 * MS, 201, task=task(100, t, exit_code=9)
        )
    )
    # a long-lived process renames itself, twice
    w.raw(RawEvent(K.WAKE_UP_NEW_TASK, t + 5 * MS, 202, task=task(100, t)))
    w.raw(RawEvent(K.COMM, t + 6 * MS, 202, comm="worker-1"))
    w.raw(RawEvent(K.COMM, t + 3000 * MS, 202, comm="worker-2"))
    # sudo-like: id change, then exec, kept apart
    w.raw(RawEvent(K.WAKE_UP_NEW_TASK, t + 7 * MS, 203, task=task(100, t)))
    w.raw(
        RawEvent(
            K.ID_CHANGE,
            t + 8 * MS,
            203,
            id_change=2,
            task=task(100, t, uid=0, euid=0, suid=0),
        )
    )
    w.raw(
        RawEvent(
            K.EXEC,
            t + 9 * MS,
            203,
            task=task(100, t, comm="id"),
            exe="/usr/bin/id",
            args=("id",),
        )
    )
    w.raw(
        RawEvent(
            K.EXIT_THREAD,
            t + 10 * MS,
            203,
            task=task(100, t, exit_code=1 << 8),
        )
    )
    w.lost(2)
    # pid 200 reused after the grace time
    t2 = t + 6000 * MS
    w.raw(RawEvent(K.WAKE_UP_NEW_TASK, t2, 200, task=task(1, t2)))
    w.raw(
        RawEvent(
            K.EXIT_THREAD, t2 + MS, 200, task=task(1, t2, exit_code=3 << 8)
        )
    )


def main() -> int:
    builders = {"basic": basic}
    assert set(builders) == set(STREAMS)
    for name, build in builders.items():
        w = StreamWriter(DATA / f"{name}.jsonl", backend="generated")
        build(w)
        w.close()
        for variant, kw in STREAMS[name].items():
            out = DATA / f"{name}.{variant}.expected.jsonl"
            out.write_text(deliver(DATA / f"{name}.jsonl", **kw))
            print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
