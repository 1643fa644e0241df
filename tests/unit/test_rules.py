"""The rules DSL: parsing, semantics, and behaviour through the engine."""

from __future__ import annotations

import pathlib

import pytest

import quark
from quark import EV, Event, File, FileOp, Process, Shm, ShmKind
from quark.raw.record import StreamWriter
from quark.raw.types import RawEvent, RawKind, RawTask, Seed
from quark.rules import Action, Pattern, Ruleset

GOOD = [
    "pass on any",
    "drop on any",
    "poison 1 on any",
    "poison 18446744073709551615 on process.pid 1",
    "pass on process.pid 4294967295",
    "drop on process.ppid 1 process.uid 0",
    "pass on process.gid 0 process.sid 7",
    "drop on process.exe /usr/bin/true",
    'drop on process.exe "/usr/bin/with space"',
    "drop on process.exe /usr/bin/*",
    "drop on process.exe */true",
    "drop on process.exe /usr/*/true",
    "pass on file.path /tmp/x*",
    "pass on poison 42",
    "  pass   on\tany   # trailing comment",
    "# only a comment\n\n\npass on any\n",
    "drop on process.exe /a\\ b",
    "pass on \\\n any",
]
BAD = [
    ("", None),  # no rules is valid: not in this list's checks
    ("pass", "expected 'on'"),
    ("pass on", "expected matches"),
    ("allow on any", "expected pass, drop or poison"),
    ("poison on any", "decimal number"),
    ("poison 0 on any", "must not be 0"),
    ("pass on any process.pid 1", "nothing may follow"),
    ("pass on process.pid", "needs a value"),
    ("pass on process.pid 0", "must not be 0"),
    ("pass on process.ppid 0", "must not be 0"),
    ("pass on process.pid -1", "decimal number"),
    ("pass on process.pid 4294967296", "out of range"),
    ("pass on process.comm x", "unknown field"),
    ("pass on process.exe a*b*", "at most one"),
    ('pass on process.exe ""', "empty pattern"),
    ('pass on "process.pid" 1', "unknown field"),
    ("PASS on any", "expected pass"),
    ('pass on process.exe "unterminated', "unterminated quote"),
    ("pass on any\0", "NUL"),
]


@pytest.mark.parametrize("text", GOOD)
def test_good_rules_parse(text: str) -> None:
    rs = Ruleset.parse(text)
    assert len(rs.rules) == 1


@pytest.mark.parametrize(("text", "message"), BAD[1:])
def test_bad_rules_name_the_problem_and_place(text: str, message: str) -> None:
    with pytest.raises(quark.RuleError, match=message) as err:
        Ruleset.parse("pass on any\n" + text)
    assert err.value.line == 2
    assert err.value.column >= 1


def test_error_columns_point_at_the_word() -> None:
    with pytest.raises(quark.RuleError) as err:
        Ruleset.parse("pass on process.pid x")
    assert (err.value.line, err.value.column) == (1, 21)
    assert "at line 1 column 21" in str(err.value)


def test_patterns() -> None:
    assert Pattern.parse("/a/b", 1, 1).matches("/a/b")
    assert not Pattern.parse("/a/b", 1, 1).matches("/a/bc")
    assert Pattern.parse("/a/*", 1, 1).matches("/a/b/c")  # '*' crosses '/'
    assert Pattern.parse("*/true", 1, 1).matches("/usr/bin/true")
    infix = Pattern.parse("ab*ba", 1, 1)
    assert infix.matches("abba") and infix.matches("abxba")
    assert not infix.matches("aba")  # shorter than prefix + suffix
    assert not Pattern.parse("x", 1, 1).matches(None)


def _ev(**kw: object) -> Event:
    return Event(events=EV.EXEC, time=1, process=Process(**kw))


def test_first_match_wins_and_counters() -> None:
    rs = Ruleset.parse("pass on process.uid 0\ndrop on any\n")
    assert rs.evaluate(_ev(pid=5, uid=0), None) == (True, None)
    assert rs.evaluate(_ev(pid=6, uid=1000), None) == (False, None)
    assert [(r.evals, r.hits) for r in rs.rules] == [(2, 1), (1, 1)]


def test_uid_and_gid_are_the_real_ids() -> None:
    rs = Ruleset.parse("drop on process.uid 0\n")
    assert rs.evaluate(_ev(pid=5, uid=1000, euid=0), None)[0] is True
    assert rs.evaluate(_ev(pid=5, uid=0, euid=1000), None)[0] is False


