"""The socket cache: the TCP connections known, updated by SOCK_CONN events.

Upstream's socket cache (upstream.md §4.7), keyed by ``(local, remote)``:

- :meth:`SocketCache.seed` adds the connections scraped from
  /proc/net/tcp{,6} at open (``conn_origin=SCRAPE``).
- A CONNECT or ACCEPT inserts a connection. One already known under the
  same key is replaced: a closed one is done with, and a live one is stale
  (its CLOSE was lost, or it is the scrape's view of this very connection).
  Upstream suppresses the event in that last case when the pids agree; here
  the event is delivered, since it did happen after the queue opened.
- A CLOSE closes the connection, records the closer and the byte counts,
  and marks it for collection ``grace_ns`` later. A CLOSE of a connection
  not in the cache creates one (``established_time``, ``conn_origin`` and
  ``pid_origin`` None), unless it moved no bytes: that is a connection that
  never was (a refused connect, elastic/ebpf#217), and is dropped. A CLOSE
  of a connection already closed is not delivered twice.

Pure: no clock is read here; times are the events' ns on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
from collections.abc import Iterable, Iterator

from quark.events import SockAddr, Socket, SockOrigin
from quark.raw.types import RawSock, SockOp

__all__ = ["SocketCache"]

_Key = tuple[SockAddr, SockAddr]

_ORIGIN = {
    SockOp.CONNECT: SockOrigin.CONNECT,
    SockOp.ACCEPT: SockOrigin.ACCEPT,
}


def _addr_order(a: SockAddr) -> tuple[int, int, int]:
    return (a.family, int(ipaddress.ip_address(a.address)), a.port)


def _order(s: Socket) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (_addr_order(s.local), _addr_order(s.remote))


class SocketCache:
    """TCP connections by ``(local, remote)``, with grace-time collection
    of closed ones."""

    def __init__(self, grace_ns: int) -> None:
        self.grace_ns = grace_ns
        self._socks: dict[_Key, Socket] = {}
        # (due time, sequence, key, the closed snapshot): an entry is purged
        # at its due time only if the cache still holds that very snapshot.
        self._gc: list[tuple[int, int, _Key, Socket]] = []
        self._seq = 0
        self.garbage_collections = 0

    # -- queries ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._socks)

    def lookup(self, local: SockAddr, remote: SockAddr) -> Socket | None:
        return self._socks.get((local, remote))

    def __iter__(self) -> Iterator[Socket]:
        """Every connection, ordered by local then remote end, each by
        (family, numeric address, port)."""
        return iter(sorted(self._socks.values(), key=_order))

    # -- seeding -------------------------------------------------------------
    def seed(self, sockets: Iterable[Socket]) -> None:
        """Add scraped connections; a key already known is kept (the first
        holder wins, as with the scrape's SO_REUSEPORT listeners)."""
        socks = self._socks
        for s in sockets:
            socks.setdefault((s.local, s.remote), s)

    # -- events ---------------------------------------------------------------
    def apply(self, pid: int, time: int, raw: RawSock) -> Socket | None:
        """Apply one SOCK_CONN raw event of process ``pid`` at ``time``;
        return the snapshot to deliver, or None when there is none."""
        key = (raw.local, raw.remote)
        if raw.op is not SockOp.CLOSE:
            old = self._socks.get(key)
            if (
                old is not None
                and old.close_time is None
                and old.pid_origin == pid
                and old.conn_origin is _ORIGIN[raw.op]
            ):
                # the same connection again: a connect(2) repeated on a
                # non-blocking socket returns 0 once it is established
                return None
            s = Socket(
                raw.local,
                raw.remote,
                pid,
                pid,
                time,
                None,
                _ORIGIN[raw.op],
                None,
                None,
                raw.net_inonum,
            )
            self._socks[key] = s
            return s
        old = self._socks.get(key)
        if old is None:
            if not raw.bytes_sent and not raw.bytes_received:
                return None  # never established: a refused connect
            s = Socket(
                raw.local,
                raw.remote,
                None,
                pid,
                None,
                time,
                None,
                raw.bytes_sent,
                raw.bytes_received,
                raw.net_inonum,
            )
        elif old.close_time is not None:
            return None  # already closed: no double close
        else:
            s = dataclasses.replace(
                old,
                pid_last_use=pid,
                close_time=time,
                bytes_sent=raw.bytes_sent,
                bytes_received=raw.bytes_received,
                net_inonum=(
                    old.net_inonum
                    if raw.net_inonum is None
                    else raw.net_inonum
                ),
            )
        self._socks[key] = s
        self._seq += 1
        heapq.heappush(self._gc, (time + self.grace_ns, self._seq, key, s))
        return s

    # -- garbage collection -------------------------------------------------
    def collect(self, now: int) -> int:
        """Purge connections closed ``grace_ns`` ago or longer; return how
        many went."""
        gc = self._gc
        if not gc or gc[0][0] > now:
            return 0  # the common case: the engine asks at every pop
        socks = self._socks
        n = 0
        while gc and gc[0][0] <= now:
            _, _, key, s = heapq.heappop(gc)
            if socks.get(key) is s:
                del socks[key]
                n += 1
        self.garbage_collections += n
        return n

    def next_collection(self) -> int | None:
        """When the next collection is due (ns), None if none is."""
        return self._gc[0][0] if self._gc else None
