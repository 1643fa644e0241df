"""The public names of spec.md are fixed: a change here is a reviewed diff."""

from __future__ import annotations

import inspect

import quark

SPEC_NAMES = {
    "Queue", "QueueAttr", "Event", "Process", "Stats", "QQ", "EV",
    "QuarkError",
}  # fmt: skip


def test_spec_names_are_exported() -> None:
    missing = SPEC_NAMES - set(quark.__all__)
    assert not missing
    for name in quark.__all__:
        assert hasattr(quark, name), name


def test_flag_bits_are_upstreams() -> None:
    QQ, EV = quark.QQ, quark.EV
    assert [QQ[n].value for n in (
        "THREAD_EVENTS", "KPROBE", "EBPF", "MIN_AGG", "ENTRY_LEADER",
        "SOCK_CONN", "DNS", "BYPASS", "FILE", "SHM", "TTY", "PTRACE",
        "MODULE_LOAD",
    )] == [1 << i for i in range(13)]  # fmt: skip
    assert [EV[n].value for n in (
        "FORK", "EXEC", "EXIT", "ID_CHANGE", "SETPROCTITLE",
        "SOCK_CONN_ESTABLISHED", "SOCK_CONN_CLOSED", "PACKET", "BYPASS",
        "FILE", "PTRACE", "MODULE_LOAD", "SHM", "TTY",
    )] == [1 << i for i in range(14)]  # fmt: skip


def test_queue_attr_defaults_are_upstreams() -> None:
    a = quark.QueueAttr()
    assert a.flags == quark.QQ.KPROBE | quark.QQ.EBPF
    assert (a.max_length, a.cache_grace_time, a.hold_time, a.max_env) == (
        10000,
        4000,
        1000,
        4096,
    )


def test_errors_are_oserrors_with_errno() -> None:
    assert issubclass(quark.QuarkError, OSError)
    for name in (
        "NotSupportedError",
        "PrivilegeError",
        "ConfigError",
        "BackendError",
        "BTFError",
        "DecodeError",
        "LibbpfError",
        "RuleError",
    ):
        cls = getattr(quark, name)
        assert issubclass(cls, quark.QuarkError), name
    err = quark.NotSupportedError("no BTF")
    assert err.errno is not None and str(err) == "no BTF"


def test_process_members_are_specs() -> None:
    members = {
        "pid", "ppid", "uid", "gid", "suid", "sgid", "euid", "egid", "pgid",
        "sid", "cap_inheritable", "cap_permitted", "cap_effective",
        "cap_bset", "cap_ambient", "start_time", "tty_major", "tty_minor",
        "uts_inonum", "ipc_inonum", "mnt_inonum", "net_inonum",
        "entry_leader", "entry_leader_type", "entity_id", "comm", "exe",
        "cmdline", "cwd", "cgroup", "env", "exit_code", "exit_time",
    }  # fmt: skip
    assert members <= set(quark.Process.FIELDS)
    p = quark.Process(pid=1)
    assert all(getattr(p, m) is None for m in members - {"pid"})


def test_snapshots_are_immutable() -> None:
    p = quark.Process(pid=1, cmdline=["a", "b"])
    p.cmdline.append("c")  # a fresh list each time
    assert p.cmdline == ["a", "b"]
    ev = quark.Event(events=quark.EV.FORK, time=1, process=p)
    for obj, attr in ((p, "pid"), (ev, "time")):
        try:
            setattr(obj, attr, 2)
        except AttributeError:
            pass
        else:
            raise AssertionError(f"{type(obj).__name__}.{attr} is writable")


def test_queue_surface() -> None:
    q = quark.Queue
    for name in (
        "get_event",
        "block",
        "fileno",
        "lookup",
        "processes",
        "stats",
        "close",
        "set_agg_matrix",
        "__enter__",
        "__exit__",
        "__iter__",
    ):
        assert callable(getattr(q, name)), name
    sig = inspect.signature(q.block)
    assert "timeout" in sig.parameters
    assert next(iter(inspect.signature(q).parameters)) == "attr"