def test_poison_continues_and_returns_the_tag() -> None:
    rs = Ruleset.parse(
        "poison 7 on process.exe /bin/*\npass on poison 7\ndrop on any\n"
    )
    assert rs.evaluate(_ev(pid=5, exe="/bin/sh"), None) == (True, 7)
    assert rs.evaluate(_ev(pid=6, exe="/usr/bin/x"), None) == (False, None)
    # an inherited tag matches without the poison rule matching again
    assert rs.evaluate(_ev(pid=7, exe="/usr/bin/x"), 7) == (True, 7)


def test_unknown_members_never_match() -> None:
    rs = Ruleset.parse("drop on process.ppid 1\ndrop on process.exe *\n")
    assert rs.evaluate(_ev(pid=5), None) == (True, None)
    assert rs.evaluate(Event(events=EV.EXIT, time=1, process=None),
                       None) == (True, None)  # fmt: skip


def _file_ev(path: str | None, **kw: object) -> Event:
    op = kw.pop("op", FileOp.CREATE)
    f = File(op, path, **kw)  # type: ignore[arg-type]
    return Event(events=EV.FILE, time=1, process=Process(pid=5), file=f)


@pytest.mark.parametrize(
    ("rule", "path", "hit"),
    [
        ("/tmp/x", "/tmp/x", True),
        ("/tmp/x", "/tmp/xy", False),
        ("/tmp/*", "/tmp/a/b", True),
        ("/tmp/*", "/var/tmp/a", False),
        ("*.so", "/usr/lib/libc.so", True),
        ("/etc/*.conf", "/etc/ssh/sshd.conf", True),
        ("/etc/*.conf", "/etc/passwd", False),
        ('"/tmp/with space"', "/tmp/with space", True),
        ("*", "/", True),
    ],
)
def test_file_path_matches_a_file_events_path(
    rule: str, path: str, hit: bool
) -> None:
    rs = Ruleset.parse(f"drop on file.path {rule}\n")
    assert rs.evaluate(_file_ev(path), None) == (not hit, None)
    assert rs.rules[0].hits == int(hit)


def test_file_path_never_matches_an_unknown_path_nor_other_kinds() -> None:
    rs = Ruleset.parse("drop on file.path *\n")
    # a path that could not be known whole is unknown, not ""
    assert rs.evaluate(_file_ev(None), None)[0] is True
    assert rs.evaluate(_ev(pid=5, exe="/bin/sh", cwd="/tmp"), None)[0]
    shm = Event(events=EV.SHM, time=1, process=Process(pid=5),
                shm=Shm(ShmKind.SHM_OPEN, path="/dev/shm/x"))  # fmt: skip
    assert rs.evaluate(shm, None)[0] is True
    assert rs.evaluate(Event(events=EV.FILE, time=1, process=None),
                       None)[0] is True  # fmt: skip
    assert rs.rules[0].hits == 0


def test_file_path_is_a_moves_new_name() -> None:
    rs = Ruleset.parse("drop on file.path /tmp/*\n")
    into = _file_ev("/tmp/new", op=FileOp.MOVE, old_path="/home/old")
    out = _file_ev("/home/new", op=FileOp.MOVE, old_path="/tmp/old")
    assert rs.evaluate(into, None)[0] is False
    assert rs.evaluate(out, None)[0] is True  # upstream's rule too


def test_file_path_needs_no_process_and_combines_with_others() -> None:
    f = File(op=FileOp.REMOVE, path="/etc/shadow")
    rs = Ruleset.parse("drop on file.path /etc/shadow\n")
    ev = Event(events=EV.FILE, time=1, process=None, file=f)
    assert rs.evaluate(ev, None)[0] is False
    rs = Ruleset.parse("pass on file.path /etc/* process.uid 0\ndrop on any\n")
    root = Event(events=EV.FILE, time=1, process=Process(pid=5, uid=0), file=f)
    user = root._replace(process=Process(pid=6, uid=1000))
    assert rs.evaluate(root, None)[0] is True
    assert rs.evaluate(user, None)[0] is False
    assert rs.evaluate(ev, None)[0] is False  # no process: no uid to match


def test_reset_counters_can_keep_poison_rules() -> None:
    rs = Ruleset.parse("poison 3 on any\npass on any\n")
    rs.evaluate(_ev(pid=1), None)
    rs.reset_counters(keep_poison=True)
    assert [(r.evals, r.hits) for r in rs.rules] == [(1, 1), (0, 0)]
    rs.reset_counters()
    assert [(r.evals, r.hits) for r in rs.rules] == [(0, 0), (0, 0)]
    assert rs.rules[0].action == Action.POISON


# -- behaviour through the engine (replayed streams, no root) ---------------

MS = 1_000_000
P = 4242  # the test's "parent"


