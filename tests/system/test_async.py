"""``async for ev in qq`` on the host's EBPF backend: events come through
the running loop (``loop.add_reader`` on ``qq.fileno()``), no thread of
the queue's own, and other tasks run meanwhile."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import threading
import time

import pytest

import quark
from quark import EV

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

HOLD_MS = 100


async def _first_exit_of(q: quark.Queue, pid_box: list[int]) -> quark.Event:
    async for ev in q:
        if pid_box and ev.pid == pid_box[0] and ev.events & EV.EXIT:
            return ev
    raise AssertionError("the queue ended")


def test_async_for_delivers_a_child_while_other_tasks_run() -> None:
    require("ebpf")

    async def main() -> tuple[quark.Event, int, float, float, int]:
        ticks = 0
        gap = 0.0  # the longest the loop went without running the ticker
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks, gap
            last = time.monotonic()
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gap = max(gap, now - last)
                last = now

        threads = threading.active_count()
        with quark.Queue(backend="ebpf", hold_time=HOLD_MS) as q:
            tick = asyncio.create_task(ticker())
            pid_box: list[int] = []
            waiter = asyncio.create_task(_first_exit_of(q, pid_box))
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            child = await asyncio.create_subprocess_exec("true")
            pid_box.append(child.pid)
            await child.wait()
            ev = await asyncio.wait_for(waiter, 5)
            took = time.monotonic() - t0
            during = threading.active_count()
            stop.set()
            await tick
        return ev, ticks, gap, took, during - threads

    ev, ticks, gap, took, extra_threads = asyncio.run(main())
    assert ev.process is not None and ev.process.exe is not None
    assert ev.process.exe.endswith("/true")
    assert ev.events & EV.FORK and ev.events & EV.EXEC
    # the loop was not blocked: the ticker kept running meanwhile, never
    # kept waiting longer than a poll interval and the queue's work
    assert ticks >= 5
    assert gap < 0.5, gap
    # within the hold time and a poll interval, not seconds later
    assert took < 2.0, took
    assert extra_threads <= 0, "the queue started a thread"


def test_async_for_ends_with_a_replay(tmp_path: pathlib.Path) -> None:
    require("ebpf")
    rec = tmp_path / "rec.jsonl"
    with quark.Queue(backend="ebpf", hold_time=HOLD_MS, record=rec) as q:
        pid = subprocess.Popen(["true"]).pid
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if q.get_event() is None:
                q.block(0.05)

    async def replay() -> list[quark.Event]:
        out = []
        with quark.Queue(backend="replay", path=rec) as r:
            async for ev in r:
                out.append(ev)
        return out

    evs = asyncio.run(asyncio.wait_for(replay(), 30))
    assert any(ev.pid == pid and ev.events & EV.EXEC for ev in evs)
