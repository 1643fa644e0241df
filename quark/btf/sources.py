"""Where BTF comes from: raw BTF, a vmlinux ELF's ``.BTF`` section, a
compressed vmlinuz (xz, zstd, gzip or lz4 payload holding the ELF; a
bzImage's header says where it is), or an arm64
``Image`` (gzip-compressed as Debian ships it), which is no ELF: its BTF is
found by its header."""

from __future__ import annotations

import io
import lzma
import struct
import zlib

import zstandard

from quark.errors import BTFError

__all__ = ["btf_bytes", "elf_btf", "image_btf", "vmlinuz_elf"]

BTF_MAGICS = (b"\x9f\xeb", b"\xeb\x9f")
ELF_MAGIC = b"\x7fELF"
XZ = b"\xfd7zXZ\x00"
ZSTD = b"\x28\xb5\x2f\xfd"
GZIP = b"\x1f\x8b\x08"
LZ4_LEGACY = b"\x02\x21\x4c\x18"  # lz4 -l: what the kernel's build writes
MAX_ELF = 1 << 30  # a decompressed kernel is far smaller
ARM64_MAGIC = b"ARM\x64"  # at 0x38 of an arm64 Image
ARM64_MAGIC_AT = 0x38
# a little-endian BTF header: magic, version 1, flags 0, hdr_len 24
BTF_HEADER_LE = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"
BTF_HEADER_LEN = 24
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


def _lz4_block(src: bytes, out: bytearray) -> None:
    """Append one LZ4 block's output to ``out`` (the block format: a token
    of literal and match lengths, literals, a 16-bit offset back)."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        if lit:
            out += src[i : i + lit]
            i += lit
        if i >= n:  # the last sequence has literals only
            break
        off = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if off == 0 or off > len(out):
            raise ValueError(f"lz4 offset {off} outside the output")
        start = len(out) - off
        if off >= mlen:
            out += out[start : start + mlen]
        else:  # overlapping: the last off bytes repeat
            chunk = out[start:]
            reps, rest = divmod(mlen, off)
            out += chunk * reps + chunk[:rest]


def _decompress_lz4(data: bytes) -> bytes:
    """The legacy lz4 format: the magic, then blocks of (32-bit size,
    LZ4 block) until the data ends or a size does not fit (the size the
    kernel's build appends)."""
    if not data.startswith(LZ4_LEGACY):
        raise ValueError("not lz4 legacy")
    out = bytearray()
    i = len(LZ4_LEGACY)
    while i + 4 <= len(data) and len(out) < MAX_ELF:
        (size,) = struct.unpack_from("<I", data, i)
        if size == 0 or i + 4 + size > len(data):
            break
        if data[i : i + 4] == LZ4_LEGACY:  # another frame follows
            i += 4
            continue
        try:
            _lz4_block(data[i + 4 : i + 4 + size], out)
        except IndexError:
            raise ValueError("truncated lz4 block") from None
        i += 4 + size
    if not out:
        raise ValueError("empty lz4 payload")
    return bytes(out)


def _x86_payload(data: bytes) -> bytes | None:
    """The compressed kernel of a bzImage, by its header (boot protocol
    2.08+: payload_offset at 0x248 and payload_length at 0x24C, relative
    to the protected-mode code after the setup sectors)."""
    if data[0x202:0x206] != b"HdrS" or len(data) < 0x250:
        return None
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        return None
    pm = ((data[0x1F1] or 4) + 1) * 512
    off, length = struct.unpack_from("<II", data, 0x248)
    payload = data[pm + off : pm + off + length]
    return payload if len(payload) == length and length else None


def vmlinuz_elf(data: bytes, origin: str) -> bytes:
    """The vmlinux ELF inside a compressed kernel image.

    Every place a compression magic occurs is tried, in file order, until
    one decompresses to an ELF: the magic can occur by chance earlier in the
    image's setup code.
    """
    formats = (
        (XZ, _decompress_xz),
        (ZSTD, _decompress_zstd),
        (GZIP, _decompress_gzip),
        (LZ4_LEGACY, _decompress_lz4),
    )
    payload = _x86_payload(data)
    if payload is not None:  # the header says where: no guessing
        for magic, fn in formats:
            if payload.startswith(magic):
                try:
                    out = fn(payload)
                except _DECOMPRESS_ERRORS:
                    break  # then search the image as below
                if out.startswith(ELF_MAGIC):
                    return out
    candidates = []
    for magic, fn in formats:
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
            f"{origin}: no xz, zstd, gzip or lz4 payload found: "
            "not a compressed kernel image"
        )
    raise BTFError(
        f"{origin}: no payload decompressed to an ELF ("
        + "; ".join(errors[:4])
        + ")"
    )


def _is_arm64_image(data: bytes) -> bool:
    return data[ARM64_MAGIC_AT : ARM64_MAGIC_AT + 4] == ARM64_MAGIC


def image_btf(data: bytes, origin: str) -> bytes:
    """The kernel's BTF inside a raw (non-ELF) image: the largest blob
    whose header is consistent (types from offset 0, strings right after
    them, inside the image, a string table that starts and ends with NUL).
    The kernel links .BTF whole, so its header is found where it starts."""
    best = b""
    pos = data.find(BTF_HEADER_LE)
    while pos >= 0:
        if pos + BTF_HEADER_LEN <= len(data):
            type_off, type_len, str_off, str_len = struct.unpack_from(
                "<4I", data, pos + 8
            )
            start = pos + BTF_HEADER_LEN
            end = start + str_off + str_len
            if (
                type_off == 0
                and str_off == type_len
                and str_len > 0
                and end <= len(data)
                and data[start + str_off] == 0
                and data[end - 1] == 0
                and end - pos > len(best)
            ):
                best = data[pos:end]
        pos = data.find(BTF_HEADER_LE, pos + 1)
    if not best:
        raise BTFError(
            f"{origin}: no BTF in the kernel image "
            "(built without CONFIG_DEBUG_INFO_BTF?)"
        )
    return best


def btf_bytes(data: bytes, origin: str) -> bytes:
    """Raw BTF from raw BTF, an ELF, a vmlinuz or an arm64 Image."""
    if data[:2] in BTF_MAGICS:
        return data
    if data.startswith(ELF_MAGIC):
        return elf_btf(data, origin)
    if _is_arm64_image(data):
        return image_btf(data, origin)
    if data.startswith(GZIP):
        try:
            inner = _decompress_gzip(data)
        except _DECOMPRESS_ERRORS as e:
            raise BTFError(f"{origin}: corrupt gzip image: {e}") from None
        if _is_arm64_image(inner):
            return image_btf(inner, origin)
    return elf_btf(vmlinuz_elf(data, origin), origin)
