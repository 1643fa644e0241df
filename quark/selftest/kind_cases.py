"""Self-test cases of the terminal, ptrace, module and getpid kinds
(QQ.TTY, QQ.PTRACE, QQ.MODULE_LOAD, QQ.GETPID), run by ``quark-test`` on
the host and in every guest of the kernel matrix.

Each case starts its own processes and waits, with a deadline, for their
events: a queue sees the whole system, and only the case's processes are
looked at.
"""

from __future__ import annotations

import glob
import os
import subprocess
import termios
import time
from collections.abc import Callable

import quark
from quark import EV, QQ
from quark.selftest import DEADLINE, case, fentry_skip_ok, until
from quark.sys import libc

__all__: list[str] = []

PTRACE_PEEKDATA, PTRACE_ATTACH, PTRACE_DETACH = 2, 16, 17


def _queue(backend: str, flags: QQ) -> quark.Queue:
    return quark.Queue(backend=backend, flags=flags, hold_time=100)



def _child(fn: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException as e:
            os.write(2, f"child failed: {e!r}\n".encode())
            code = 1
        os._exit(code)
    return pid


def _wait_ok(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child {pid}: {status}"


def _drain_until_exit(master: int, pid: int) -> None:
    """Read the pty's master until child ``pid`` exits (a write to the
    slave blocks once the master's side is full), then check its status."""
    os.set_blocking(master, False)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            while os.read(master, 65536):
                pass
        except (BlockingIOError, OSError):
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, status
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the writer did not finish")


def _set_echo(fd: int, on: bool) -> None:
    attrs = termios.tcgetattr(fd)
    if on:
        attrs[3] |= termios.ECHO
    else:
        attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _tty_write_hook(q: quark.Queue) -> bool:
    """Whether TTY is served by tty_write (fentry) rather than the write
    syscalls: it must be in a guest, unless that kernel's tty_write has
    the pre-5.11 prototype; elsewhere the skip must say which of the two
    is missing (trampolines or the prototype), not fail for another
    reason."""
    skipped = [
        s for s in q.stats().skipped_probes if s.startswith("tty_write:")
    ]
    for s in skipped:
        assert "arguments" in s or fentry_skip_ok(s), s
    return not skipped


@case(backends=("ebpf",))
def t_tty(backend: str) -> None:
    """Terminal output through os.openpty(): a child's writev to the slave
    arrives with major 136, the minor of its name and the exact bytes; a
    write of 10,000 bytes keeps 8,192 and says 1,808 were truncated; with
    ECHO off on both sides nothing is reported, and the queue's own writes
    never are. Where tty_write serves (fentry), a sendfile(2) to the
    terminal, which no write syscall shows, is reported too: its 100 bytes
    are in kernel memory, counted in truncated and not read."""
    master, slave = os.openpty()
    minor = int(os.ttyname(slave).rsplit("/", 1)[1])
    src = os.memfd_create("quark-tty-src")
    os.write(src, b"y" * 100)
    try:
        with _queue(backend, QQ.TTY) as q:
            hooked = _tty_write_hook(q)
            os.write(slave, b"the consumer's own\n")  # never reported

            def writer() -> None:
                _set_echo(slave, False)
                os.write(slave, b"silent to the slave\n")
                os.write(master, b"silent to the master\n")
                _set_echo(slave, True)
                os.writev(slave, [b"hello ", b"quark\n"])
                os.write(slave, b"x" * 10_000)
                if hooked:
                    assert os.sendfile(slave, src, 0, 100) == 100

            pid = _child(writer)
            _drain_until_exit(master, pid)
            evs = until(
                q,
                lambda e: e.tty is not None and e.pid == pid,
                lambda got: sum(
                    len(e.tty.data) + e.tty.truncated for e in got if e.tty
                ) >= 10_012 + 100 * hooked,
            )
    finally:
        os.close(src)
        os.close(master)
        os.close(slave)
    ttys = [e.tty for e in evs if e.tty is not None]
    assert [t.data for t in ttys][:1] == [b"hello quark\n"], ttys
    assert all(e.events == EV.TTY for e in evs)
    first, big = ttys[0], ttys[1]
    assert (first.major, first.minor, first.truncated) == (136, minor, 0)
    assert first.lflag & termios.ECHO
    assert (big.major, big.minor) == (136, minor)
    assert big.data == b"x" * 8192 and big.truncated == 1808, (
        len(big.data), big.truncated,
    )  # fmt: skip
    if hooked:
        sent = ttys[2]
        assert (sent.major, sent.minor) == (136, minor), sent
        assert (sent.data, sent.truncated) == (b"", 100), sent
    assert len(ttys) == 2 + hooked, ttys


@case(backends=("ebpf",))
def t_ptrace(backend: str) -> None:
    """ptrace: one child PTRACE_ATTACHes to its sibling, peeks a word and
    detaches: three events that name the tracer (the process) and the
    tracee (child_pid); a parent attaching to its own child, before that,
    produces nothing."""
    held, addr = libc.buffer_address(b"quark-peek")
    with _queue(backend, QQ.PTRACE) as q:
        r, w = os.pipe()

        def sleeper() -> None:
            os.close(w)
            os.read(r, 1)  # until the case ends

        def own_parent() -> None:
            kid = _child(sleeper)
            libc.ptrace(PTRACE_ATTACH, kid)
            os.waitpid(kid, 0)
            libc.ptrace(PTRACE_DETACH, kid)
            os.kill(kid, 9)
            os.waitpid(kid, 0)

        parent = _child(own_parent)
        _wait_ok(parent)
        tracee = _child(sleeper)

        def tracer() -> None:
            libc.ptrace(PTRACE_ATTACH, tracee)
            os.waitid(os.P_PID, tracee, os.WSTOPPED)
            word = libc.ptrace(PTRACE_PEEKDATA, tracee, addr)
            assert word.to_bytes(8, "little", signed=True) == b"quark-pe"
            libc.ptrace(PTRACE_DETACH, tracee)

        tracer_pid = _child(tracer)
        try:
            _wait_ok(tracer_pid)
        finally:
            os.close(w)
            os.close(r)
            _wait_ok(tracee)
        evs = until(
            q,
            lambda e: e.ptrace is not None and e.pid in (tracer_pid, parent),
            lambda got: len(got) >= 3,
        )
    del held
    got = [(e.pid, e.ptrace.child_pid, e.ptrace.request)
           for e in evs if e.ptrace]  # fmt: skip
    assert got == [
        (tracer_pid, tracee, PTRACE_ATTACH),
        (tracer_pid, tracee, PTRACE_PEEKDATA),
        (tracer_pid, tracee, PTRACE_DETACH),
    ], got
    peek = evs[1].ptrace
    assert peek is not None and peek.addr == addr
    assert all(e.events == EV.PTRACE for e in evs)


def _module_file(*names: str) -> tuple[str, str]:
    """The first of modules ``names`` the guest kernel ships, as (its name,
    its file): krun says where its modules are (QUARK_GUEST_MODULES), else
    the usual place."""
    base = os.environ.get("QUARK_GUEST_MODULES") or (
        f"/lib/modules/{os.uname().release}"
    )
    for name in names:
        found = sorted(glob.glob(f"{base}/kernel/drivers/*/{name}.ko*"))
        if found:
            return name.replace("-", "_"), found[0]
    raise AssertionError(
        f"none of {names} under {base}: the kernel's modules are needed"
    )


def _modinfo(path: str, field: str) -> str | None:
    out = subprocess.run(
        ["modinfo", "-F", field, path], capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    return out or None


def _loaded(name: str) -> bool:
    with open("/proc/modules") as f:
        return any(line.split()[0] == name for line in f)


@case(backends=("ebpf",))
def t_module_load(backend: str) -> None:
    """Module loads: where the kernel has loadable modules, insmod of two
    modules it ships (then rmmod) gives one MODULE_LOAD event each, from
    insmod's process, with the name, version and srcversion that modinfo
    reads from the file: dummy (Debian builds it with neither) and
    hangcheck-timer (with both; x86 only: tsl2550 on arm64). On a kernel
    without modules (the CI host), asking for the kind raises
    NotSupportedError, which says why."""
    if not os.path.exists("/proc/modules"):
        try:
            with _queue(backend, QQ.MODULE_LOAD):
                pass
        except quark.NotSupportedError as err:
            why = str(err)
            assert "QQ.MODULE_LOAD" in why, why
            assert "module" in why.split("QQ.MODULE_LOAD", 1)[1], why
            return
        raise AssertionError("MODULE_LOAD opened on a kernel without modules")
    mods = dict([_module_file("dummy"),
                 _module_file("hangcheck-timer", "tsl2550")])  # fmt: skip
    versioned = next(n for n in mods if n != "dummy")
    for name in mods:
        if _loaded(name):
            subprocess.run(["rmmod", name], check=True)
    pids: dict[int, str] = {}
    with _queue(backend, QQ.MODULE_LOAD) as q:
        for name, path in mods.items():
            proc = subprocess.Popen(["insmod", path])
            assert proc.wait() == 0, f"insmod {path} failed"
            pids[proc.pid] = name
            subprocess.run(["rmmod", name], check=True)
        evs = until(
            q,
            lambda e: e.module_load is not None and e.pid in pids,
            lambda got: len(got) >= len(pids),
        )
    assert len(evs) == len(pids), evs
    for e in evs:
        m = e.module_load
        assert m is not None and e.events == EV.MODULE_LOAD
        assert e.pid is not None and m.name == pids[e.pid], (e.pid, m)
        path = mods[m.name]
        want = (_modinfo(path, "version"), _modinfo(path, "srcversion"))
        assert (m.version, m.src_version) == want, (m, want)
    ver = next(e.module_load for e in evs if e.pid is not None
               and pids[e.pid] == versioned)  # fmt: skip
    assert ver is not None and ver.src_version, ver


@case(backends=("ebpf",))
def t_getpid(backend: str) -> None:
    """QQ.GETPID: one event per getpid(2) of another process, each a
    process event of that process and nothing else; the queue's own calls
    give none (they would feed themselves). The child makes its calls
    between two pipe handshakes, so that whatever the runtime calls at
    fork is counted apart."""
    n = 7
    me = os.getpid()
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    with _queue(backend, QQ.GETPID) as q:

        def calls() -> None:
            os.read(go_r, 1)
            for _ in range(n):
                os.getpid()
            os.write(done_w, b"x")

        pid = _child(calls)
        got: list[tuple[int, int, EV]] = []

        def drain(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                q.block(0.05)
                while (e := q.get_event()) is not None:
                    p = e.process
                    if p and p.pid in (pid, me) and e.events & EV.GETPID:
                        got.append((p.pid, p.ppid or 0, e.events))

        for _ in range(n):
            os.getpid()  # the queue's own: never an event
        drain(1.0)  # the hold time, many times over
        before = len(got)
        os.write(go_w, b"x")
        assert os.read(done_r, 1) == b"x"
        _wait_ok(pid)
        end = time.monotonic() + DEADLINE
        while len(got) < before + n and time.monotonic() < end:
            drain(0.1)
        drain(0.5)  # any extra would have arrived by now
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    assert all(g == (pid, me, EV.GETPID) for g in got), got
    assert len(got) - before == n, (before, got)
