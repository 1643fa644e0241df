"""The architecture's boundaries, checked on the source (style.md §4.2)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "quark"
FFI_MODULES = {"ctypes", "mmap", "fcntl"}
FFI_ALLOWED = ("sys/", "libbpf_ctypes.py")
# The engine is pure: ordering, aggregation and the cache read no clock and
# touch no file descriptor.
ENGINE_FORBIDDEN = FFI_MODULES | {
    "os", "time", "select", "socket", "subprocess", "signal", "threading",
    "quark.backends", "quark.queue", "quark.procfs", "quark.sys",
}  # fmt: skip


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.ImportFrom) and node.module and not node.level
        ):
            names.add(node.module)
    return names


def _sources() -> list[pathlib.Path]:
    return sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize(
    "path", _sources(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_only_the_ffi_boundary_imports_ctypes(path: pathlib.Path) -> None:
    rel = str(path.relative_to(ROOT))
    if rel.startswith(FFI_ALLOWED):
        return
    found = {
        name for name in _imports(path) if name.split(".")[0] in FFI_MODULES
    }
    assert not found, f"{rel} imports {sorted(found)}: only quark/sys/* may"


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "engine").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_engine_is_pure(path: pathlib.Path) -> None:
    bad = {
        name
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in ENGINE_FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}: the engine is pure"
