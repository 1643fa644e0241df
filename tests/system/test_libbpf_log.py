"""A failed load says what the verifier said, however much libbpf logged
before: the log's mark keeps counting past its window (it stuck at 200
lines, and the reason came out empty), and a verifier log longer than the
window keeps its tail, where the reason is.

The program (tests/data/bpf/fails_late.bpf.c) is compiled here with clang;
the verifier logs its 2000 valid instructions, then rejects the last one.
The failure goes through the EBPF backend's own path: the lines since
:func:`log_mark`, taken before the load, become the QuarkError it raises
(``load_failure``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

from quark import libbpf_ctypes as bpf
from quark.backends.ebpf import load_failure
from quark.errors import LibbpfError, QuarkError

from .conftest import require

SOURCE = (
    pathlib.Path(__file__).parents[1] / "data" / "bpf" / "fails_late.bpf.c"
)
PROGRAM = "fails_late"
REASON = "R0 invalid mem access 'map_value_or_null'"
OLD_WINDOW = 200


def _compile(out_dir: pathlib.Path) -> str:
    clang = shutil.which("clang")
    assert clang is not None, "clang is part of the setup (scripts/setup.sh)"
    out = out_dir / "fails_late.bpf.o"
    cmd = [clang, "-target", "bpf", "-O2", "-g", "-c", str(SOURCE),
           "-o", str(out)]  # fmt: skip
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch and os.path.isdir(f"/usr/include/{multiarch}"):
        cmd.append(f"-I/usr/include/{multiarch}")  # <asm/types.h>
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


def _log_more_than(lines: int, path: str) -> None:
    """Have libbpf log more than ``lines`` lines (opening an object logs
    its sections and relocations at debug level, which is kept only while
    the logger takes debug records)."""
    for _ in range(100):
        if bpf.log_mark() > lines:
            return
        bpf.BpfObject(path).close()
    pytest.fail(f"libbpf logged only {bpf.log_mark()} lines")


@pytest.mark.root
@pytest.mark.ebpf
def test_a_failed_load_keeps_the_verifiers_reason(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    require("ebpf")
    path = _compile(tmp_path)
    with caplog.at_level(logging.DEBUG, logger=bpf.log.name):
        _log_more_than(OLD_WINDOW, path)
    obj = bpf.BpfObject(path)
    try:
        mark = bpf.log_mark()
        assert mark > OLD_WINDOW
        with pytest.raises(LibbpfError) as caught:
            obj.load()
    finally:
        obj.close()
    assert caught.value.call == "bpf_object__load"
    lines = bpf.recent_log(mark)
    # the verifier's log alone outgrew the window: its tail is what is left
    assert bpf.log_mark() - mark > bpf.LOG_WINDOW
    assert len(lines) == bpf.LOG_WINDOW
    assert any(REASON in line for line in lines)
    err = load_failure(caught.value, lines)
    assert isinstance(err, QuarkError)
    assert str(err).startswith(f"{PROGRAM}: ")
    assert REASON in str(err)
    assert bpf.recent_log(bpf.log_mark()) == []
