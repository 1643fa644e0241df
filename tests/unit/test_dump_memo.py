"""quark-mon's text dump formats each line once per distinct values: the
memo must never show one process's values for another's."""

from __future__ import annotations

from quark import EV
from quark.dump import _MEMO_MAX, dump_process, events_str
from quark.events import Process


def _proc(pid: int, cwd: str, env: tuple[str, ...]) -> Process:
    return Process(
        pid=pid, ppid=1, uid=0, gid=0, comm="true", exe="/usr/bin/true",
        cmdline=["/bin/true", "-la"], cwd=cwd, env=list(env),
        cap_effective=0x1FF,
    )  # fmt: skip


def test_each_process_shows_its_own_values() -> None:
    env = ("HOME=/root", "PATH=/usr/bin")
    a = dump_process(_proc(10, "/srv", env), EV.FORK | EV.EXEC)
    b = dump_process(_proc(11, "/home", env), EV.EXEC)
    assert a.startswith("->10 (FORK+EXEC)\n")
    assert b.startswith("->11 (EXEC)\n")
    assert "cwd=/srv" in a and "cwd=/home" in b
    assert "env_len=25" in a and "env_len=25" in b  # 10+1 + 13+1
    # again, now from the memo: the same text
    assert dump_process(_proc(10, "/srv", env), EV.FORK | EV.EXEC) == a


def test_unhashable_values_print_as_hashable_ones_do() -> None:
    # a caller's own Process may hold lists: formatted, not memoized
    listed = _proc(14, "/srv", ("A=1",))
    tupled = listed._replace(cmdline=("/bin/true", "-la"), env=("A=1",))
    assert dump_process(listed, EV.EXEC) == dump_process(tupled, EV.EXEC)
    assert "cmdline=[ /bin/true, -la ]" in dump_process(listed, EV.EXEC)


def test_sizes_count_bytes_not_characters() -> None:
    text = dump_process(_proc(12, "/", ("K=é",)), EV.EXEC)
    assert "env_len=5" in text  # K, =, two bytes of é, NUL
    assert "env_len=0" in dump_process(_proc(13, "/", ()), EV.EXEC)


def test_past_its_bound_the_memo_starts_over_and_stays_right() -> None:
    for i in range(_MEMO_MAX + 50):
        cwd = f"/srv/{i}"
        assert f"cwd={cwd}\n" in dump_process(_proc(i + 100, cwd, ()))


def test_events_str_takes_ints_and_flags() -> None:
    assert events_str(EV.FORK | EV.EXIT) == "FORK+EXIT"
    assert events_str(int(EV.EXEC)) == "EXEC"
    assert events_str(0) == ""
