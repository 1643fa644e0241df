"""Where BTF comes from: raw BTF, a vmlinux ELF's ``.BTF`` section, or a
compressed vmlinuz (xz, zstd or gzip payload holding the ELF)."""

from __future__ import annotations

import io
import lzma
import zlib

import zstandard

from quark.errors import BTFError

__all__ = ["btf_bytes", "elf_btf", "vmlinuz_elf"]

BTF_MAGICS = (b"\x9f\xeb", b"\xeb\x9f")
ELF_MAGIC = b"\x7fELF"
XZ = b"\xfd7zXZ\x00"
ZSTD = b"\x28\xb5\x2f\xfd"
GZIP = b"\x1f\x8b\x08"
MAX_ELF = 1 << 30  # a decompressed kernel is far smaller
_DECOMPRESS_ERRORS = (
    lzma.LZMAError,
    zlib.error,
    zstandard.ZstdError,
    EOFError,
    ValueError,
)


def elf_btf(data: bytes, origin: str) -> bytes:
    """The ``.BTF`` section of an ELF file."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        sec = elf.get_section_by_name(".BTF")
        if sec is None:
            raise BTFError(
                f"{origin}: ELF without a .BTF section "
                "(kernel built without CONFIG_DEBUG_INFO_BTF?)"
            )
        btf: bytes = sec.data()
    except (ELFError, ValueError, OSError) as e:
        raise BTFError(f"{origin}: corrupt ELF: {e}") from None
    return btf


def _decompress_xz(data: bytes) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return d.decompress(data, MAX_ELF)  # stops at the end of the stream


def _decompress_zstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _decompress_gzip(data: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return d.decompress(data, MAX_ELF)


def vmlinuz_elf(data: bytes, origin: str) -> bytes:
    """The vmlinux ELF inside a compressed kernel image.

    Every place a compression magic occurs is tried, in file order, until
    one decompresses to an ELF: the magic can occur by chance earlier in the
    image's setup code.
    """
    candidates = []
    for magic, fn in (
        (XZ, _decompress_xz),
        (ZSTD, _decompress_zstd),
        (GZIP, _decompress_gzip),
    ):
        pos = data.find(magic)
        while pos >= 0:
            candidates.append((pos, fn))
            pos = data.find(magic, pos + 1)
    candidates.sort(key=lambda c: c[0])
    errors = []
    for pos, fn in candidates:
        try:
            out = fn(data[pos:])
        except _DECOMPRESS_ERRORS as e:
            errors.append(f"{fn.__name__[12:]}@{pos}: {e}")
            continue
        if out.startswith(ELF_MAGIC):
            return out
        errors.append(f"{fn.__name__[12:]}@{pos}: not an ELF")
    if not candidates:
        raise BTFError(
            f"{origin}: no xz, zstd or gzip payload found: "
            "not a compressed kernel image"
        )
    raise BTFError(
        f"{origin}: no payload decompressed to an ELF ("
        + "; ".join(errors[:4])
        + ")"
    )


def btf_bytes(data: bytes, origin: str) -> bytes:
    """Raw BTF from raw BTF, an ELF, or a vmlinuz."""
    if data[:2] in BTF_MAGICS:
        return data
    if data.startswith(ELF_MAGIC):
        return elf_btf(data, origin)
    return elf_btf(vmlinuz_elf(data, origin), origin)
