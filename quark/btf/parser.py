"""A parser of raw BTF (Documentation/bpf/btf.rst), pure over bytes.

Loading a kernel's BTF (over 130,000 types) walks the type section once to
record where each type starts; names and members are decoded only for the
types a query touches. Every structural problem raises
:class:`quark.BTFError` naming it: wrong magic, truncated header or section,
offsets out of range, unknown kinds, type ids out of range, reference loops.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from quark.errors import BTFError

__all__ = ["KIND", "Btf", "Member", "Type"]

MAGIC = 0xEB9F

KIND = {
    0: "UNKN", 1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION",
    6: "ENUM", 7: "FWD", 8: "TYPEDEF", 9: "VOLATILE", 10: "CONST",
    11: "RESTRICT", 12: "FUNC", 13: "FUNC_PROTO", 14: "VAR", 15: "DATASEC",
    16: "FLOAT", 17: "DECL_TAG", 18: "TYPE_TAG", 19: "ENUM64",
}  # fmt: skip
INT, PTR, ARRAY, STRUCT, UNION, ENUM = 1, 2, 3, 4, 5, 6
TYPEDEF, VOLATILE, CONST, RESTRICT = 8, 9, 10, 11
FUNC_PROTO, VAR, DATASEC, DECL_TAG, TYPE_TAG, ENUM64 = 13, 14, 15, 17, 18, 19
MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})

# bytes after the 12-byte header: fixed, or per vlen entry
_FIXED = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_VLEN = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12,
             ENUM64: 12}  # fmt: skip


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0: not a bitfield


@dataclass(frozen=True)
class Type:
    id: int
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kind_flag: bool

    @property
    def kind_name(self) -> str:
        return KIND.get(self.kind, str(self.kind))


class Btf:
    """Raw BTF: ``Btf(data)`` parses the header and indexes the types."""

    def __init__(self, data: bytes | memoryview, *, origin: str = "BTF"):
        self.origin = origin
        buf = bytes(data)
        if len(buf) < 24:
            raise BTFError(f"{origin}: {len(buf)} bytes: truncated header")
        magic = struct.unpack_from("<H", buf, 0)[0]
        if magic == MAGIC:
            self._e = "<"
        elif struct.unpack_from(">H", buf, 0)[0] == MAGIC:
            self._e = ">"
        else:
            raise BTFError(
                f"{origin}: wrong magic 0x{magic:04x} "
                f"(not BTF, expected 0x{MAGIC:04x})"
            )
        e = self._e
        version, _flags, hdr_len = struct.unpack_from(e + "BBI", buf, 2)
        if version != 1:
            raise BTFError(f"{origin}: unsupported BTF version {version}")
        if hdr_len < 24 or hdr_len > len(buf):
            raise BTFError(f"{origin}: bad header length {hdr_len}")
        type_off, type_len, str_off, str_len = struct.unpack_from(
            e + "IIII", buf, 8
        )
        body = len(buf) - hdr_len
        for what, off, ln in (
            ("type", type_off, type_len),
            ("string", str_off, str_len),
        ):
            if off + ln > body:
                raise BTFError(
                    f"{origin}: {what} section [{off}, {off + ln}) runs past "
                    f"the end of the data ({body} bytes)"
                )
        self._types = buf[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strs = buf[hdr_len + str_off : hdr_len + str_off + str_len]
        if self._strs and self._strs[0] != 0:
            raise BTFError(
                f"{origin}: string section does not start with an empty string"
            )
        self._offsets = self._index()
        self._by_name: dict[str, list[int]] | None = None

    # -- indexing -----------------------------------------------------------
    def _index(self) -> list[int]:
        """Start offset of every type (index = type id; 0 is void)."""
        types = self._types
        n = len(types)
        unpack = struct.Struct(self._e + "III").unpack_from
        fixed, per_vlen = _FIXED, _PER_VLEN
        offsets = [0]
        off = 0
        append = offsets.append
        while off < n:
            if off + 12 > n:
                raise BTFError(
                    f"{self.origin}: truncated type at byte "
                    f"{off} of the type section"
                )
            _name, info, _size = unpack(types, off)
            kind = (info >> 24) & 0x1F
            if kind == 0 or kind > 19:
                raise BTFError(
                    f"{self.origin}: unknown BTF kind {kind} "
                    f"(type {len(offsets)})"
                )
            append(off)
            off += (
                12
                + fixed.get(kind, 0)
                + per_vlen.get(kind, 0) * (info & 0xFFFF)
            )
        if off != n:
            raise BTFError(f"{self.origin}: type section ends inside a type")
        return offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def string(self, off: int) -> str:
        if off == 0:
            return ""
        if off >= len(self._strs):
            raise BTFError(f"{self.origin}: string offset {off} out of range")
        end = self._strs.find(b"\0", off)
        if end < 0:
            raise BTFError(f"{self.origin}: unterminated string at {off}")
        return self._strs[off:end].decode(errors="replace")

    def type(self, type_id: int) -> Type:
        if not 0 < type_id < len(self._offsets):
            raise BTFError(
                f"{self.origin}: type id {type_id} out of range "
                f"(1..{len(self._offsets) - 1})"
            )
        name, info, size = struct.unpack_from(
            self._e + "III", self._types, self._offsets[type_id]
        )
        return Type(type_id, (info >> 24) & 0x1F, self.string(name), size,
                    info & 0xFFFF, bool(info >> 31))  # fmt: skip

    def ids_named(self, name: str) -> list[int]:
        """Ids of the types called ``name`` (built on first use)."""
        if self._by_name is None:
            self._by_name = self._name_index()
        return self._by_name.get(name, [])

    def _name_index(self) -> dict[str, list[int]]:
        # Only the kinds a dotted path can start from are indexed.
        out: dict[str, list[int]] = {}
        types, strs = self._types, self._strs
        unpack = struct.Struct(self._e + "II").unpack_from
        for tid in range(1, len(self._offsets)):
            name_off, info = unpack(types, self._offsets[tid])
            if not name_off:
                continue
            kind = (info >> 24) & 0x1F
            if kind in (STRUCT, UNION, ENUM, ENUM64, TYPEDEF):
                end = strs.find(b"\0", name_off)
                out.setdefault(
                    strs[name_off:end].decode(errors="replace"), []
                ).append(tid)
        return out

    # -- members ------------------------------------------------------------
    def members(self, t: Type) -> list[Member]:
        if t.kind not in (STRUCT, UNION):
            raise BTFError(
                f"{self.origin}: {t.kind_name} {t.name!r} has no members"
            )
        base = self._offsets[t.id] + 12
        unpack = struct.Struct(self._e + "III").unpack_from
        out = []
        for i in range(t.vlen):
            name, tid, off = unpack(self._types, base + 12 * i)
            if t.kind_flag:
                bits, size = off & 0xFFFFFF, off >> 24
            else:
                bits, size = off, 0
            out.append(Member(self.string(name), tid, bits, size))
        return out

    def enum_values(self, t: Type) -> dict[str, int]:
        base = self._offsets[t.id] + 12
        out = {}
        if t.kind == ENUM:
            fmt = self._e + ("Ii" if t.kind_flag else "II")
            for i in range(t.vlen):
                name, val = struct.unpack_from(fmt, self._types, base + 8 * i)
                out[self.string(name)] = val
        elif t.kind == ENUM64:
            for i in range(t.vlen):
                name, lo, hi = struct.unpack_from(
                    self._e + "III", self._types, base + 12 * i
                )
                val = (hi << 32) | lo
                if t.kind_flag and val >= 1 << 63:
                    val -= 1 << 64
                out[self.string(name)] = val
        else:
            raise BTFError(
                f"{self.origin}: {t.kind_name} {t.name!r} is not an enum"
            )
        return out

    def int_signed(self, t: Type) -> bool:
        """An INT's signedness (BTF_INT_SIGNED in its encoding)."""
        if t.kind != INT:
            raise BTFError(
                f"{self.origin}: {t.kind_name} {t.name!r} is not an int"
            )
        (data,) = struct.unpack_from(
            self._e + "I", self._types, self._offsets[t.id] + 12
        )
        return bool((data >> 24) & 1)

    def array(self, t: Type) -> tuple[int, int]:
        """An ARRAY's element type id and number of elements."""
        if t.kind != ARRAY:
            raise BTFError(
                f"{self.origin}: {t.kind_name} {t.name!r} is not an array"
            )
        elem, _index, nelems = struct.unpack_from(
            self._e + "III", self._types, self._offsets[t.id] + 12
        )
        return elem, nelems

    def resolve(self, type_id: int) -> Type:
        """Follow typedefs and qualifiers to the underlying type."""
        seen = set()
        t = self.type(type_id)
        while t.kind in MODIFIERS:
            if t.id in seen:
                raise BTFError(f"{self.origin}: type reference loop at {t.id}")
            seen.add(t.id)
            if t.size_or_type == 0:
                return t
            t = self.type(t.size_or_type)
        return t
