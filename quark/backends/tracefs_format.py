"""tracefs ``format`` files: a trace event's record layout, and records
unpacked by it. Pure code: no syscalls."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from quark.errors import DecodeError

__all__ = ["EventFormat", "Field", "Rec", "parse_format"]

Rec = dict[str, Any]  # a decoded record: field name -> int or bytes

_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d+);)?"
)


@dataclass
class Field:
    name: str
    offset: int
    size: int
    signed: bool
    kind: str  # "int", "str" (__data_loc), "bytes" (array)


@dataclass
class EventFormat:
    """A trace event's record layout, from its ``format`` file."""

    name: str
    id: int
    fields: dict[str, Field] = field(default_factory=dict)
    _struct: struct.Struct | None = None

    def compile(self, names: tuple[str, ...]) -> None:
        """Prepare :meth:`unpack` for ``names``, in that order."""
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise DecodeError(
                f"the format of {self.name} lacks field(s) {missing}"
            )
        order = sorted((self.fields[n] for n in names), key=lambda f: f.offset)
        fmt = "<"
        pos = 0
        for f in order:
            if f.offset < pos:
                raise DecodeError(f"{self.name}: fields overlap at {f.name}")
            fmt += f"{f.offset - pos}x" if f.offset > pos else ""
            if f.kind == "int":
                code = {1: "b", 2: "h", 4: "i", 8: "q"}.get(f.size)
                if code is None:
                    raise DecodeError(
                        f"{self.name}.{f.name}: integer of {f.size} bytes"
                    )
                fmt += code if f.signed else code.upper()
            elif f.kind == "str":
                fmt += "I"
            else:
                fmt += f"{f.size}s"
            pos = f.offset + f.size
        self._struct = struct.Struct(fmt)
        self._names = tuple(f.name for f in order)
        self._strings = tuple(
            i for i, f in enumerate(order) if f.kind == "str"
        )

    def unpack(self, raw: bytes) -> Rec:
        """The compiled fields of one record; strings resolved (without
        their NUL; a fault and an empty string both read as b"")."""
        st = self._struct
        assert st is not None
        n = len(raw)
        if n < st.size:
            raise DecodeError(
                f"{self.name} record of {n} bytes, shorter than "
                f"its {st.size}-byte layout"
            )
        values = list(st.unpack_from(raw))
        for i in self._strings:
            loc = values[i]
            off = loc & 0xFFFF
            end = off + (loc >> 16)
            if end > n:
                raise DecodeError(
                    f"{self.name}.{self._names[i]}: string at "
                    f"{off}+{loc >> 16} beyond the {n}-byte record"
                )
            if end == off:
                values[i] = b""
            elif raw[end - 1] == 0:
                values[i] = raw[off : end - 1]
            else:
                values[i] = raw[off:end]
        return dict(zip(self._names, values, strict=True))


def parse_format(text: str) -> EventFormat:
    """A tracefs ``format`` file."""
    m = re.search(r"^name:\s*(\S+)", text, re.M)
    i = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not m or not i:
        raise DecodeError("a trace format without name or ID")
    ev = EventFormat(m.group(1), int(i.group(1)))
    for fm in _FIELD.finditer(text):
        decl = fm.group("decl").strip()
        off, size = int(fm.group("off")), int(fm.group("size"))
        signed = fm.group("signed") == "1"
        if decl.startswith("__data_loc"):
            name = decl.split()[-1].split("[")[0]
            ev.fields[name] = Field(name, off, size, signed, "str")
            continue
        name = decl.split()[-1]
        if "[" in name:
            ev.fields[name.split("[")[0]] = Field(
                name.split("[")[0], off, size, signed, "bytes"
            )
        else:
            ev.fields[name] = Field(name, off, size, signed, "int")
    return ev
