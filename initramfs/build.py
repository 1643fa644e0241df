"""Build the guest's initramfs in pure Python.

The base image (cached under the quark cache by content hash) holds
busybox-static, ``/init``, ``guest.py``, the interpreter path, and the
kernel's own virtio/9p/overlay modules (decompressed, in dependency order).
Each run appends a second small cpio archive with the command; the kernel
unpacks concatenated archives in order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import pathlib
import shutil
from collections.abc import Iterable

from initramfs.cpio import Entry, write_newc

__all__ = ["BASE_MODULES", "base_image", "command_archive", "module_closure"]

HERE = pathlib.Path(__file__).resolve().parent
BASE_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (path, dependency paths) from a modules.dep file."""
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        out[_modname(path)] = (path.strip(), deps.split())
    return out


def module_closure(
    deps: dict[str, tuple[str, list[str]]], wanted: Iterable[str]
) -> list[str]:
    """Paths of ``wanted`` and everything they need, dependencies first.
    Names not in modules.dep are built in (or absent) and skipped."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done or name not in deps:
            return
        if name in stack:
            raise ValueError(f"module dependency loop: {(*stack, name)}")
        path, needs = deps[name]
        for dep in needs:
            visit(_modname(dep), (*stack, name))
        done.add(name)
        order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


def _decompress(path: pathlib.Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _busybox(path: pathlib.Path | None = None) -> bytes:
    if path is not None:
        return path.read_bytes()
    for p in BUSYBOX_PATHS:
        if os.path.exists(p):
            return pathlib.Path(p).read_bytes()
    raise FileNotFoundError("busybox not found (apt install busybox-static)")


def _cache() -> pathlib.Path:
    from kernel_images.debian import cache_dir

    d = cache_dir() / "initramfs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def base_image(
    modules_dir: pathlib.Path | None,
    python: str,
    *,
    busybox: pathlib.Path | None = None,
) -> pathlib.Path:
    """The cached base archive for a kernel's modules directory (None: a
    kernel with the drivers built in, no modules to load); ``busybox``: the
    guest architecture's, when it is not the host's."""
    paths: list[str] = []
    if modules_dir is not None:
        deps = parse_modules_dep((modules_dir / "modules.dep").read_text())
        paths = module_closure(deps, BASE_MODULES)
    h = hashlib.sha256()
    for name in ("init", "guest.py", "build.py", "cpio.py"):
        h.update((HERE / name).read_bytes())
    h.update(str(modules_dir).encode())
    h.update(python.encode())
    h.update(str(busybox).encode())
    h.update("\n".join(paths).encode())
    out = _cache() / f"base-{h.hexdigest()[:16]}.cpio"
    if out.exists():
        return out
    entries = [Entry.dir(d) for d in (
        "bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules",
    )]  # fmt: skip
    entries.append(Entry.file("bin/busybox", _busybox(busybox), 0o755))
    entries.append(Entry.file("init", (HERE / "init").read_bytes(), 0o755))
    entries.append(Entry.file("guest.py", (HERE / "guest.py").read_bytes()))
    entries.append(Entry.file("python", python.encode()))
    load = []
    for rel in paths:
        name = _modname(rel) + ".ko"
        assert modules_dir is not None
        entries.append(
            Entry.file(f"lib/modules/{name}", _decompress(modules_dir / rel))
        )
        load.append(name)
    entries.append(
        Entry.file("modules.load", "".join(f"{n}\n" for n in load).encode())
    )
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(write_newc(entries))
    os.replace(tmp, out)
    return out


def command_archive(argv: list[str], cwd: str, env: dict[str, str]) -> bytes:
    """The per-run archive: the command as JSON (no shell anywhere)."""
    cmd = {"argv": argv, "cwd": cwd, "env": env}
    return write_newc([Entry.file("cmd.json", json.dumps(cmd).encode())])


def assemble(base: pathlib.Path, extra: bytes, out: pathlib.Path) -> None:
    with open(out, "wb") as f, open(base, "rb") as b:
        shutil.copyfileobj(b, f)
        f.write(extra)
