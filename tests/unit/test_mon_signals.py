"""Signals: quark-mon handles its own stop signals; the library installs
none. (quark-mon started in the background by a non-interactive shell, on
the real kernel, is tests/system/test_mon.py's
test_a_background_job_stops_on_a_signal.)"""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import pkgutil
import signal
import subprocess
import sys
import time

import quark
from quark.raw.record import StreamWriter
from quark.raw.types import RawTask, Seed

ROOT = pathlib.Path(quark.__file__).resolve().parent
DATA = ROOT.parent / "tests" / "data" / "raw"
MON = [sys.executable, "-m", "quark.cli.mon"]
# what installs a handler or changes a disposition or mask
INSTALLERS = {
    "signal",
    "sigaction",
    "siginterrupt",
    "set_wakeup_fd",
    "pthread_sigmask",
    "add_signal_handler",
}


def _installs(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (
            f.attr
            if isinstance(f, ast.Attribute)
            else (f.id if isinstance(f, ast.Name) else "")
        )
        if name in INSTALLERS:
            lines.append(node.lineno)
    return lines


def test_the_library_installs_no_signal_handler_in_its_source() -> None:
    """Only the programs (quark/cli) may; nothing else in quark/."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "cli":
            continue
        lines = _installs(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(rel)] = lines
    assert found == {}


def test_importing_and_running_the_library_leaves_dispositions_alone() -> None:
    """Every module imported, a queue opened, run and closed: no signal's
    handler changed."""
    before = {s: signal.getsignal(s) for s in signal.valid_signals()}
    for mod in pkgutil.walk_packages([str(ROOT)], "quark."):
        if not mod.name.startswith("quark.cli"):
            importlib.import_module(mod.name)
    with quark.Queue(backend="replay", path=str(DATA / "basic.jsonl")) as q:
        list(q)
    assert {s: signal.getsignal(s) for s in signal.valid_signals()} == before


def _many_seeds(path: pathlib.Path, n: int) -> None:
    w = StreamWriter(path)
    for pid in range(1, n + 1):
        w.seed(
            Seed(
                pid,
                RawTask(ppid=1, start_time=pid, comm="x" * 15, cwd="/" * 200),
                exe="/usr/bin/" + "y" * 200,
                args=("z" * 300,),
            )
        )
    w.close()


def test_a_second_sigint_during_shutdown_exits_at_once(
    tmp_path: pathlib.Path,
) -> None:
    """quark-mon stuck writing to a pipe nobody reads gets SIGINT, and its
    shutdown is stuck too, writing the -C graph to a FIFO nobody reads:
    SIGTERM and SIGHUP then change nothing, and a second SIGINT ends it at
    once (128 + SIGINT)."""
    stream, fifo = tmp_path / "s.jsonl", tmp_path / "graph"
    _many_seeds(stream, 3000)  # megabytes of dump, 100s of KB of graph
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # and never read
    mon = subprocess.Popen(
        [*MON, "--replay", str(stream), "-C", str(fifo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(2.0)  # stuck writing the dump
        assert mon.poll() is None
        mon.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert mon.poll() is None  # shutting down, stuck on the graph
        mon.send_signal(signal.SIGTERM)
        mon.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert mon.poll() is None
        t0 = time.monotonic()
        mon.send_signal(signal.SIGINT)
        rc = mon.wait(timeout=5)
        assert time.monotonic() - t0 < 2.0
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
        os.close(reader)
        assert mon.stdout is not None and mon.stderr is not None
        mon.stdout.close()
        err = mon.stderr.read().decode()
        mon.stderr.close()
    assert rc == 128 + signal.SIGINT
    assert "Traceback" not in err


def test_a_replay_stopped_by_sigterm_ends_with_status_0(
    tmp_path: pathlib.Path,
) -> None:
    """A stop signal during the run (not the shutdown) ends it cleanly,
    stats on stderr, even if the process started with it ignored."""
    stream = tmp_path / "s.jsonl"
    _many_seeds(stream, 2000)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        mon = subprocess.Popen(
            [*MON, "--replay", str(stream)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
        try:
            time.sleep(1.5)  # stuck writing to the pipe
            mon.send_signal(sig)
            time.sleep(0.5)
            assert mon.stdout is not None
            mon.stdout.read()  # unblock the flush of the shutdown
            rc = mon.wait(timeout=10)
        finally:
            if mon.poll() is None:
                mon.kill()
                mon.wait()
            assert mon.stdout is not None and mon.stderr is not None
            mon.stdout.close()
            err = mon.stderr.read().decode()
            mon.stderr.close()
        assert rc == 0, (sig, err)
        assert "Traceback" not in err
        assert err.rstrip().splitlines()[-1].endswith("replay"), err
