"""Self-test cases of container identity (issue 18), run by ``quark-test``
on the host and in every guest of the kernel matrix.

- ``t_container_cgroup``: a cgroup with a docker container's name shape is
  made in the cgroup v2 hierarchy (and in the v1 ``pids`` one where that is
  mounted, as on a hybrid host), and a child is moved into it the way a
  runtime does it: the parent writes the child's pid to ``cgroup.procs``
  between the child's fork and its exec. The container must be on the
  child's first event, in ``lookup()``, in a new queue's scrape, and the
  child must be the container's entry leader. EBPF reads the cgroup at the
  exec; KPROBE takes it from the ``cgroup:cgroup_attach_task`` move.
- ``t_container_after_exec``: the same, with the child moved right after
  its exec: the move (``cgroup:cgroup_attach_task``, on both backends)
  joins the exec while the queue holds it.
- ``t_unshare``: a process in new pid and mount namespaces (``unshare -pmf``,
  a minimal container) is seen under its pid in the host's namespace, with
  the namespace inodes and the cgroup that /proc shows for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import quark
from quark import QQ, Event
from quark.backends.cgroup import cgroup2_root
from quark.procfs import parse_cgroup
from quark.selftest import case, until

__all__: list[str] = []

_SLEEP = "/bin/sleep"



def _v1_pids_root(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the v1 hierarchy of the pids controller is mounted (its root),
    if anywhere."""
    with open(mountinfo) as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(rest) < 3 or rest[0] != "cgroup" or fields[3] != "/":
                continue
            if "pids" in rest[2].split(","):
                return fields[4]
    return None


@contextmanager
def _cgroups(rel: str) -> Iterator[list[str]]:
    """The directory ``rel`` made under the v2 root and the v1 pids root
    (where mounted), removed again afterwards, deepest first."""
    roots = [r for r in (cgroup2_root(), _v1_pids_root()) if r is not None]
    assert roots, "no cgroup v2 and no v1 pids hierarchy mounted"
    made: list[str] = []
    try:
        for root in roots:
            path = root
            for part in rel.strip("/").split("/"):
                path = os.path.join(path, part)
                os.mkdir(path)
                made.append(path)
        yield [os.path.join(r, rel.strip("/")) for r in roots]
    finally:
        for path in reversed(made):
            end = time.monotonic() + 5
            while True:
                try:
                    os.rmdir(path)
                    break
                except OSError:  # the child's exit is still being reaped
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.05)


