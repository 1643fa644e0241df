"""What a kernel image file says about itself, and where its modules are.

An x86 bzImage carries its version string in its setup header (the boot
protocol, Documentation/arch/x86/boot.rst): the magic ``HdrS`` at 0x202,
the protocol version at 0x206, and at 0x20E a 16-bit pointer to the
string, relative to 0x200. The string's first word is the release
(``uname -r``). An arm64 ``Image`` (magic ``ARM\\x64`` at 0x38), possibly
gzip-compressed as Debian ships it, carries no such string: its release
comes from the file's or its directory's name.
"""

from __future__ import annotations

import gzip
import pathlib
import re
import struct
from dataclasses import dataclass

__all__ = [
    "ImageError",
    "KernelImage",
    "config_value",
    "inspect",
    "modules_beside",
]

SETUP_SECTS_OFFSET = 0x1F1
SYSSIZE_OFFSET = 0x1F4
HDRS_OFFSET = 0x202
VERSION_PTR_OFFSET = 0x20E
SETUP_BASE = 0x200
ARM64_MAGIC_OFFSET = 0x38
ARM64_MAGIC = b"ARM\x64"
# a release as uname -r prints it: starts with a digit, no blanks
RELEASE = re.compile(r"^\d+\.\d+[\w.+~-]*$")


class ImageError(ValueError):
    """The file is not a kernel image krun can use; the message says why."""


@dataclass(frozen=True)
class KernelImage:
    path: pathlib.Path
    arch: str  # "x86_64" or "arm64"
    release: str
    # where the release came from: "header", "file name", "directory name"
    release_from: str


def _release_from_names(path: pathlib.Path) -> tuple[str, str] | None:
    name = path.name
    for prefix in ("vmlinuz-", "vmlinux-", "bzImage-", "Image-"):
        if name.startswith(prefix) and RELEASE.match(name[len(prefix) :]):
            return name[len(prefix) :], "file name"
    # .../lib/modules/RELEASE/vmlinuz (Debian's 7.x layout)
    if RELEASE.match(path.parent.name):
        return path.parent.name, "directory name"
    return None


def _x86_release(head: bytes, path: pathlib.Path) -> str:
    if len(head) < VERSION_PTR_OFFSET + 2:
        raise ImageError(f"{path}: truncated bzImage ({len(head)} bytes)")
    # setup_sects at 0x1F1 (0 means 4), syssize at 0x1F4 in 16-byte units:
    # the image is at least the setup code plus the protected-mode kernel
    setup = (head[SETUP_SECTS_OFFSET] or 4) + 1
    (syssize,) = struct.unpack_from("<I", head, SYSSIZE_OFFSET)
    want = setup * 512 + syssize * 16
    size = path.stat().st_size
    if size < want:
        raise ImageError(
            f"{path}: truncated bzImage ({size} bytes; its header says {want})"
        )
    (ptr,) = struct.unpack_from("<H", head, VERSION_PTR_OFFSET)
    start = SETUP_BASE + ptr
    if ptr == 0 or start >= len(head):
        raise ImageError(f"{path}: bzImage header has no version string")
    end = head.find(b"\0", start)
    text = head[start : end if end >= 0 else len(head)].decode(
        "ascii", errors="replace"
    )
    release = text.split(" ", 1)[0]
    if not RELEASE.match(release):
        raise ImageError(
            f"{path}: bzImage version string {text[:60]!r} names no release"
        )
    return release


def inspect(path: str | pathlib.Path) -> KernelImage:
    """The image's architecture and release; :class:`ImageError` when the
    file is not a kernel image (truncated, corrupt, another format)."""
    p = pathlib.Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(0x10000)
    except OSError as e:
        raise ImageError(f"{p}: {e.strerror}") from None
    if head[HDRS_OFFSET : HDRS_OFFSET + 4] == b"HdrS":
        return KernelImage(p, "x86_64", _x86_release(head, p), "header")
    arm = head
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as g:
                arm = g.read(0x40)
        except (OSError, EOFError) as e:
            raise ImageError(f"{p}: corrupt gzip image: {e}") from None
    if arm[ARM64_MAGIC_OFFSET : ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC:
        named = _release_from_names(p)
        if named is None:
            raise ImageError(
                f"{p}: an arm64 Image carries no release; name it "
                "vmlinuz-RELEASE or keep it in lib/modules/RELEASE/"
            )
        return KernelImage(p, "arm64", *named)
    raise ImageError(
        f"{p}: not a kernel image (no x86 'HdrS' setup header at 0x202, "
        "no arm64 Image magic at 0x38)"
    )


def modules_beside(image: KernelImage) -> pathlib.Path | None:
    """The modules directory of an unpacked package next to the image:
    ``ROOT/lib/modules/RELEASE`` or ``ROOT/usr/lib/modules/RELEASE`` for an
    image in ``ROOT/boot/``, or the image's own directory when it lives in
    ``.../modules/RELEASE/``. None when there is none."""
    p = image.path.resolve()
    candidates = []
    if p.parent.name == "boot":
        root = p.parent.parent
        candidates += [
            root / "lib" / "modules" / image.release,
            root / "usr" / "lib" / "modules" / image.release,
        ]
    if p.parent.name == image.release:
        candidates.append(p.parent)
    for c in candidates:
        if (c / "kernel").is_dir() or (c / "modules.dep").exists():
            return c
    return None


def config_value(image: KernelImage, option: str) -> str | None:
    """``CONFIG_<option>``'s value in the kernel's config beside the image
    (``boot/config-RELEASE`` or ``modules/RELEASE/config``): ``"y"``,
    ``"m"``, ``""`` for "is not set", None when there is no config."""
    p = image.path.resolve()
    for cfg in (
        p.parent / f"config-{image.release}",
        p.parent / "config",
    ):
        if cfg.is_file():
            text = cfg.read_text(errors="replace")
            m = re.search(rf"^CONFIG_{option}=(\S+)$", text, re.M)
            return m.group(1) if m else ""
    return None
