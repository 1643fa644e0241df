"""What QQ.BYPASS cannot go with (upstream's rules, and a bypass queue's
own), refused with a ConfigError before anything is opened; and what the
backends that never serve it say in capabilities()."""

from __future__ import annotations

import pathlib

import pytest

import quark
from quark import QQ
from quark.backends import get_backend_class

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "raw"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"backend": "kprobe"}, "ebpf backend's only, not kprobe's"),
        ({"flags": QQ.BYPASS | QQ.EBPF | QQ.KPROBE}, "not kprobe's"),
        ({"backend": "replay", "path": str(DATA / "basic.jsonl")},
         "not replay's"),
        ({"backend": "ebpf", "flags": QQ.BYPASS | QQ.MIN_AGG}, "MIN_AGG"),
        ({"backend": "ebpf", "flags": QQ.BYPASS | QQ.ENTRY_LEADER},
         "ENTRY_LEADER"),
        ({"backend": "ebpf", "flags": QQ.BYPASS | QQ.THREAD_EVENTS},
         "THREAD_EVENTS"),
        ({"backend": "ebpf", "record": "/nonexistent/x"}, "nothing to record"),
        ({"backend": "ebpf", "ruleset": object()}, "ruleset"),
    ],
)  # fmt: skip
def test_bypass_refuses_what_cannot_go_with_it(
    kw: dict[str, object], match: str
) -> None:
    kw.setdefault("flags", QQ.BYPASS)
    with pytest.raises(quark.ConfigError, match=match):
        quark.Queue(**kw)  # type: ignore[arg-type]


def test_only_ebpf_serves_bypass() -> None:
    assert get_backend_class("ebpf").SERVES & QQ.BYPASS
    for name in ("kprobe", "replay"):
        cls = get_backend_class(name)
        assert not cls.SERVES & QQ.BYPASS
        assert "ebpf backend's only" in cls.why_not(QQ.BYPASS)


def test_a_replay_says_why_it_has_no_bypass() -> None:
    with quark.Queue(backend="replay", path=DATA / "basic.jsonl") as qq:
        caps = qq.capabilities()
    assert caps[QQ.BYPASS] is not None
    assert "recorded stream" in caps[QQ.BYPASS]
    assert caps[QQ.FILE] == "not asked for (QQ.FILE not in flags)"


def test_a_replay_has_no_probe_kinds() -> None:
    with pytest.raises(quark.ConfigError, match="probe_kinds"):
        quark.Queue(
            backend="replay", path=DATA / "basic.jsonl", probe_kinds=True
        )