def _spawn_into(dirs: list[str], argv: list[str]) -> int:
    """Fork a child that waits; write its pid to each ``cgroup.procs``;
    then let it exec ``argv``, as runc does with its init process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(w)
            os.read(r, 1)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(r)
    try:
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))
    finally:
        os.write(w, b"x")
        os.close(w)
    return pid


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _in_container(backend: str, move: Callable[[list[str]], int]) -> None:
    """``move(dirs)`` starts a child and moves it into ``dirs`` (a docker
    container's shape); its first exec event must carry the container,
    and so must lookup() and a new queue's scrape, with the child as the
    container's entry leader (ELT.CONTAINER)."""
    cid = os.urandom(32).hex()
    rel = f"quark-test-{os.getpid()}.slice/docker-{cid}.scope"
    want = quark.Container(cid, "docker")
    with _cgroups(rel) as dirs, quark.Queue(
        backend=backend, flags=QQ.ENTRY_LEADER, hold_time=_HOLD_MS
    ) as q:
        pid = move(dirs)
        try:
            # the fork may come alone (it happened before the move, so
            # outside the container) when the move took longer than the
            # hold time (TCG); the exec is the first event inside it
            got = until(
                q,
                lambda e: e.process is not None and e.process.pid == pid,
                done=lambda g: any(e.events & quark.EV.EXEC for e in g),
                drain=False,
            )
            *before, first = got
            assert first.events & quark.EV.EXEC, got
            assert all(e.events == quark.EV.FORK for e in before), got
            p = first.process
            assert p is not None
            assert p.cgroup == "/" + rel, p.cgroup
            assert p.container == want, p
            looked = q.lookup(pid)
            assert looked is not None and looked.container == want, looked
            assert (looked.entry_leader, looked.entry_leader_type) == (
                pid,
                quark.ELT.CONTAINER,
            ), looked
            with quark.Queue(backend=backend, hold_time=100) as q2:
                scraped = q2.lookup(pid)
                assert scraped is not None and scraped.container == want
                assert scraped.cgroup == p.cgroup
        finally:
            _reap(pid)
    # the child is gone and its cgroups removed: nothing left behind
    assert not any(os.path.exists(d) for d in dirs)


# How long an exec is held: the move after it must reach the queue within
# that, under TCG too.
_HOLD_MS = 1000


@case()
def t_container_cgroup(backend: str) -> None:
    """A child moved into docker-<id>.scope between fork and exec, as
    runc does, carries the container on its first event, in lookup() and
    in a new queue's scrape, and is the container's entry leader."""
    _in_container(backend, lambda dirs: _spawn_into(dirs, [_SLEEP, "30"]))


def _spawn_then_move(dirs: list[str]) -> int:
    """Fork a child that execs at once; once its exec succeeded (the
    close-on-exec pipe's end), write its pid to each ``cgroup.procs``: a
    runtime that moves it late."""
    r, w = os.pipe()  # both close-on-exec
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.execv(_SLEEP, [_SLEEP, "30"])
        finally:
            os.write(w, b"x")
            os._exit(127)
    os.close(w)
    try:
        failed = os.read(r, 1)
        assert not failed, f"{_SLEEP} did not exec"
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))
    except BaseException:
        _reap(pid)
        raise
    finally:
        os.close(r)
    return pid


@case()
def t_container_after_exec(backend: str) -> None:
    """A child moved into docker-<id>.scope right after its exec carries
    the container on that exec's event all the same (the move, a record
    of its own, joins the held exec), in lookup() and in a new queue's
    scrape, and is the container's entry leader."""
    _in_container(backend, _spawn_then_move)


@case()
def t_unshare(backend: str) -> None:
    """A process in new pid and mount namespaces (unshare -pmf sleep) is
    seen under its host pid, with the mnt inode /proc shows (not ours),
    our uts, ipc and net, and its cgroup."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux unshare is missing"
    with quark.Queue(backend=backend, hold_time=100) as q:
        outer = subprocess.Popen([unshare, "-pmf", _SLEEP, "30"])
        inner_pid = 0
        try:

            def inner(e: Event) -> bool:
                p = e.process
                return (
                    p is not None
                    and p.ppid == outer.pid
                    and p.exe is not None
                    and os.path.basename(p.exe) == "sleep"
                )

            (ev,) = until(q, inner, drain=False)
            p = ev.process
            assert p is not None
            inner_pid = p.pid
            mnt = os.stat(f"/proc/{p.pid}/ns/mnt").st_ino
            assert p.mnt_inonum == mnt, (p.mnt_inonum, mnt)
            assert mnt != os.stat("/proc/self/ns/mnt").st_ino
            for ns in ("uts", "ipc", "net"):
                assert getattr(p, f"{ns}_inonum") == (
                    os.stat(f"/proc/self/ns/{ns}").st_ino
                ), ns
            # its own pid namespace numbers it 1; we see its host pid
            with open(f"/proc/{p.pid}/status") as f:
                nspid = [ln for ln in f if ln.startswith("NSpid:")]
            assert nspid and nspid[0].split()[1:] == [str(p.pid), "1"], nspid
            with open(f"/proc/{p.pid}/cgroup") as f:
                cgroup = parse_cgroup(f.read())
            looked = q.lookup(p.pid)
            assert looked is not None
            assert p.cgroup == cgroup, (p.cgroup, cgroup)
            assert looked.cgroup == cgroup
            assert looked.mnt_inonum == mnt
        finally:
            if inner_pid:  # its namespace's init: the namespace goes too
                os.kill(inner_pid, signal.SIGKILL)
            outer.kill()
            outer.wait()
