"""Cases of :meth:`quark.Queue.fileno` (see :mod:`quark.selftest`): the
descriptor becomes readable when ``get_event`` may have work, so that a
``select``, ``selectors`` or asyncio user, who never calls ``block()``,
gets every event within the hold time."""

from __future__ import annotations

import asyncio
import select
import subprocess
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


@case()
def t_fileno_wakes(backend: str) -> None:
    """After one short process, select() on fileno() reports readable
    within the hold time."""
    with _queue(backend) as q:
        _drain_now(q)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        t0 = time.monotonic()
        ready, _, _ = select.select([q.fileno()], [], [], HOLD_MS / 1000)
        waited = time.monotonic() - t0
        assert ready, f"fileno() not readable {waited:.2f}s after a process"


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
