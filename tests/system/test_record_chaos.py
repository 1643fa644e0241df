"""--record under chaos, on the real kernel (root, EBPF): the recording
survives a SIGKILL of its writer up to its last whole line, and a full disk
stops the recording, not the queue."""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

import quark

from .conftest import require

pytestmark = [pytest.mark.root, pytest.mark.ebpf, pytest.mark.slow]
MON = [sys.executable, "-m", "quark.cli.mon"]


@pytest.fixture(autouse=True)
def _needs_ebpf() -> None:
    require("ebpf")


def _wait_open(mon: subprocess.Popen[str]) -> None:
    assert mon.stderr is not None
    seen = []
    while not seen or (seen[-1] and "quark-mon: backend" not in seen[-1]):
        seen.append(mon.stderr.readline())
    assert "quark-mon: backend ebpf" in seen[-1], seen


def test_a_sigkilled_recording_replays_what_it_read(
    tmp_path: pathlib.Path,
) -> None:
    rec = tmp_path / "rec.jsonl"
    marker = f"quark-sigkill-{uuid.uuid4().hex[:8]}"
    mon = subprocess.Popen(
        [*MON, "-v", "-s", "-M", "--record", str(rec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_open(mon)
        subprocess.run(["/bin/sh", "-c", "exit 0", marker], check=True)
        time.sleep(1.5)  # read and flushed as a batch; not yet released
        mon.send_signal(signal.SIGKILL)
        mon.wait(timeout=10)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    assert mon.returncode == -signal.SIGKILL
    r = subprocess.run(
        [*MON, "--replay", str(rec)], capture_output=True, text=True,
        errors="surrogateescape", timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert marker in r.stdout  # read before the kill, so in the file
    data = rec.read_bytes()
    if not data.endswith(b"\n"):
        assert "the stream is cut here" in r.stderr, r.stderr


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 1 MiB tmpfs, mounted for the test and unmounted after it."""
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "quark-test", str(d)],
        check=True,
    )
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def _fill(d: pathlib.Path) -> pathlib.Path:
    filler = d / "filler"
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return filler


def test_a_full_disk_stops_the_recording_not_the_queue(
    small_disk: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = small_disk / "rec.jsonl"
    with (
        caplog.at_level(logging.ERROR, logger="quark.record"),
        quark.Queue(backend="ebpf", record=str(rec)) as qq,
    ):
        filler = _fill(small_disk)

        def stopped() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "quark.record"
            ]

        deadline = time.monotonic() + 30
        while not stopped() and time.monotonic() < deadline:
            subprocess.run(["/bin/true"], check=True)
            while qq.get_event() is not None:
                pass
            qq.block(0.05)
        errors = stopped()
        assert len(errors) == 1, errors
        assert f"recording to {rec} stopped: No space left" in errors[0]
        # the queue goes on: a process run now is still delivered
        marker = f"quark-full-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/sh", "-c", "exit 0", marker], check=True)
        seen = False
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            ev = qq.get_event()
            if ev is None:
                qq.block(0.1)
                continue
            p = ev.process
            seen = p is not None and marker in (p.cmdline or ())
        assert seen, "no event of a process run after the disk filled"
        assert len(stopped()) == 1  # logged once
    # what was written replays, up to its cut if the last write was partial
    filler.unlink()
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="quark.replay"),
        quark.Queue(backend="replay", path=str(rec)) as q,
    ):
        scraped = {p.pid for p in q.processes()}
        list(q)
        stats = q.stats()
    assert os.getpid() in scraped  # the seeds were written before the fill
    cut = [r.getMessage() for r in caplog.records if "is cut" in r.message]
    if rec.read_bytes().endswith(b"\n"):
        assert cut == [] and stats.decode_errors == 0
    else:
        assert len(cut) == 1 and stats.decode_errors == 1
