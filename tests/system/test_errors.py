"""Missing privileges and bad arguments give a QuarkError that says what,
never a traceback from deep inside."""

from __future__ import annotations

import subprocess
import sys

import pytest

import quark

from .conftest import require

AS_NOBODY = """
import os, sys
import quark, quark.backends.ebpf  # before: nobody may not read the stdlib
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    quark.Queue(backend="ebpf")
except quark.PrivilegeError as e:
    print("PrivilegeError:", e); sys.exit(0)
except quark.QuarkError as e:
    print(type(e).__name__, e); sys.exit(1)
sys.exit(2)
"""


@pytest.mark.root
@pytest.mark.ebpf
def test_not_root_is_a_privilege_error() -> None:
    require("ebpf")
    r = subprocess.run([sys.executable, "-c", AS_NOBODY],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "root" in r.stdout
    assert "Traceback" not in r.stderr


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(quark.ConfigError, match="unknown backend"):
        quark.Queue(backend="nope")
    with pytest.raises(quark.ConfigError, match="hold_time"):
        quark.Queue(backend="replay", path="/dev/null", hold_time=5)
    with pytest.raises(quark.ConfigError, match="max_length"):
        quark.Queue(backend="replay", path="/dev/null", max_length=0)
    with pytest.raises(quark.ConfigError, match="needs path"):
        quark.Queue(backend="replay")
