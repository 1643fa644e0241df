"""quark-mon's options for the kinds, its --probe table, and what -B
cannot go with: no kernel needed."""

from __future__ import annotations

import pytest

from quark import QQ
from quark.cli import mon

DOC = {
    "kernel": "6.1.0-test",
    "backends": {
        "ebpf": {"SOCK_CONN": None, "TTY": "no tty_write here",
                 "BYPASS": None},
        "kprobe": dict.fromkeys(
            ("SOCK_CONN", "TTY", "BYPASS"), "cannot open: no kprobe_events"
        ),
    },
    "skipped_probes": {"ebpf": ["security_mmap_file: no fentry"],
                       "kprobe": []},
}  # fmt: skip


def test_the_table_has_a_row_per_kind_and_a_column_per_backend() -> None:
    lines = mon.format_probe(DOC).splitlines()
    assert lines[0] == "kernel 6.1.0-test"
    assert lines[1].split() == ["kind", "ebpf", "kprobe"]
    assert [ln.split() for ln in lines[2:5]] == [
        ["SOCK_CONN", "live", "no"],
        ["TTY", "no", "no"],
        ["BYPASS", "live", "no"],
    ]
    assert all(ln == ln.rstrip() for ln in lines)


def test_the_table_says_why_not_once_per_reason() -> None:
    text = mon.format_probe(DOC)
    why = text.split("why not:\n", 1)[1]
    assert "  ebpf TTY: no tty_write here\n" in why
    # a backend that could not open: its one reason, not a line per kind
    assert "  kprobe (every kind): cannot open: no kprobe_events\n" in why
    assert why.count("kprobe") == 2
    assert "  ebpf: security_mmap_file: no fentry" in text


def test_a_backend_with_every_kind_live_has_no_reasons() -> None:
    doc = {"kernel": "k", "backends": {"ebpf": {"DNS": None}}}
    assert mon.format_probe(doc) == "kernel k\nkind  ebpf\nDNS   live\n"


@pytest.mark.parametrize(
    ("letter", "flag"),
    [("-Y", QQ.TTY), ("-T", QQ.PTRACE), ("-L", QQ.MODULE_LOAD),
     ("-G", QQ.GETPID), ("-B", QQ.BYPASS), ("-S", QQ.SOCK_CONN),
     ("-N", QQ.DNS), ("-F", QQ.FILE), ("-H", QQ.SHM)],
)  # fmt: skip
def test_each_kind_has_its_letter(letter: str, flag: QQ) -> None:
    args = mon._parser().parse_args([letter])
    assert mon._flags(args) == flag


def test_the_letters_are_upstreams_and_tty_is_documented() -> None:
    text = mon._parser().format_help()
    assert "QQ.TTY; upstream has no letter" in text
    assert "--probe" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["-B", "-P", "1"], "-B cannot go with -P"),
     (["-B", "-C", "/dev/null"], "-B cannot go with -C"),
     (["-B", "--replay", "x"], "-B cannot go with --replay"),
     (["--probe", "--replay", "x"], "--probe asks the kernel")],
)  # fmt: skip
def test_bypass_and_probe_refuse_options(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        mon.main(argv)
    assert caught.value.code == 2
    assert says in capsys.readouterr().err
