"""Under a load of 2,000 short TCP connections, 4 at a time, every
connection is seen open and closed, and nothing is lost (issue 12).

The load runs in child processes (a server and 4 client workers, from
``quark.bench.net``, which ``python -m quark.bench net`` times); this
process drains the queue while it runs, as a consumer would.
"""

from __future__ import annotations

import socket
import time

import pytest

import quark
from quark import EV, QQ
from quark.bench.net import drain_until, run_load, sock_events, verify

from .conftest import require

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.slow]

N = 2000
PARALLEL = 4
HOLD_MS = 100


@pytest.mark.parametrize(
    "family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"]
)
def test_every_connection_seen_open_and_closed_under_load(
    family: socket.AddressFamily,
) -> None:
    require("ebpf")
    events: list[quark.Event] = []
    with quark.Queue(flags=QQ.EBPF | QQ.SOCK_CONN, hold_time=HOLD_MS) as q:

        def drain() -> None:
            deadline = time.monotonic() + 0.05
            drain_until(q, events, lambda: time.monotonic() > deadline)

        load = run_load(N, PARALLEL, family, while_running=drain)
        # Every close happened before its process exited, so every event is
        # in the ring: what the hold time keeps comes out within it.
        quiet = time.monotonic() + HOLD_MS / 1000 + 1.0
        drain_until(q, events, lambda: time.monotonic() > quiet)
        stats = q.stats()

    assert len(load.conns) == N
    mine = sock_events(events, load.server_port)
    problems = verify(load, events)
    assert not problems, (
        f"{len({p.client_port for p in problems})} of {N} connections not "
        f"seen right ({len(mine)} socket events of the load, {4 * N} "
        f"expected; lost {stats.lost}):\n"
        + "\n".join(str(p) for p in problems[:30])
    )
    # verify() checked each end; the totals say the same at a glance
    opened = [e for e in mine if e.events & EV.SOCK_CONN_ESTABLISHED]
    closed = [e for e in mine if e.events & EV.SOCK_CONN_CLOSED]
    assert (len(opened), len(closed)) == (2 * N, 2 * N)
    assert stats.lost == 0
    assert stats.decode_errors == 0
