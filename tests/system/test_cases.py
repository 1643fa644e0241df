"""Every integration case of quark.selftest, per backend, on this kernel.

The same cases run inside the qemu guests through ``quark-test``.
"""

from __future__ import annotations

import pytest

import quark
from quark.selftest import load_cases

from .conftest import require

CASES = load_cases()
PARAMS = [
    pytest.param(
        name,
        backend,
        id=f"{name}[{backend}]",
        marks=[getattr(pytest.mark, backend), pytest.mark.root]
        + ([pytest.mark.slow] if name == "t_fork_storm" else []),
    )
    for name, case in CASES.items()
    for backend in case.backends
]


@pytest.mark.parametrize(("name", "backend"), PARAMS)
def test_case(name: str, backend: str) -> None:
    require(backend)
    try:
        CASES[name].func(backend)
    except quark.NotSupportedError as e:
        # The backend should work here (require said so): unsupported is a
        # failure, never a skip.
        pytest.fail(f"{backend} reported unsupported on this host: {e}")
