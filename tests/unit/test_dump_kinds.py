"""quark-mon's dump of terminal output, ptrace requests, module loads and
bypass records (quark.dump)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from quark import EV, Event, ModuleLoad, Process, Ptrace, Tty
from quark.dump import BYPASS_HEAD, dump_event, dump_process, tty_text

PROC = Process(pid=42, ppid=1, comm="sh", exe="/bin/sh", cwd="/tmp")
PROC_LINES = dump_process(PROC).split("\n", 1)[1]


def _tty(data: bytes = b"hello\r\n", **kw: int) -> Tty:
    values = {
        "major": 136, "minor": 3, "cols": 80, "rows": 24, "iflag": 0x500,
        "oflag": 0x5, "cflag": 0xBF, "lflag": 0x8A3B, "truncated": 0,
    }  # fmt: skip
    values.update(kw)
    return Tty(data=data, **values)


def _dump(process: Process | None = PROC, **kw: object) -> str:
    events = {
        "tty": EV.TTY, "ptrace": EV.PTRACE, "module_load": EV.MODULE_LOAD,
        "bypass": EV.BYPASS,
    }  # fmt: skip
    (member,) = kw
    return dump_event(
        Event(events=events[member], time=5, process=process, **kw)
    )


# -- TTY ----------------------------------------------------------------------


def test_tty_lines_come_after_the_header_and_before_the_process() -> None:
    assert _dump(tty=_tty()) == (
        "->42 (TTY)\n"
        "  TTY\tmajor=136 minor=3 size=80x24 len=7 truncated=0\n"
        "  TTY\tiflag=0x500 oflag=0x5 cflag=0xbf lflag=0x8a3b\n"
        '  TTY\tdata="hello\\r\\n"\n' + PROC_LINES
    )


def test_tty_truncated_and_no_process() -> None:
    out = _dump(process=None, tty=_tty(b"x" * 8192, truncated=1808))
    lines = out.splitlines()
    assert lines[0] == "->? (TTY)"
    assert lines[1] == (
        "  TTY\tmajor=136 minor=3 size=80x24 len=8192 truncated=1808"
    )
    assert lines[3] == '  TTY\tdata="' + "x" * 8192 + '"'
    assert len(lines) == 4


def test_tty_empty_data_and_unset_window() -> None:
    lines = _dump(tty=_tty(b"", cols=0, rows=0)).splitlines()
    assert lines[1] == "  TTY\tmajor=136 minor=3 size=0x0 len=0 truncated=0"
    assert lines[3] == '  TTY\tdata=""'


def test_tty_data_is_shown_safely() -> None:
    cases = [
        (b"plain", "plain"),
        (b"a b\tc\r\n", "a b\\tc\\r\\n"),
        (b'say "hi" \\o/', 'say \\"hi\\" \\\\o/'),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # no colour
        (b"\x07\x08\x00\x7f", "\\x07\\x08\\x00\\x7f"),
        ("café ✓".encode(), "café ✓"),  # printable UTF-8 stays text
        (b"\xff\xfe", "\\xff\\xfe"),  # not UTF-8
        (b"\xc3", "\\xc3"),  # a character cut short
        ("\u202eevil".encode(), "\\xe2\\x80\\xaeevil"),  # bidi override
        ("\u00a0\u2028".encode(), "\\xc2\\xa0\\xe2\\x80\\xa8"),  # spaces
        ("\x9b31m".encode(), "\\xc2\\x9b31m"),  # the C1 CSI
    ]
    for data, shown in cases:
        assert tty_text(data) == shown, data
        assert _dump(tty=_tty(data)).splitlines()[3] == (
            f'  TTY\tdata="{shown}"'
        )


_ESCAPE = re.compile(r'\\(x[0-9a-f]{2}|[\\"trn])')
_SIMPLE = {"\\": b"\\", '"': b'"', "t": b"\t", "r": b"\r", "n": b"\n"}


def _unescape(shown: str) -> bytes:
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(shown):
        out += shown[pos : m.start()].encode()
        e = m.group(1)
        out += bytes([int(e[1:], 16)]) if e[0] == "x" else _SIMPLE[e]
        pos = m.end()
    out += shown[pos:].encode()
    return bytes(out)


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=64)
    | st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass"))
)
def test_tty_text_is_printable_and_says_exactly_which_bytes(
    data: bytes,
) -> None:
    shown = tty_text(data)
    # nothing a terminal would act on, and one line
    assert shown.isprintable() or shown == ""
    # every backslash and quote belongs to an escape
    assert _ESCAPE.sub("", shown).count("\\") == 0
    assert '"' not in _ESCAPE.sub("", shown)
    assert _unescape(shown) == data


# -- PTRACE -------------------------------------------------------------------


def test_ptrace_line_is_upstreams() -> None:
    assert _dump(ptrace=Ptrace(4243, 16, 0, 0)) == (
        "->42 (PTRACE)\n"
        "  PTRA\tpid=4243 request=0x10 addr=0x0 data=0x0\n" + PROC_LINES
    )
    line = _dump(ptrace=Ptrace(7, 0x4206, 0x7FFD5C2F1000, 1)).splitlines()[1]
    assert line == "  PTRA\tpid=7 request=0x4206 addr=0x7ffd5c2f1000 data=0x1"


def test_ptrace_negative_values_print_as_upstreams_llx() -> None:
    line = _dump(process=None, ptrace=Ptrace(7, -1, -2, 2**64 - 1))
    assert line == (
        "->? (PTRACE)\n"
        "  PTRA\tpid=7 request=0xffffffffffffffff addr=0xfffffffffffffffe "
        "data=0xffffffffffffffff\n"
    )


# -- MODULE_LOAD --------------------------------------------------------------


def test_module_line() -> None:
    m = ModuleLoad("dummy", "1.0", "6A1F0C2B0D5E", 0x3000)
    assert _dump(module_load=m) == (
        "->42 (MODULE_LOAD)\n"
        "  MODL\tname=dummy version=1.0 srcversion=6A1F0C2B0D5E "
        "taints=0x3000\n" + PROC_LINES
    )


def test_module_without_version_or_srcversion() -> None:
    m = ModuleLoad("dummy", None, None, 0)
    assert _dump(module_load=m, process=None) == (
        "->? (MODULE_LOAD)\n"
        "  MODL\tname=dummy version=? srcversion=? taints=0x0\n"
    )


# -- BYPASS -------------------------------------------------------------------


def test_bypass_shows_its_length_and_head() -> None:
    rec = bytes(range(100))
    out = _dump(process=None, bypass=rec)
    lines = out.splitlines()
    assert lines[:2] == ["->? (BYPASS)", "  BYPS\tlen=100 head=64"]
    assert len(lines) == 2 + BYPASS_HEAD // 16
    assert lines[2] == (
        "    0000: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  "
        "................"
    )
    assert lines[-1].startswith("    0030: 30 31 32")


def test_short_and_empty_bypass_records() -> None:
    assert _dump(process=None, bypass=b"") == (
        "->? (BYPASS)\n  BYPS\tlen=0 head=0\n"
    )
    assert _dump(process=None, bypass=b"\x0b\x00") == (
        "->? (BYPASS)\n  BYPS\tlen=2 head=2\n"
        "    0000: 0b 00" + " " * 42 + "  ..\n"
    )


def test_an_event_without_a_payload_dumps_as_before() -> None:
    assert dump_event(Event(events=EV.TTY, time=1, process=PROC)) == (
        dump_process(PROC, EV.TTY)
    )
    assert dump_event(Event(events=EV.BYPASS, time=1, process=None)) == (
        "->? (BYPASS)\n"
    )
