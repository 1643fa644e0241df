"""Backends: the kernel-facing side that turns kernel records into raw events.

A backend is opened by its constructor (it starts listening before it
returns), drained by :meth:`Backend.read` without blocking, and released by
:meth:`Backend.close`, which is idempotent. :class:`quark.Queue` drives it; it
never runs threads of its own.

Option ``probe_kinds=True`` (the live backends): ask for every kind bit the
backend serves, whatever the flags say, and record the refusal of one the
kernel cannot serve (:meth:`Backend.refused_kinds`) rather than fail to
open; :meth:`quark.Queue.capabilities` then tells, kind by kind, what this
kernel can serve and why not.
"""

from __future__ import annotations

import abc
import functools
import importlib
import operator
import time
from typing import TYPE_CHECKING, ClassVar

from quark.errors import ConfigError, NotSupportedError
from quark.events import QQ

if TYPE_CHECKING:
    from quark.events import QueueAttr, Socket
    from quark.raw.types import RawEvent, Seed

__all__ = [
    "BACKENDS",
    "KIND_BITS",
    "KIND_FLAGS",
    "Backend",
    "get_backend_class",
]

#: The queue flags that ask for event kinds beyond process events, one by
#: one in bit order, and together.
KIND_BITS: tuple[QQ, ...] = (
    QQ.SOCK_CONN, QQ.DNS, QQ.BYPASS, QQ.FILE, QQ.SHM, QQ.TTY, QQ.PTRACE,
    QQ.MODULE_LOAD, QQ.GETPID,
)  # fmt: skip
KIND_FLAGS = functools.reduce(operator.or_, KIND_BITS, QQ(0))


class Backend(abc.ABC):
    """The interface every backend implements."""

    name: ClassVar[str]
    #: the kind bits (of :data:`KIND_FLAGS`) this backend can serve on a
    #: kernel that has what they need; it refuses the others at open
    SERVES: ClassVar[QQ] = QQ(0)

    @classmethod
    def why_not(cls, kind: QQ) -> str:
        """Why this backend never serves ``kind`` (one of its bits not in
        :attr:`SERVES`)."""
        return f"the {cls.name} backend does not implement QQ.{kind.name}"

    def kinds(self) -> QQ:
        """The kind bits live on this open backend."""
        return QQ(0)

    def refused_kinds(self) -> dict[QQ, str]:
        """Kind bits this backend serves but this kernel could not, each
        with its reason (recorded under ``probe_kinds=True``; otherwise
        such a kind fails the open)."""
        return {}

    @abc.abstractmethod
    def __init__(self, attr: QueueAttr, **options: object) -> None:
        """Open: load/attach/install whatever is needed and start listening.

        Raises a :class:`quark.QuarkError` subclass that says what is missing
        (``NotSupportedError``, ``PrivilegeError``, ...), after releasing
        whatever it had acquired.
        """

    @abc.abstractmethod
    def fileno(self) -> int:
        """A descriptor that becomes readable when :meth:`read` has work."""

    @abc.abstractmethod
    def read(self, limit: int) -> list[RawEvent]:
        """Return up to ``limit`` raw events without blocking.

        A malformed record is counted (see :meth:`lost`) and skipped; it never
        raises to the consumer.
        """

    def read_bypass(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` raw kernel records, undecoded, each with its time
        in ns (``QQ.BYPASS``), without blocking."""
        raise NotSupportedError(
            f"the {self.name} backend has no raw records to hand over "
            "(QQ.BYPASS)"
        )

    @abc.abstractmethod
    def lost(self) -> int:
        """Cumulative count of raw events lost before reaching the engine."""

    def decode_errors(self) -> int:
        """Cumulative count of records that arrived but could not be decoded
        (included in :meth:`lost`)."""
        return 0

    def ring_stats(self) -> tuple[int, int, int]:
        """The kernel ring's size in bytes, the most of it ever found in
        use, and how many times it was found over three quarters full
        (``Stats.ring_size``, ``ring_high_water``, ``ring_behind``)."""
        return (0, 0, 0)

    def live(self) -> bool:
        """True when the records come from this kernel now (not a replay):
        the process cache can then be checked against /proc."""
        return self.seed() is None

    def now(self) -> int:
        """Current time in ns on the raw events' clock (CLOCK_MONOTONIC)."""
        return time.monotonic_ns()

    def poll_interval(self) -> float | None:
        """Seconds between reads when the fd does not wake for every record
        (batched wakeups); ``None`` if the fd always wakes."""
        return None

    def seed(self) -> list[Seed] | None:
        """Initial processes; ``None`` means "scrape /proc" (live backends)."""
        return None

    def seed_sockets(self) -> list[Socket] | None:
        """Initial TCP sockets (with ``QQ.SOCK_CONN``); ``None`` means
        "scrape /proc/net/tcp and tcp6" (live backends)."""
        return None

    def exhausted(self) -> bool:
        """True when no more records will ever come (end of a replay)."""
        return False

    def skipped_probes(self) -> tuple[str, ...]:
        """Optional hooks that could not attach, each with its reason."""
        return ()

    @abc.abstractmethod
    def close(self) -> None:
        """Release every kernel resource. Idempotent."""


# name -> "module:Class"; imported lazily so that a missing dependency of one
# backend never breaks the others.
BACKENDS: dict[str, str] = {
    "ebpf": "quark.backends.ebpf:EbpfBackend",
    "kprobe": "quark.backends.kprobe:KprobeBackend",
    "replay": "quark.backends.replay:ReplayBackend",
}


def get_backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}"
        ) from None
    mod, _, cls = target.partition(":")
    module = importlib.import_module(mod)
    klass: type[Backend] = getattr(module, cls)
    return klass
