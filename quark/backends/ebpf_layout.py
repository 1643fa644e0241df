"""The EBPF wire format, read from the BPF object's own BTF.

``bpf/proto.h`` is the only declaration of the records and constants that
cross the ring buffer; the object carries them in its BTF (``struct
q_wire``). This module turns that BTF, through :mod:`quark.btf`, into
:mod:`struct` layouts and the enums' values, as bpf2go and aya-tool do at
build time, so that no Python file restates an offset, a size, an array
length or a constant. A layout that this library cannot use raises
:class:`quark.ProtocolError`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache

from quark.btf import Btf, load_btf_bytes, load_btf_file
from quark.btf.parser import ARRAY, ENUM, ENUM64, INT, STRUCT
from quark.errors import BTFError, ProtocolError

__all__ = ["Layout", "Record", "layout_of", "object_layout", "raw_layout"]

# struct codes by (size, signed)
_CODES = {
    (1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
    (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q",
}  # fmt: skip


@dataclass(frozen=True)
class Record:
    """A struct of proto.h as :mod:`struct` reads it.

    ``names`` has one entry per value ``fmt.unpack`` returns: a member's
    name, or ``name_0``, ``name_1``... for each element of an array of
    integers (a ``char`` array is one ``bytes`` value).
    """

    name: str
    fmt: struct.Struct
    names: tuple[str, ...]
    size: int
    offsets: dict[str, int]  # member -> byte offset (arrays by their name)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ProtocolError(
                f"struct {self.name} of the BPF object has no member "
                f"{name!r}; this library needs it"
            ) from None

    def span(self, name: str) -> slice:
        """The values of the array member ``name``, in order."""
        first = [i for i, n in enumerate(self.names) if n == f"{name}_0"]
        if not first:
            raise ProtocolError(
                f"struct {self.name} of the BPF object has no array {name!r}"
            )
        i = first[0]
        j = i
        while j < len(self.names) and self.names[j] == f"{name}_{j - i}":
            j += 1
        return slice(i, j)


@dataclass(frozen=True)
class Layout:
    """Every wire type of one BPF object."""

    origin: str
    version: int
    records: dict[str, Record]
    consts: dict[str, int]

    def record(self, name: str) -> Record:
        if name not in self.records:
            raise ProtocolError(f"{self.origin}: no struct {name} in its BTF")
        return self.records[name]

    def const(self, name: str) -> int:
        if name not in self.consts:
            raise ProtocolError(
                f"{self.origin}: no constant {name} in its BTF"
            )
        return self.consts[name]


def _record(btf: Btf, name: str, origin: str) -> Record:
    raw = btf.raw
    ids = [i for i in raw.ids_named(name) if raw.type(i).kind == STRUCT]
    if not ids:
        raise ProtocolError(f"{origin}: no struct {name} in its BTF")
    t = raw.type(ids[0])
    fmt = ["<"]
    names: list[str] = []
    offsets: dict[str, int] = {}
    pos = 0
    for m in raw.members(t):
        if m.bitfield_size or m.bit_offset % 8:
            raise ProtocolError(f"{origin}: {name}.{m.name} is a bitfield")
        off = m.bit_offset // 8
        if off < pos:
            raise ProtocolError(f"{origin}: {name}.{m.name} overlaps")
        if off > pos:
            fmt.append(f"{off - pos}x")
        offsets[m.name] = off
        mt = raw.resolve(m.type_id)
        count = 0
        if mt.kind == ARRAY:
            elem_id, count = raw.array(mt)
            mt = raw.resolve(elem_id)
        if mt.kind in (ENUM, ENUM64):
            signed = mt.kind_flag
        elif mt.kind == INT:
            signed = raw.int_signed(mt)
        else:
            raise ProtocolError(
                f"{origin}: {name}.{m.name} is a {mt.kind_name}, not a "
                "number or an array of numbers"
            )
        size = mt.size_or_type
        code = _CODES.get((size, signed))
        if code is None:
            raise ProtocolError(f"{origin}: {name}.{m.name}: {size}-byte int")
        if not count:
            fmt.append(code)
            names.append(m.name)
        elif size == 1 and mt.name == "char":
            fmt.append(f"{count}s")
            names.append(m.name)
        else:
            fmt.append(f"{count}{code}")
            names.extend(f"{m.name}_{i}" for i in range(count))
        pos = off + size * max(count, 1)
    if pos < t.size_or_type:
        fmt.append(f"{t.size_or_type - pos}x")
    st = struct.Struct("".join(fmt))
    if st.size != t.size_or_type:
        raise ProtocolError(
            f"{origin}: struct {name} is {t.size_or_type} bytes but its "
            f"members make {st.size}"
        )
    return Record(name, st, tuple(names), st.size, offsets)


def _wire(btf: Btf, origin: str) -> list[str]:
    """The structs that struct q_wire carries: every record of the wire."""
    raw = btf.raw
    ids = [i for i in raw.ids_named("q_wire") if raw.type(i).kind == STRUCT]
    if not ids:
        raise ProtocolError(f"{origin}: no struct q_wire in its BTF")
    out = []
    for m in raw.members(raw.type(ids[0])):
        t = raw.resolve(m.type_id)
        if t.kind == STRUCT:
            out.append(t.name)
    return out


def _consts(btf: Btf) -> dict[str, int]:
    """Every value of the proto.h enums (``enum q_*``)."""
    raw = btf.raw
    out: dict[str, int] = {}
    for tid in range(1, len(raw) + 1):
        t = raw.type(tid)
        if t.kind in (ENUM, ENUM64) and t.name.startswith("q_"):
            out.update(raw.enum_values(t))
    return out


def layout_of(btf: Btf, origin: str = "the BPF object") -> Layout:
    """The wire layout that ``btf`` (a BPF object's) declares."""
    consts = _consts(btf)
    if "Q_PROTO_VERSION" not in consts:
        raise ProtocolError(
            f"{origin} declares no Q_PROTO_VERSION in its BTF: not a quark "
            "BPF object, or one built before the protocol was versioned"
        )
    records = {name: _record(btf, name, origin) for name in _wire(btf, origin)}
    return Layout(origin, consts["Q_PROTO_VERSION"], records, consts)


@lru_cache(maxsize=4)
def raw_layout(data: bytes, origin: str) -> Layout:
    """The layout of an object's raw BTF ``data`` (as libbpf gives it)."""
    try:
        btf = load_btf_bytes(data, origin)
    except BTFError as e:
        raise ProtocolError(f"{origin}: its BTF is unusable: {e}") from None
    return layout_of(btf, origin)


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> Layout:
    try:
        btf = load_btf_file(path)
    except BTFError as e:
        raise ProtocolError(f"{path}: its BTF is unusable: {e}") from None
    return layout_of(btf, path)


def object_layout(path: str) -> Layout:
    """The layout of the object file ``path`` (parsed once per version of
    the file)."""
    st = os.stat(path)
    return _cached(path, st.st_mtime_ns, st.st_size)
