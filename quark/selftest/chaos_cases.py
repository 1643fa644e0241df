"""Chaos cases (see :mod:`quark.selftest`): a consumer SIGKILLed in the
middle of a storm leaves nothing of its own in the kernel once its
process is gone (BPF programs, links and maps die with their descriptors;
kprobe_events lines, which do not, are removed by the next open), and the
next queue opens clean and delivers; many open/close cycles grow nothing.
Run by ``quark-test`` on the host (EBPF) and in every guest (both
backends).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import quark
from quark import EV
from quark.backends.tracefs import GROUP_PREFIX, find_tracefs
from quark.selftest import case

__all__: list[str] = []

TRUE = "/bin/true"

#: the consumer: opens a queue, says so, and reads until it is killed
_CONSUMER = r"""
import sys, quark
q = quark.Queue(backend=sys.argv[1], hold_time=100)
print("open", flush=True)
while True:
    q.block(0.05)
    while q.get_event() is not None:
        pass
"""


def _bpf_ids(pid: int) -> set[tuple[str, int]]:
    """The BPF programs and maps behind process ``pid``'s descriptors, by
    the kernel's ids (its fdinfo: prog_id, map_id; a link's prog_id)."""
    ids = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("prog_id", "map_id"):
                ids.add((key, int(value)))
    return ids


def _alive(kind: str, ident: int) -> bool:
    """Whether BPF object ``ident`` (a prog_id or map_id) still exists:
    asked of the kernel by id, as bpftool does."""
    what = "prog" if kind == "prog_id" else "map"
    done = subprocess.run(
        ["bpftool", what, "show", "id", str(ident)], capture_output=True
    )
    return done.returncode == 0


def _kprobe_lines(pid: int) -> list[str]:
    """The kprobe_events lines of process ``pid``'s queues (none where the
    kernel has no kprobe_events)."""
    try:
        with open(f"{find_tracefs()}/kprobe_events") as f:
            lines = f.read().splitlines()
    except quark.NotSupportedError:
        return []
    mine = f"{GROUP_PREFIX}{pid}_"
    return [ln for ln in lines if mine in ln]


def _delivers(backend: str) -> None:
    """A new queue opens and sees a process run with fork, exec and exit."""
    with quark.Queue(backend=backend, hold_time=100) as q:
        child = subprocess.Popen([TRUE])
        child.wait()
        seen = EV(0)
        end = time.monotonic() + 30
        while time.monotonic() < end and seen & EV.EXIT == 0:
            q.block(0.1)
            while (ev := q.get_event()) is not None:
                if ev.process is not None and ev.process.pid == child.pid:
                    seen |= ev.events
        assert seen & (EV.FORK | EV.EXEC | EV.EXIT) == (
            EV.FORK | EV.EXEC | EV.EXIT
        ), seen


@case(backends=("kprobe",))
def t_sigkill_consumer(backend: str) -> None:
    """A consumer SIGKILLed mid-storm: its BPF programs and maps are gone
    from the kernel once it is; its kprobe_events lines are removed by the
    next open; that open is clean and delivers. KPROBE here, in every
    guest; EBPF in the host's test suite (tests/system/test_open_close.py),
    which keeps the guests' share of CI's time down."""
    sigkill_consumer(backend)


def sigkill_consumer(backend: str) -> None:
    """The body of :func:`t_sigkill_consumer`, for either backend."""
    with quark.Queue(backend=backend, hold_time=100):
        pass  # NotSupportedError here: the case is skipped
    consumer = subprocess.Popen(
        [sys.executable, "-c", _CONSUMER, backend],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert consumer.stdout is not None
        line = consumer.stdout.readline()
        assert line.strip() == "open", f"the consumer did not open: {line!r}"
        held = _bpf_ids(consumer.pid)
        lines = _kprobe_lines(consumer.pid)
        if backend == "ebpf":
            assert any(k == "prog_id" for k, _ in held), held
        else:
            assert lines, "the kprobe consumer installed no kprobe_events"
        storm = subprocess.Popen(
            ["sh", "-c", f"for i in $(seq 200); do {TRUE}; done"]
        )
        time.sleep(0.5)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        storm.wait()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    # BPF objects are freed after their last reference, asynchronously
    end = time.monotonic() + 10
    left = held
    while left and time.monotonic() < end:
        left = {(k, i) for k, i in left if _alive(k, i)}
        if left:
            time.sleep(0.2)
    assert not left, f"BPF objects of the killed consumer remain: {left}"
    _delivers(backend)
    assert not _kprobe_lines(consumer.pid), _kprobe_lines(consumer.pid)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cycles(backend: str, n: int, warm: int = 5) -> None:
    """``n`` open/close cycles grow nothing: file descriptors, BPF objects
    held, this process's kprobe_events lines, RSS (within 2 MB, after
    ``warm`` cycles that load the libraries and fill allocator pools: in
    a 5.10 guest KPROBE's RSS grows over the first five opens, 28 to 31
    MB, then stays flat)."""
    me = os.getpid()
    for _ in range(warm):
        with quark.Queue(backend=backend, hold_time=100) as q:
            q.get_event()
    fds = set(os.listdir("/proc/self/fd"))
    rss = _rss_kb()
    for _ in range(n):
        with quark.Queue(backend=backend, hold_time=100) as q:
            q.get_event()
    grown = {
        fd: os.readlink(f"/proc/self/fd/{fd}")
        for fd in set(os.listdir("/proc/self/fd")) - fds
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert not grown, f"descriptors left after {n} cycles: {grown}"
    assert not _bpf_ids(me), _bpf_ids(me)
    assert not _kprobe_lines(me), _kprobe_lines(me)
    growth = _rss_kb() - rss
    assert growth <= 2048, f"RSS grew {growth} kB over {n} cycles"


@case(backends=("kprobe",))
def t_open_close_cycles(backend: str) -> None:
    """KPROBE open/close cycles grow nothing (see :func:`cycles`): five in
    a guest, where an open and close cost seconds of TCG, 100 elsewhere
    and in a guest with QUARK_CHAOS_FULL=1 (the matrix's kprobe-table boot).
    EBPF's hundred run in the host's test suite
    (tests/system/test_open_close.py)."""
    guest = os.environ.get("QUARK_IN_GUEST") == "1"
    if os.environ.get("QUARK_CHAOS_FULL") == "1":
        guest = False
    cycles(backend, 5 if guest else 100)
