"""quark-mon's dump of file and shared-memory events, and its -F / -H
options."""

from __future__ import annotations

import pytest

from quark import (
    EV,
    QQ,
    Event,
    File,
    FileChange,
    FileOp,
    Process,
    Shm,
    ShmKind,
    SockAddr,
    Socket,
    SockOrigin,
)
from quark.cli import mon
from quark.dump import dump_event, dump_process

PROC = Process(pid=42, ppid=1, comm="sh", exe="/bin/sh", cwd="/tmp")
PROC_LINES = dump_process(PROC).split("\n", 1)[1]


def _file(**kw: object) -> File:
    values: dict[str, object] = {
        "op": FileOp.CREATE,
        "path": "/tmp/new.txt",
        "inode": 1234,
        "mode": 0o100644,
        "size": 5,
        "uid": 0,
        "gid": 100,
        "atime": 1_700_000_000_000_000_001,
        "mtime": 1_700_000_000_000_000_002,
        "ctime": 1_700_000_000_000_000_003,
    }
    values.update(kw)
    return File(**values)  # type: ignore[arg-type]


def _dump(f: File, process: Process | None = PROC) -> str:
    return dump_event(Event(events=EV.FILE, time=5, process=process, file=f))


def test_file_lines_come_after_the_header_and_before_the_process() -> None:
    assert _dump(_file()) == (
        "->42 (FILE)\n"
        "  FILE\top=CREATE\n"
        "  FILE\tpath=/tmp/new.txt\n"
        "  FILE\tmode=0100644 uid=0 gid=100 size=5 inode=1234\n"
        "  FILE\tatime=1700000000000000001 mtime=1700000000000000002 "
        "ctime=1700000000000000003\n" + PROC_LINES
    )


def test_aggregated_ops_print_lowest_bit_first_with_the_change() -> None:
    f = _file(
        op=FileOp.MOVE | FileOp.REMOVE | FileOp.MODIFY | FileOp.CREATE,
        change=FileChange.TRUNCATE | FileChange.CONTENT | FileChange.OWNER,
    )
    assert _dump(f).splitlines()[1] == (
        "  FILE\top=CREATE|MODIFY|REMOVE|MOVE change=CONTENT|OWNER|TRUNCATE"
    )


def test_a_move_has_its_old_path_line() -> None:
    lines = _dump(_file(op=FileOp.MOVE, old_path="/tmp/old.txt")).splitlines()
    assert lines[1:4] == [
        "  FILE\top=MOVE",
        "  FILE\tpath=/tmp/new.txt",
        "  FILE\told_path=/tmp/old.txt",
    ]
    assert lines[4].startswith("  FILE\tmode=")


def test_a_symlink_has_its_target_line() -> None:
    f = _file(path="/tmp/link", sym_target="../etc/passwd", mode=0o120777)
    lines = _dump(f).splitlines()
    assert lines[2:5] == [
        "  FILE\tpath=/tmp/link",
        "  FILE\tsym_target=../etc/passwd",
        "  FILE\tmode=0120777 uid=0 gid=100 size=5 inode=1234",
    ]


def test_a_move_of_a_symlink_has_both_lines_in_upstreams_order() -> None:
    f = _file(op=FileOp.MOVE, old_path="/a", sym_target="/b")
    assert [line.split("=")[0] for line in _dump(f).splitlines()[1:7]] == [
        "  FILE\top",
        "  FILE\tpath",
        "  FILE\told_path",
        "  FILE\tsym_target",
        "  FILE\tmode",
        "  FILE\tatime",
    ]


def test_unknown_file_members_print_as_question_marks() -> None:
    f = File(op=FileOp.REMOVE, path=None)
    assert _dump(f, process=None) == (
        "->? (FILE)\n"
        "  FILE\top=REMOVE\n"
        "  FILE\tpath=?\n"
        "  FILE\tmode=? uid=? gid=? size=? inode=?\n"
        "  FILE\tatime=? mtime=? ctime=?\n"
    )


def test_none_op_and_change_and_unnamed_bits() -> None:
    f = File(op=None, path="/x", change=None)  # type: ignore[arg-type]
    assert _dump(f).splitlines()[1] == "  FILE\top=?"
    f = File(op=FileOp(0x12), path="/x", change=FileChange(0x41))
    assert (
        _dump(f).splitlines()[1]
        == "  FILE\top=MODIFY|0x10 change=CONTENT|0x40"
    )


def test_shm_lines() -> None:
    cases = [
        (
            Shm(ShmKind.SHMGET, key=0x1234, size=4096, flags=0o1600),
            "  SHM\tkind=SHMGET key=0x00001234 size=4096 flags=01600 path=?",
        ),
        (
            Shm(ShmKind.SHMGET, key=-1, size=1, flags=0),
            "  SHM\tkind=SHMGET key=0xffffffff size=1 flags=00 path=?",
        ),
        (
            Shm(ShmKind.SHM_OPEN, flags=0o102, path="/dev/shm/psm_1"),
            "  SHM\tkind=SHM_OPEN key=? size=? flags=0102 path=/dev/shm/psm_1",
        ),
        (
            Shm(ShmKind.MEMFD_CREATE, flags=1, path="memfd:x"),
            "  SHM\tkind=MEMFD_CREATE key=? size=? flags=01 path=memfd:x",
        ),
        (
            Shm(None),  # type: ignore[arg-type]
            "  SHM\tkind=? key=? size=? flags=? path=?",
        ),
    ]
    for shm, line in cases:
        ev = Event(events=EV.SHM, time=5, process=PROC, shm=shm)
        assert dump_event(ev) == f"->42 (SHM)\n{line}\n{PROC_LINES}"


def test_socket_lines_stay_first() -> None:
    # an event never carries both today; the order is upstream's anyway
    sock = Socket(
        local=SockAddr.of("10.0.0.1", 1),
        remote=SockAddr.of("10.0.0.2", 2),
        pid_origin=42,
        pid_last_use=42,
        established_time=1,
        close_time=None,
        conn_origin=SockOrigin.CONNECT,
    )
    ev = Event(
        events=EV.FILE | EV.SHM,
        time=5,
        process=None,
        socket=sock,
        file=_file(),
        shm=Shm(ShmKind.MEMFD_CREATE, flags=0, path="memfd:x"),
    )
    tags = [line.split("\t")[0] for line in dump_event(ev).splitlines()[1:]]
    assert tags == ["  SOCK"] * 2 + ["  FILE"] * 4 + ["  SHM"]


def test_process_events_dump_as_before() -> None:
    assert dump_event(Event(events=EV.EXEC, time=1, process=PROC)) == (
        dump_process(PROC, EV.EXEC)
    )


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["-F"], QQ.FILE),
        (["-H"], QQ.SHM),
        (["-F", "-H", "-S"], QQ.FILE | QQ.SHM | QQ.SOCK_CONN),
    ],
)
def test_mon_options_ask_for_file_and_shm(
    argv: list[str], flags: QQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: dict[str, object] = {}

    def fake_queue(**kw: object) -> object:
        opened.update(kw)
        return object()

    monkeypatch.setattr("quark.Queue", fake_queue)
    mon._open(mon._parser().parse_args(argv))
    assert opened["flags"] == flags
    assert opened["backend"] == "auto"


def test_mon_help_says_what_file_and_shm_need() -> None:
    text = " ".join(mon._parser().format_help().split())
    assert "-F file operations too" in text
    assert "(QQ.FILE; needs the EBPF backend)" in text
    assert "-H shared memory too" in text
    assert "(QQ.SHM; needs the EBPF backend)" in text
