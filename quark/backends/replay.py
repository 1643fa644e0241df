"""The replay backend: feeds a recorded raw stream through the engine.

``Queue(backend="replay", path=FILE)``. The clock is the stream's: ``now()``
is the latest ``now`` record or raw time read so far, and once the stream
is exhausted the queue releases everything still held. The result is
deterministic: the same stream gives the same events on any host.

A malformed line raises :class:`quark.DecodeError` naming the file and line
from the ``get_event`` that reads it; the line is skipped and the next call
goes on. With ``errors="count"`` such lines are counted in
``Stats.decode_errors`` (and ``lost``) instead.

A stream cut mid-line (its writer was killed, or its disk filled) is read
up to its last whole line, then ends: the cut line is counted in
``decode_errors`` (and ``lost``) and logged as a warning naming the file,
line and byte, never raised, whatever ``errors`` says, so that everything
before it is delivered. :attr:`ReplayBackend.cut` holds the same message.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from quark.backends import KIND_FLAGS, Backend
from quark.errors import ConfigError, DecodeError
from quark.events import QQ, Socket
from quark.raw.record import Lost, Now, StreamReader
from quark.raw.types import RawEvent, Seed

if TYPE_CHECKING:
    from quark.events import QueueAttr

__all__ = ["ReplayBackend"]

log = logging.getLogger("quark.replay")

_END = 1 << 62
WINDOW = 10_000_000  # ns of stream time per read


class ReplayBackend(Backend):
    name = "replay"
    # whatever the recording carries: raw events, never a ring's records
    SERVES = KIND_FLAGS & ~QQ.BYPASS

    @classmethod
    def why_not(cls, kind: QQ) -> str:
        if kind == QQ.BYPASS:
            return (
                "QQ.BYPASS is the ebpf backend's only: a recorded stream "
                "holds decoded raw events, not the ring's records"
            )
        return super().why_not(kind)

    def __init__(
        self,
        attr: QueueAttr,
        *,
        path: str | os.PathLike[str] | None = None,
        errors: str = "raise",
        **options: object,
    ) -> None:
        if path is None:
            raise ConfigError(
                'backend="replay" needs path= (a recorded stream)'
            )
        if errors not in ("raise", "count"):
            raise ConfigError(
                f"errors must be 'raise' or 'count', not {errors!r}"
            )
        if options:
            raise ConfigError(
                f"unknown option(s) for the replay backend: {sorted(options)}"
            )
        self._errors = errors
        self._kinds = attr.flags & KIND_FLAGS
        self._reader: StreamReader | None = StreamReader(path)
        self.header = self._reader.header
        self._seeds: list[Seed] = []
        self._sockets: list[Socket] = []
        self._pending: RawEvent | None = None
        self._lost = 0
        self._decode_errors = 0
        self._now = 0
        self._window_end: int | None = None
        self._deferred: DecodeError | None = None
        self._done = False
        self.cut: str | None = None
        self._rfd = self._wfd = -1
        try:
            # Seeds come first: read up to the first raw event. A malformed
            # line there is raised by the first read, like any other, so
            # that the queue opens and the consumer can go on past it.
            while True:
                try:
                    item = self._next()
                except DecodeError as e:
                    self._deferred = e
                    break
                if item is None or isinstance(item, RawEvent):
                    self._pending = item
                    break
                if isinstance(item, Socket):
                    self._sockets.append(item)
                else:
                    self._seeds.append(item)
            self._rfd, self._wfd = os.pipe()
            os.write(self._wfd, b"x")  # always readable: reads never block
        except BaseException:
            self.close()
            raise

    def _next(self) -> Seed | Socket | RawEvent | None:
        """Next seed or raw event; applies lost/now records on the way."""
        reader = self._reader
        while reader is not None and not self._done:
            try:
                item = reader.next_item()
            except DecodeError:
                self._decode_errors += 1
                self._lost += 1
                if self._errors == "raise":
                    raise
                continue
            if item is None:
                self._finish()
                return None
            if isinstance(item, Lost):
                self._lost = max(self._lost, int(item) + self._decode_errors)
            elif isinstance(item, Now):
                self._now = max(self._now, int(item))
            else:
                return item
        return None

    def _finish(self) -> None:
        self._done = True
        reader, self._reader = self._reader, None
        if reader is None:
            return
        reader.close()
        if reader.cut is not None and self.cut is None:
            self.cut = reader.cut
            self._decode_errors += 1
            self._lost += 1
            log.warning("%s", reader.cut)

    def seed(self) -> list[Seed]:
        return self._seeds

    def seed_sockets(self) -> list[Socket]:
        return self._sockets

    def fileno(self) -> int:
        return self._rfd

    def read(self, limit: int) -> list[RawEvent]:
        """The records of the next WINDOW of stream time.

        The replay's clock advances a window per read, through gaps too, so
        events are released (and aggregated) as they would have been live,
        not all at the end of the stream.
        """
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        out: list[RawEvent] = []
        while len(out) < limit:
            raw = self._pending
            if raw is None:
                if self._done:
                    break
                item = self._next()
                if item is None:
                    break
                if isinstance(item, (Seed, Socket)):
                    continue  # a seed after raw events: ignored by design
                raw = item
            if self._window_end is None:
                self._window_end = raw.time + WINDOW  # the first record
            if raw.time > self._window_end:
                self._pending = raw  # a later window's
                break
            self._pending = None
            out.append(raw)
        if self._window_end is not None:
            self._now = max(self._now, self._window_end)
            self._window_end += WINDOW
        return out

    def lost(self) -> int:
        return self._lost

    def decode_errors(self) -> int:
        return self._decode_errors

    def now(self) -> int:
        return _END if self.exhausted() else self._now

    def kinds(self) -> QQ:
        return self._kinds

    def exhausted(self) -> bool:
        return self._done and self._pending is None

    def close(self) -> None:
        self._finish()
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
