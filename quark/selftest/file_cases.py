"""Integration cases of the file and shared-memory kinds (``QQ.FILE``,
``QQ.SHM``).

The operations run in a forked child: the queue never reports its own
process (what the consumer does to files would loop back to it). Names are
relative after a chdir, or relative to a dirfd, as programs use them, and
every path must come back absolute.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Callable

import quark
from quark import EV, QQ, Event, FileChange, FileOp, ShmKind
from quark.selftest import case, fentry_skip_ok
from quark.sys import libc

DEADLINE = 10.0


def _queue(backend: str, flags: QQ) -> quark.Queue:
    return quark.Queue(backend=backend, flags=flags, hold_time=100)


def _run_child(fn: Callable[[int], None]) -> tuple[int, dict[str, int]]:
    """Fork, run ``fn(w)`` in the child (it may write ``name=int`` lines to
    fd ``w`` for the parent), wait; the child's pid and what it wrote."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            fn(w)
        except BaseException as e:
            os.write(2, f"child failed: {e!r}\n".encode())
            code = 1
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    told = dict(
        line.split("=", 1) for line in out.decode().splitlines() if line
    )
    return pid, {k: int(v) for k, v in told.items()}


def _tell(w: int, **values: int) -> None:
    os.write(w, "".join(f"{k}={v}\n" for k, v in values.items()).encode())


def _events(
    q: quark.Queue, pid: int, done: Callable[[list[Event]], bool]
) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        ev = q.get_event()
        if ev is None:
            if done(got):
                # and anything that would be one too many
                time.sleep(0.2)
                while (ev := q.get_event()) is not None:
                    if ev.pid == pid and ev.events & (EV.FILE | EV.SHM):
                        got.append(ev)
                return got
            q.block(0.05)
            continue
        if ev.pid == pid and ev.events & (EV.FILE | EV.SHM):
            got.append(ev)
    raise AssertionError(
        f"timed out; got {[(str(e.events), e.file or e.shm) for e in got]}"
    )


def _brief(ev: Event) -> tuple[object, ...]:
    f = ev.file
    assert f is not None, ev
    return (f.op, f.change, f.path, f.old_path, f.sym_target)


@case(backends=("ebpf",))
def t_file_shm(backend: str) -> None:
    """Files: create, 5 writes, fchmod, chown, rename and unlink of one
    file by relative names after chdir; create, rename and unlink through a
    dirfd; a symlink; a hard link removed while its other name stays; a
    file on tmpfs: exactly the expected operations, changes and absolute
    paths, with the inode's data where the hook reaches it. Where the
    kernel has fentry (every guest) the VFS hooks also tell writes that no
    write syscall makes: sendfile, copy_file_range, open(O_TRUNC) and a
    shared writable mmap; where it has not (the host), nothing is told of
    those, and the skipped hooks say why. Shared memory:
    shmget (with IPC_RMID after), memfd_create, and shm_open with and
    without O_CREAT: one SHM event each, with its key, size, flags or path;
    a shm_open is never a FILE event too (upstream's #256).

    One queue serves both: opening one with these kinds' programs is most
    of the case's time under qemu's TCG."""
    with _queue(backend, QQ.FILE | QQ.SHM) as q:
        _files(q)
        _shm(q)


