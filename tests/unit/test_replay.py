"""Recorded streams: golden output, malformed input, and the /proc scraper."""

from __future__ import annotations

import os
import pathlib

import pytest

import quark
from quark.procfs import (
    parse_cgroup,
    parse_stat,
    parse_status,
    scrape,
    tty_split,
)
from tests.golden import STREAMS, deliver

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "raw"
HEADER = '{"quark":"raw-stream","version":1}\n'


@pytest.mark.parametrize(
    ("name", "variant"),
    [(n, v) for n, vs in STREAMS.items() for v in vs],
)
def test_golden_streams_replay_byte_for_byte(name: str, variant: str) -> None:
    expected = (DATA / f"{name}.{variant}.expected.jsonl").read_text()
    assert deliver(DATA / f"{name}.jsonl", **STREAMS[name][variant]) == (
        expected
    ), "regenerate with tools/regen_golden.py only if the change is intended"


def _write(tmp: pathlib.Path, text: str) -> str:
    p = tmp / "s.jsonl"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("not json\n", "header is not JSON"),
        ('{"quark":"other"}\n', "not a quark raw stream"),
        (
            '{"quark":"raw-stream","version":99}\n',
            "unsupported stream version",
        ),
    ],
)
def test_bad_headers_are_refused(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(quark.DecodeError, match=message) as err:
        quark.Queue(backend="replay", path=_write(tmp_path, text))
    assert ":1:" in str(err.value) or "empty" in str(err.value)


BAD_LINES = [
    ("{oops", "not JSON"),
    ('{"raw":{"kind":"NOPE","time":1,"pid":1}}', "unknown raw kind"),
    ('{"raw":{"kind":"EXEC","time":"x","pid":1}}', "must be an integer"),
    ('{"raw":{"kind":"EXEC","time":1}}', "missing 'pid'"),
    ('{"raw":{"kind":"EXEC","time":1,"pid":1,"args":"x"}}', "list of strings"),
    ('{"raw":{"kind":"EXEC","time":1,"pid":1,"task":{"uid":"0"}}}',
     "task.uid must be an integer"),
    ('{"raw":{"kind":"EXEC","time":1,"pid":1,"task":{"bogus":1}}}',
     "unknown task field"),
    ('{"lost":-1}', "integer >= 0"),
    ('{"what":1}', "unknown record type"),
    ('{"raw":{},"lost":1}', "exactly one key"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_malformed_line_names_itself_and_the_queue_goes_on(
    tmp_path,
    line: str,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    good = '{"raw":{"kind":"COMM","time":5,"pid":9,"comm":"ok"}}'
    path = _write(tmp_path, HEADER + line + "\n" + good + "\n")
    with quark.Queue(backend="replay", path=path, hold_time=10) as q:
        with pytest.raises(quark.DecodeError, match=message) as err:
            while q.get_event() is None and not q.exhausted:
                pass
        assert f"{path}:2:" in str(err.value)
        events = list(q)  # the consumer goes on with the next line
        assert [e.process.comm for e in events if e.process] == ["ok"]
        assert q.stats().decode_errors == 1 and q.stats().lost >= 1


def test_errors_can_be_counted_instead(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = '{"raw":{"kind":"COMM","time":5,"pid":9,"comm":"ok"}}'
    path = _write(tmp_path, HEADER + "{oops\n" + good + "\n{bad\n")
    with quark.Queue(backend="replay", path=path, errors="count") as q:
        assert len(list(q)) == 1
        assert q.stats().decode_errors == 2


def test_a_replay_round_trips_through_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    again = tmp_path / "again.jsonl"
    with quark.Queue(backend="replay", path=str(DATA / "basic.jsonl"),
                     record=str(again)) as q:  # fmt: skip
        first = list(q)
    with quark.Queue(backend="replay", path=str(again)) as q:
        second = list(q)
    assert first == second


# -- the /proc scraper -------------------------------------------------------


def test_stat_with_a_hostile_comm() -> None:
    fields = " ".join(["S", "1", "4242", "4243", "34818"] + ["0"] * 14
                      + ["12345"] + ["0"] * 30)  # fmt: skip
    text = f"77 (a) b (c) {fields}"
    d = parse_stat(text, 100)
    assert (d["pgid"], d["sid"]) == (4242, 4243)
    assert (d["tty_major"], d["tty_minor"]) == (136, 2)
    assert d["start_time"] == 12345 * 10_000_000


def test_tty_split_and_status() -> None:
    assert tty_split((4 << 8) | 1) == (4, 1)
    assert tty_split((136 << 8) | (300 & 0xFF) | ((300 >> 8) << 20)) == (
        136, 300)  # fmt: skip
    st = parse_status("PPid:\t1\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n"
                      "CapBnd:\t000001ffffffffff\n")  # fmt: skip
    assert (st["ppid"], st["uid"], st["euid"], st["suid"]) == (1, 1, 2, 3)
    assert (st["gid"], st["egid"], st["sgid"]) == (5, 6, 7)
    assert st["cap_bset"] == 0x1FFFFFFFFFF


def test_cgroup_v2_first_else_v1_pids() -> None:
    assert parse_cgroup("12:pids:/a\n0::/user.slice/x\n") == "/user.slice/x"
    assert parse_cgroup("12:cpu:/c\n3:pids:/p\n") == "/p"
    assert parse_cgroup("") is None


def _proc(root: pathlib.Path, pid: int, comm: str, env: bytes) -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "status").write_text("PPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    rest = " ".join(["S", "1", str(pid), str(pid), "0"] + ["0"] * 14
                    + ["500"] + ["0"] * 30)  # fmt: skip
    (d / "stat").write_text(f"{pid} ({comm}) {rest}")
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"/bin/" + comm.encode() + b"\0-x\0")
    (d / "environ").write_bytes(env)
    (d / "cgroup").write_text("0::/svc\n")
    os.symlink("/bin/" + comm, d / "exe")
    os.symlink("/srv", d / "cwd")
    os.symlink("uts:[4026531838]", d / "ns" / "uts")


def test_scrape_a_fixture_tree(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, 10, "one", b"A=1\0B=2\0")
    _proc(tmp_path, 11, "two", b"X=" + b"y" * 100 + b"\0Z=1\0")
    (tmp_path / "self").mkdir()  # not a pid: ignored
    (tmp_path / "12").mkdir()  # vanished mid-scrape: left out
    seeds = scrape(str(tmp_path), max_env=50, hz=100)
    assert [s.pid for s in seeds] == [10, 11]
    one, two = seeds
    assert one.exe == "/bin/one" and one.args == ("/bin/one", "-x")
    assert one.task.cwd == "/srv" and one.task.cgroup == "/svc"
    assert one.task.env == ("A=1", "B=2") and one.task.uts_inonum == 4026531838
    assert one.task.start_time == 500 * 10_000_000
    assert two.task.env == ()  # the first entry alone is over max_env


def test_scrape_the_real_proc_finds_this_process() -> None:
    me = {s.pid: s for s in scrape("/proc")}[os.getpid()]
    assert me.task.cwd == os.getcwd()
    with open("/proc/self/cmdline", "rb") as f:
        argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
    assert me.args is not None and list(me.args) == argv
    assert me.task.ppid == os.getppid()