def _task(ppid: int, uid: int = 1000, start: int = 0) -> RawTask:
    return RawTask(ppid=ppid, uid=uid, euid=uid, suid=uid, gid=uid,
                   egid=uid, sgid=uid, start_time=start)  # fmt: skip


def _stream(path: pathlib.Path, raws: list[RawEvent]) -> str:
    w = StreamWriter(path)
    w.seed(Seed(1, _task(0, 0, 1), exe="/sbin/init", args=("init",)))
    w.seed(Seed(P, _task(1, 1000, 2), exe="/usr/bin/python3",
                args=("python3",)))  # fmt: skip
    for r in raws:
        w.raw(r)
    w.close()
    return str(path)


def _fork_exit(pid: int, ppid: int, t: int, uid: int = 1000) -> list[RawEvent]:
    return [
        RawEvent(RawKind.WAKE_UP_NEW_TASK, t, pid, task=_task(ppid, uid, t)),
        RawEvent(RawKind.EXIT_THREAD, t + MS, pid, task=RawTask(exit_code=0)),
    ]


def _deliver(path: str, rules: str) -> tuple[list[Event], Ruleset]:
    rs = Ruleset.parse(rules)
    with quark.Queue(backend="replay", path=path, ruleset=rs) as q:
        return list(q), rs


def test_rule_poison_follows_a_subtree(tmp_path: pathlib.Path) -> None:
    """Four nested forks under P are poisoned and pass; the rest drop."""
    raws = []
    parent = P
    for i, pid in enumerate((5000, 5001, 5002, 5003)):
        raws += _fork_exit(pid, parent, (10 + 10 * i) * MS)
        parent = pid
    raws += _fork_exit(7000, 1, 15 * MS)  # unrelated
    path = _stream(tmp_path / "s.jsonl", raws)
    events, _ = _deliver(
        path, f"poison 1805 on process.ppid {P}\npass on poison 1805\n"
        "drop on any\n",
    )  # fmt: skip
    assert [e.process.pid for e in events if e.process] == [
        5000, 5001, 5002, 5003]  # fmt: skip
    assert all(e.events == EV.FORK | EV.EXIT for e in events)
    assert all(e.process and e.process.poison_tag == 1805 for e in events)


def test_rule_poison_applies_to_scraped_processes(
    tmp_path: pathlib.Path,
) -> None:
    path = _stream(tmp_path / "s.jsonl", [])
    rs = Ruleset.parse(f"poison 9 on process.pid {P}\npass on any\n")
    with quark.Queue(backend="replay", path=path, ruleset=rs) as q:
        p = q.lookup(P)
        assert p is not None and p.poison_tag == 9
        init = q.lookup(1)
        assert init is not None and init.poison_tag is None
    # priming counters of the pass rule were reset, the poison rule's kept
    assert (rs.rules[0].hits, rs.rules[1].evals) == (1, 0)


def test_rule_id_passes_one_uid(tmp_path: pathlib.Path) -> None:
    raws = _fork_exit(6000, P, 10 * MS) + _fork_exit(6001, P, 20 * MS,
                                                      uid=66666)  # fmt: skip
    path = _stream(tmp_path / "s.jsonl", raws)
    events, rs = _deliver(path, "pass on process.uid 66666\ndrop on any\n")
    assert len(events) == 1
    assert events[0].process and events[0].process.uid == 66666
    assert rs.rules[0].hits == 1 and rs.rules[1].hits == 1


def test_rule_path_drops_one_executable(tmp_path: pathlib.Path) -> None:
    raws = []
    for i, exe in enumerate(
        ("/tmp/quark-test-path1-a", "/tmp/quark-test-path2")
    ):
        pid = 8000 + i
        t = (10 + 10 * i) * MS
        raws += [
            RawEvent(RawKind.WAKE_UP_NEW_TASK, t, pid, task=_task(P, 1000, t)),
            RawEvent(
                RawKind.EXEC,
                t + MS,
                pid,
                task=RawTask(comm="x"),
                exe=exe,
                args=(exe,),
            ),
        ]
    path = _stream(tmp_path / "s.jsonl", raws)
    events, rs = _deliver(
        path, f"drop on process.ppid {P} process.exe /tmp/quark-test-path1*\n"
    )
    assert [e.process.exe for e in events if e.process] == [
        "/tmp/quark-test-path2"]  # fmt: skip
    assert rs.rules[0].hits == 1 and rs.rules[0].evals > rs.rules[0].hits
    assert q_stats_dropped(path, rs) == 1


def q_stats_dropped(path: str, rs: Ruleset) -> int:
    rs.reset_counters()
    with quark.Queue(backend="replay", path=path, ruleset=rs) as q:
        list(q)
        return q.stats().dropped_by_rules
