"""When a live backend's reader must come back by itself.

The engine holds what it reads for the hold time, to order it. A reader
woken per record would spin; one woken by nothing would leave held events
until the next record. Both live backends therefore silence their
per-record wakeups while the engine may hold something (the EBPF ring's
wake word, KPROBE's sentinel events) and arm one timer for when that is
due; once nothing is held, the next record wakes the reader again.

:class:`HoldTimer` is the timer's half, shared by both: :meth:`held` after
each read says which state the backend is in, and :meth:`settle`, after
the backend has switched its record wakeups, sets the timer to match.
"""

from __future__ import annotations

from quark.sys.timerfd import Timer

__all__ = ["HoldTimer"]


class HoldTimer:
    """A one-shot timerfd (:attr:`fd`, for the backend's epoll) set to when
    what was read last is due."""

    def __init__(self, hold_time_ms: int) -> None:
        hold_ns = hold_time_ms * 1_000_000
        # the hold time, a 2% margin for the clocks, and 2 ms for the
        # wakeup itself: what was read is due then, and goes at once
        self.due_ns = hold_ns + hold_ns // 50 + 2_000_000
        self._timer: Timer | None = Timer()
        self.fd = self._timer.fd
        self._last_records = 0  # when a read last found records
        self._deadline: int | None = None  # when the timer fires
        self._due = 0

    def held(self, now: int, got: bool) -> bool:
        """After a read at ``now`` (``got``: it found records): whether the
        engine may still hold what was read."""
        if got:
            self._last_records = now
        self._due = self._last_records + self.due_ns
        return self._due > now

    def settle(
        self, now: int, held: bool, soon: bool, by: int | None = None
    ) -> None:
        """Set the timer after :meth:`held`: at once when ``soon`` (a record
        came while the wakeups were being switched on, and woke nobody),
        when what is held is due or at ``by`` (the backend has work of its
        own then) if that is sooner, or not at all when neither."""
        timer = self._timer
        if timer is None:
            return
        if soon:
            timer.arm(1)
            self._deadline = now
            return
        target = self._due if held else None
        if by is not None and (target is None or by < target):
            target = by
        if target is not None:
            # set once per batch of reads: when it fires, the read that
            # follows comes here again and sets it to the latest due time
            dl = self._deadline
            if dl is None or dl <= now or target < dl:
                timer.arm(max(target - now, 1))
                self._deadline = target
        elif self._deadline is not None:
            timer.disarm()  # fired, and nothing read since: quiet
            self._deadline = None

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