def _files(q: quark.Queue) -> None:
    C, M, R, V = FileOp.CREATE, FileOp.MODIFY, FileOp.REMOVE, FileOp.MOVE
    NONE = FileChange(0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir="/dev/shm") as shm_dir,
    ):
        d = os.path.realpath(tmp)
        s = os.path.realpath(shm_dir)
        os.mkdir(f"{d}/sub")
        # made by this process (the consumer, never reported): only the
        # child's remove of one name is an event
        with open(f"{d}/h1", "w") as f:
            f.write("x")
        os.link(f"{d}/h1", f"{d}/h2")
        for name in ("src", "sf", "cfr", "tr", "mm"):
            with open(f"{d}/{name}", "wb") as out:
                out.write(b"y" * 4096)
        vfs = _vfs_hooks(q)

        def child(w: int) -> None:
            os.chdir(d)
            fd = os.open("a", os.O_CREAT | os.O_WRONLY, 0o644)
            for _ in range(5):
                os.write(fd, b"12345")
            os.fchmod(fd, 0o600)
            st = os.fstat(fd)
            os.close(fd)
            os.chown("a", st.st_uid, st.st_gid)
            _tell(w, a_ino=st.st_ino, a_size=st.st_size)
            os.rename("a", "b")
            os.unlink("b")
            dfd = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
            fd = os.open("c", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=dfd)
            os.close(fd)
            os.rename("c", "c2", src_dir_fd=dfd, dst_dir_fd=dfd)
            os.unlink("c2", dir_fd=dfd)
            os.close(dfd)
            os.symlink("the-target", "lnk")
            os.unlink("lnk")
            os.unlink("h1")
            fd = os.open(f"{s}/t", os.O_CREAT | os.O_WRONLY, 0o600)
            os.write(fd, b"on tmpfs")
            os.close(fd)
            os.unlink(f"{s}/t")
            # writes without a write syscall
            src = os.open(f"{d}/src", os.O_RDONLY)
            fd = os.open(f"{d}/sf", os.O_WRONLY)
            os.sendfile(fd, src, 0, 100)
            os.close(fd)
            fd = os.open(f"{d}/cfr", os.O_WRONLY)
            os.copy_file_range(src, fd, 100, 0, 0)
            os.close(fd)
            os.close(src)
            os.close(os.open(f"{d}/tr", os.O_WRONLY | os.O_TRUNC))
            fd = os.open(f"{d}/mm", os.O_RDWR)
            libc.write_mapped(fd, b"z")
            os.close(fd)

        pid, told = _run_child(child)
        want = [
            (C | M, FileChange.CONTENT | FileChange.PERMISSIONS
             | FileChange.OWNER, f"{d}/a", None, None),
            (V, NONE, f"{d}/b", f"{d}/a", None),
            (R, NONE, f"{d}/b", None, None),
            (C, NONE, f"{d}/sub/c", None, None),
            (V, NONE, f"{d}/sub/c2", f"{d}/sub/c", None),
            (R, NONE, f"{d}/sub/c2", None, None),
            (C | R, NONE, f"{d}/lnk", None, "the-target"),
            (R, NONE, f"{d}/h1", None, None),
            (C | M | R, FileChange.CONTENT, f"{s}/t", None, None),
        ]  # fmt: skip
        if vfs:
            want += [
                (M, FileChange.CONTENT, f"{d}/sf", None, None),
                (M, FileChange.CONTENT, f"{d}/cfr", None, None),
                (M, FileChange.CONTENT | FileChange.TRUNCATE, f"{d}/tr",
                 None, None),
                (M, FileChange.CONTENT, f"{d}/mm", None, None),
            ]  # fmt: skip
        evs = _events(q, pid, lambda got: len(got) >= len(want))
        other_name = os.path.exists(f"{d}/h2")
    got = [_brief(e) for e in evs]
    assert got == want, "\n".join(
        ["got:", *map(str, got), "want:", *map(str, want)]
    )
    assert all(e.events == EV.FILE for e in evs)
    assert other_name, "the hard link's other name went too"
    first = evs[0].file
    assert first is not None
    assert first.inode == told["a_ino"]
    assert first.mode is not None and stat.S_ISREG(first.mode)
    assert stat.S_IMODE(first.mode) == 0o600  # read after the fchmod
    assert first.size == told["a_size"] == 25
    assert first.uid == os.getuid() and first.gid == os.getgid()
    now = time.time_ns()
    for t in (first.atime, first.mtime, first.ctime):
        assert t is not None and now - 60 * 10**9 < t <= now, t
    assert evs[0].process is not None and evs[0].process.pid == pid


def _vfs_hooks(q: quark.Queue) -> bool:
    """Whether FILE's VFS hooks (fentry) serve: they must, unless the
    kernel cannot have them (see :func:`quark.selftest.fentry_skip_ok`);
    the skipped hooks must say so, not fail for another reason."""
    skipped = [
        s for s in q.stats().skipped_probes
        if s.startswith(("security_file_permission:", "security_mmap_file:",
                         "security_path_truncate:"))
    ]  # fmt: skip
    for s in skipped:
        assert fentry_skip_ok(s), f"a VFS hook failed: {s}"
    return not skipped


def _shm(q: quark.Queue) -> None:
    from multiprocessing import shared_memory

    name = f"quark-test-{os.getpid()}"

    def child(w: int) -> None:
        shm_id = libc.shmget(0, 8192, 0o1600)  # IPC_PRIVATE, IPC_CREAT
        libc.shm_remove(shm_id)
        fd = os.memfd_create("quark-memfd", os.MFD_CLOEXEC)
        os.close(fd)
        made = shared_memory.SharedMemory(name, create=True, size=4096)
        opened = shared_memory.SharedMemory(name)
        opened.close()
        made.close()
        made.unlink()

    pid, _ = _run_child(child)
    evs = _events(q, pid, lambda got: sum(e.shm is not None for e in got) >= 4)
    shms = [e.shm for e in evs if e.shm is not None]
    assert [s.kind for s in shms] == [
        ShmKind.SHMGET, ShmKind.MEMFD_CREATE, ShmKind.SHM_OPEN,
        ShmKind.SHM_OPEN,
    ], shms  # fmt: skip
    get, memfd, made, opened = shms
    assert (get.key, get.size, get.path) == (0, 8192, None)
    assert get.flags is not None and get.flags & 0o1000  # IPC_CREAT
    assert memfd.path == "memfd:quark-memfd"
    assert memfd.flags == os.MFD_CLOEXEC
    path = f"/dev/shm/{name}"
    assert made.path == opened.path == path
    assert made.flags is not None and made.flags & os.O_CREAT
    assert opened.flags is not None and not opened.flags & os.O_CREAT
    for e in evs:
        f = e.file
        assert f is None or not (f.path == path and f.op & FileOp.CREATE), (
            f"shm_open made a FILE event too: {f}"
        )
