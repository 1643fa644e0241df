"""Integration test cases shared by ``quark-test`` (inside guests) and pytest
(``tests/system``), so the two never drift.

A case is a function ``f(backend: str) -> None`` registered with :func:`case`.
It opens its own :class:`quark.Queue` with that backend, runs something, and
fails by raising ``AssertionError`` (or any exception). It raises
:class:`NotApplicable` only when the case cannot apply on this system for a
reason that is not a missing kernel feature (for example: no tty attached).
A backend that reports a feature as unsupported raises
:class:`quark.NotSupportedError`; the runners decide whether that is a skip
(host without the feature) or a failure (``QUARK_TEST_STRICT=1``, as inside
the guests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import quark

__all__ = [
    "CASES",
    "Case",
    "NotApplicable",
    "case",
    "fentry_skip_ok",
    "load_cases",
    "until",
]

#: how long a case waits for the events it expects (TCG guests are slow)
DEADLINE = 30.0

BACKEND_NAMES = ("ebpf", "kprobe")


class NotApplicable(Exception):
    """The case does not apply here; the message says why."""


@dataclass(frozen=True)
class Case:
    name: str
    func: Callable[[str], None]
    backends: tuple[str, ...]
    doc: str


CASES: dict[str, Case] = {}


def case(
    *, backends: tuple[str, ...] = BACKEND_NAMES
) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    """Register a case under its function name (``t_*``)."""

    def register(func: Callable[[str], None]) -> Callable[[str], None]:
        name = func.__name__
        if name in CASES:
            raise ValueError(f"duplicate selftest case {name}")
        CASES[name] = Case(
            name, func, tuple(backends), (func.__doc__ or "").strip()
        )
        return func

    return register


def load_cases() -> dict[str, Case]:
    """Import every case module and return the registry."""
    # the modules register their cases when imported
    import quark.selftest.cases
    import quark.selftest.chaos_cases
    import quark.selftest.container_cases
    import quark.selftest.file_cases
    import quark.selftest.kind_cases
    import quark.selftest.net_cases
    import quark.selftest.wake_cases  # noqa: F401

    return CASES


def fentry_skip_ok(reason: str) -> bool:
    """Whether an fentry hook was skipped for the kernel's own reason: no
    BPF trampolines at all (a host like the CI one; every x86 guest kernel
    of the matrix has them), or trampolines it cannot attach (arm64's 6.1:
    no ftrace direct calls), and not for a failure of ours."""
    if "cannot attach them" in reason:
        return True
    return "refuses fentry" in reason and (
        os.environ.get("QUARK_IN_GUEST") != "1"
    )


def until(
    q: quark.Queue,
    keep: Callable[[quark.Event], bool],
    done: Callable[[list[quark.Event]], bool] = bool,
    *,
    drain: bool = True,
) -> list[quark.Event]:
    """The events ``keep`` takes from ``q`` until ``done`` holds (by
    default: one). With ``drain``, the batch read when it comes to hold is
    read to its end, so that a case's exact count sees an extra event that
    came with it; without, the list ends with the event that made it hold.
    Raises AssertionError after :data:`DEADLINE` seconds."""
    got: list[quark.Event] = []
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        q.block(0.1)
        while (e := q.get_event()) is not None:
            if keep(e):
                got.append(e)
                if not drain and done(got):
                    return got
        if done(got):
            return got
    raise AssertionError(f"timed out; got {got}")
