"""A /proc entry that vanishes during the scrape at open is skipped and
counted in ``Stats.scrape_skipped``, on the real kernel: the scraped tree
links to the real /proc entries, one of them of a process that has exited
and been reaped between the listing and the read."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

import quark
from quark.procfs import scrape_counted

from .conftest import require


def _tree(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], int]:
    """A procfs root listing this process, a live child and a dead one."""
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: /proc/<pid> is gone, the listing still has it
    for pid in (os.getpid(), live.pid, dead.pid):
        os.symlink(f"/proc/{pid}", tmp_path / str(pid))
    return live, dead.pid


def test_a_vanished_pid_is_skipped_and_counted(tmp_path: pathlib.Path) -> None:
    live, dead = _tree(tmp_path)
    try:
        seeds, skipped = scrape_counted(str(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert sorted(s.pid for s in seeds) == sorted([os.getpid(), live.pid])
    assert dead not in {s.pid for s in seeds}
    assert skipped == 1


@pytest.mark.root
@pytest.mark.ebpf
def test_a_queue_counts_what_its_scrape_skipped(
    tmp_path: pathlib.Path,
) -> None:
    require("ebpf")
    live, dead = _tree(tmp_path)
    try:
        with quark.Queue(backend="ebpf", procfs=str(tmp_path)) as qq:
            stats = qq.stats()
            cached = {p.pid for p in qq.processes()}
    finally:
        live.kill()
        live.wait()
    assert stats.scrape_skipped == 1
    assert live.pid in cached and dead not in cached
