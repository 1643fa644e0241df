"""Cases of :meth:`quark.Queue.fileno` (see :mod:`quark.selftest`): the
descriptor becomes readable when ``get_event`` may have work, so that a
``select``, ``selectors`` or asyncio user, who never calls ``block()``,
gets every event within the hold time."""

from __future__ import annotations

import asyncio
import select
import subprocess
import threading
import time

import quark
from quark import EV, Event
from quark.selftest import case

HOLD_MS = 1000  # the queue's hold time, the bound of the first wakeup
SLACK = 3.0  # seconds a slow (TCG) guest may add to the delivery


def _queue(backend: str) -> quark.Queue:
    return quark.Queue(backend=backend, hold_time=HOLD_MS)


def _drain_now(q: quark.Queue) -> list[Event]:
    out = []
    while (ev := q.get_event()) is not None:
        out.append(ev)
    return out


def _exited(evs: list[Event], pid: int) -> bool:
    return any(
        e.process is not None and e.process.pid == pid and e.events & EV.EXIT
        for e in evs
    )


def _quiet(q: quark.Queue, within: float = 10.0) -> None:
    """Drain until the descriptor stays quiet for the hold time and a
    little more (a busy host may never be: ``within`` s at most): what
    the queue read before is delivered, and a reader sleeping from now
    on is one that the kernel must wake."""
    end = time.monotonic() + within
    quiet = HOLD_MS / 1000 + 0.3
    while time.monotonic() < end:
        _drain_now(q)
        if not select.select([q.fileno()], [], [], quiet)[0]:
            return


@case()
def t_fileno_wakes(backend: str) -> None:
    """select() on fileno() reports readable within the hold time after
    one short process: one that ran before the select, and one started
    while the reader sleeps in select."""
    with _queue(backend) as q:
        _drain_now(q)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        t0 = time.monotonic()
        ready, _, _ = select.select([q.fileno()], [], [], HOLD_MS / 1000)
        waited = time.monotonic() - t0
        assert ready, f"fileno() not readable {waited:.2f}s after a process"
        _quiet(q)
        started: list[float] = []

        def spawn() -> None:
            started.append(time.monotonic())
            subprocess.run(["/bin/true"], check=True)

        spawner = threading.Timer(0.3, spawn)
        spawner.start()
        try:
            ready, _, _ = select.select(
                [q.fileno()], [], [], 0.3 + HOLD_MS / 1000 + SLACK
            )
        finally:
            spawner.join()
        assert ready and started, "fileno() slept through a process"
        waited = time.monotonic() - started[0]
        assert waited <= HOLD_MS / 1000, (
            f"fileno() readable only {waited:.2f}s after the process started"
        )


@case()
def t_fileno_delivers(backend: str) -> None:
    """A loop of select() on fileno() and get_event() until None, never
    block(), gets one short process's exit within the hold time (and a
    slow guest's slack): the descriptor wakes again for held events."""
    with _queue(backend) as q:
        _drain_now(q)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        t0 = time.monotonic()
        deadline = t0 + HOLD_MS / 1000 + SLACK
        got: list[Event] = []
        wakeups = 0
        while not _exited(got, child.pid):
            left = deadline - time.monotonic()
            assert left > 0, (
                f"no exit of {child.pid} {time.monotonic() - t0:.2f}s "
                f"after it ran ({wakeups} wakeups)"
            )
            ready, _, _ = select.select([q.fileno()], [], [], left)
            if ready:
                wakeups += 1
                got += _drain_now(q)


@case()
def t_fileno_asyncio(backend: str) -> None:
    """asyncio's add_reader on fileno() gets one short process's exit
    within the hold time (and a slow guest's slack), with no threads."""

    async def run(q: quark.Queue) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        child = subprocess.Popen(["/bin/true"])
        got: list[Event] = []

        def readable() -> None:
            got.extend(_drain_now(q))
            if _exited(got, child.pid) and not done.done():
                done.set_result(None)

        loop.add_reader(q.fileno(), readable)
        try:
            await asyncio.wait_for(done, HOLD_MS / 1000 + SLACK)
        finally:
            loop.remove_reader(q.fileno())
            child.wait()

    with _queue(backend) as q:
        _drain_now(q)
        asyncio.run(run(q))


@case()
def t_async_for(backend: str) -> None:
    """``async for ev in qq`` gets one short process's exit within the
    hold time (and a slow guest's slack)."""

    async def run(q: quark.Queue) -> int:
        child = subprocess.Popen(["/bin/true"])
        try:
            async for ev in q:
                p = ev.process
                if (
                    p is not None
                    and p.pid == child.pid
                    and ev.events & EV.EXIT
                ):
                    return child.pid
        finally:
            child.wait()
        raise AssertionError("the queue's iteration ended")

    with _queue(backend) as q:
        _drain_now(q)
        asyncio.run(asyncio.wait_for(run(q), HOLD_MS / 1000 + SLACK))
