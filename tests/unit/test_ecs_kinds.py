"""ECS documents of terminal output, ptrace requests and module loads, and
the refusal of bypass events (quark.ecs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quark import EV, ConfigError, Event, ModuleLoad, Process, Ptrace, Tty
from quark.ecs import (
    EcsEncoder,
    event_action,
    ptrace_action,
    ptrace_request_name,
)
from quark.sysinfo import HostInfo

PARENT = Process(pid=10, ppid=1, comm="bash", exe="/usr/bin/bash")
PROC = Process(
    pid=11, ppid=10, comm="vim", exe="/usr/bin/vim", tty_major=136,
    tty_minor=1, entity_id="CwAAAAAAAAAAAAAA",
)  # fmt: skip


def _enc(arch: str = "x86_64") -> EcsEncoder:
    host = HostInfo("h", arch, "6.1.0", "boot-id", {"NAME": "Debian"})
    return EcsEncoder({10: PARENT}.get, host=host, clock_offsets=(0, 0))


def _doc(ev: Event, enc: EcsEncoder | None = None) -> dict[str, Any]:
    text = (enc or _enc()).encode(ev)
    text.encode("utf-8")  # always valid UTF-8
    doc: dict[str, Any] = json.loads(text)
    return doc


def _tty(data: bytes = b"hello\r\n", **kw: int) -> Tty:
    values = {
        "major": 136, "minor": 3, "cols": 80, "rows": 24, "iflag": 0x500,
        "oflag": 0x5, "cflag": 0xBF, "lflag": 0x8A3B, "truncated": 0,
    }  # fmt: skip
    values.update(kw)
    return Tty(data=data, **values)


def _tty_doc(t: Tty, process: Process | None = PROC) -> dict[str, Any]:
    return _doc(Event(events=EV.TTY, time=9, process=process, tty=t))


# -- TTY ----------------------------------------------------------------------


def test_tty_output_is_where_the_session_view_reads_it() -> None:
    doc = _tty_doc(_tty())
    assert doc["event"] == {
        "kind": "event", "category": ["process"], "type": ["info"],
        "action": "text_output",
    }  # fmt: skip
    p = doc["process"]
    assert p["io"] == {
        "type": "tty",
        "text": "hello\r\n",
        "total_bytes_captured": 7,
        "total_bytes_skipped": 0,
    }
    # the terminal written to, not the controlling one (136:1)
    assert p["tty"] == {
        "char_device": {"major": 136, "minor": 3},
        "columns": 80,
        "rows": 24,
    }
    assert p["pid"] == 11 and p["entity_id"] == "CwAAAAAAAAAAAAAA"
    assert p["parent"]["pid"] == 10 and "io" not in p["parent"]
    assert doc["quark"] == {
        "tty": {"iflag": 0x500, "oflag": 0x5, "cflag": 0xBF,
                "lflag": 0x8A3B},
    }  # fmt: skip
    assert not {"file", "network", "source", "destination"} & set(doc)


def test_tty_skipped_bytes() -> None:
    doc = _tty_doc(_tty(b"y" * 8192, truncated=1808))
    io = doc["process"]["io"]
    assert io["total_bytes_captured"] == 8192
    assert io["total_bytes_skipped"] == 1808
    assert io["bytes_skipped"] == [{"offset": 8192, "length": 1808}]


def test_tty_skip_offset_is_in_bytes_of_the_text() -> None:
    # é is 2 bytes, an invalid byte becomes U+FFFD (3 bytes in UTF-8)
    doc = _tty_doc(_tty("é".encode() + b"\xff", truncated=5))
    io = doc["process"]["io"]
    assert io["text"] == "é\ufffd"
    assert io["total_bytes_captured"] == 3  # what was written
    assert io["bytes_skipped"] == [{"offset": 5, "length": 5}]


def test_tty_text_is_utf8_with_replacement_and_keeps_controls() -> None:
    data = b"\x1b[1mbold\x1b[0m \xe2\x9c\x93 \xc3"
    io = _tty_doc(_tty(data))["process"]["io"]
    assert io["text"] == "\x1b[1mbold\x1b[0m \u2713 \ufffd"


def test_tty_unset_window_is_left_out() -> None:
    tty = _tty_doc(_tty(cols=0, rows=0))["process"]["tty"]
    assert tty == {"char_device": {"major": 136, "minor": 3}}


def test_tty_without_a_process_still_has_its_io() -> None:
    doc = _tty_doc(_tty(b"x"), process=None)
    assert set(doc["process"]) == {"io", "tty"}
    assert doc["process"]["io"]["text"] == "x"


def test_tty_document_does_not_touch_the_cached_parent() -> None:
    enc = _enc()
    _doc(Event(events=EV.TTY, time=1, process=PROC, tty=_tty()), enc)
    doc = _doc(Event(events=EV.EXEC, time=2, process=PROC), enc)
    assert doc["process"]["tty"] == {"char_device": {"major": 136,
                                                     "minor": 1}}  # fmt: skip
    assert "io" not in doc["process"] and "quark" not in doc


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), truncated=st.integers(0, 10_000))
def test_any_tty_bytes_make_a_valid_document(
    data: bytes, truncated: int
) -> None:
    io = _tty_doc(_tty(data, truncated=truncated))["process"]["io"]
    assert io["text"] == data.decode("utf-8", "replace")
    assert io["total_bytes_captured"] == len(data)
    assert io["total_bytes_skipped"] == truncated
    if truncated:
        offset = len(io["text"].encode())
        assert io["bytes_skipped"] == [{"offset": offset,
                                        "length": truncated}]  # fmt: skip
    else:
        assert "bytes_skipped" not in io


# -- PTRACE -------------------------------------------------------------------


def _pt_doc(pt: Ptrace, enc: EcsEncoder | None = None) -> dict[str, Any]:
    return _doc(Event(events=EV.PTRACE, time=9, process=PROC, ptrace=pt), enc)


def test_ptrace_attach() -> None:
    doc = _pt_doc(Ptrace(4243, 16, 0, 0))
    assert doc["event"] == {
        "kind": "event", "category": ["process"], "type": ["access"],
        "action": "ptrace-attach",
    }  # fmt: skip
    assert doc["quark"] == {
        "ptrace": {
            "child_pid": 4243, "request": 16,
            "request_name": "PTRACE_ATTACH", "addr": "0x0", "data": "0x0",
        }
    }  # fmt: skip
    assert doc["process"]["pid"] == 11  # the tracer
    assert "io" not in doc["process"]


def test_ptrace_arguments_are_unsigned_hex() -> None:
    q = _pt_doc(Ptrace(7, 2, 0x7FFD5C2F1000, -1))["quark"]["ptrace"]
    assert q["addr"] == "0x7ffd5c2f1000"
    assert q["data"] == "0xffffffffffffffff"
    assert q["request_name"] == "PTRACE_PEEKDATA"


def test_ptrace_request_names() -> None:
    assert ptrace_request_name(0x4206) == "PTRACE_SEIZE"
    assert ptrace_request_name(0x4212) == "PTRACE_SET_SYSCALL_INFO"
    assert ptrace_action(5) == "ptrace-pokedata"
    assert ptrace_action(0x420E) == "ptrace-get-syscall-info"
    # below 0x4200 the numbers that are not generic depend on the
    # architecture
    assert ptrace_request_name(12, "x86_64") == "PTRACE_GETREGS"
    assert ptrace_request_name(12, "aarch64") is None
    assert ptrace_request_name(33, "x86_64") == "PTRACE_SINGLEBLOCK"
    assert ptrace_request_name(33, "aarch64") == "PTRACE_PEEKMTETAGS"
    assert ptrace_request_name(33, "riscv64") is None
    assert ptrace_action(33, "riscv64") == "ptrace"
    assert ptrace_request_name(-1) is None


def test_ptrace_names_follow_the_encoders_host() -> None:
    arm = _pt_doc(Ptrace(7, 34, 0, 0), _enc("aarch64"))
    assert arm["event"]["action"] == "ptrace-pokemtetags"
    x86 = _pt_doc(Ptrace(7, 34, 0, 0), _enc("x86_64"))
    assert x86["event"]["action"] == "ptrace"
    assert "request_name" not in x86["quark"]["ptrace"]
    assert x86["quark"]["ptrace"]["request"] == 34


# -- MODULE_LOAD --------------------------------------------------------------


def _mod_doc(m: ModuleLoad) -> dict[str, Any]:
    return _doc(
        Event(events=EV.MODULE_LOAD, time=9, process=PROC, module_load=m)
    )


def test_module_load() -> None:
    doc = _mod_doc(ModuleLoad("dummy", "1.0", "6A1F0C2B0D5E", 0x3000))
    assert doc["event"] == {
        "kind": "event", "category": ["driver"], "type": ["start"],
        "action": "module-loaded",
    }  # fmt: skip
    assert doc["quark"] == {
        "module": {"name": "dummy", "version": "1.0",
                   "src_version": "6A1F0C2B0D5E", "taints": 0x3000},
    }  # fmt: skip
    assert doc["process"]["name"] == "vim"  # the loader
    assert "file" not in doc


def test_module_without_versions_leaves_them_out() -> None:
    doc = _mod_doc(ModuleLoad("dummy", None, None, 0))
    assert doc["quark"]["module"] == {"name": "dummy", "taints": 0}


def test_module_name_not_utf8_makes_a_valid_document() -> None:
    doc = _mod_doc(ModuleLoad("bad\udcff", None, None, 0))
    assert doc["quark"]["module"]["name"] == "bad\ufffd"


# -- actions without a payload, and BYPASS ----------------------------------


def test_actions_of_the_kinds() -> None:
    assert event_action(EV.TTY) == "text_output"
    assert event_action(EV.PTRACE) == "ptrace"
    assert event_action(EV.MODULE_LOAD) == "module-loaded"


def test_a_bypass_event_is_refused_clearly() -> None:
    enc = _enc()
    for ev in (
        Event(events=EV.BYPASS, time=1, process=None, bypass=b"\x01\x02"),
        Event(events=EV.BYPASS, time=1, process=None, bypass=b""),
        Event(events=EV.BYPASS, time=1, process=None),
    ):
        with pytest.raises(ConfigError, match=r"BYPASS.*no ECS") as err:
            enc.encode(ev)
        assert err.value.errno == 22  # EINVAL, as upstream
    # and the encoder goes on
    assert _doc(Event(events=EV.EXEC, time=2, process=PROC), enc)
