"""Dotted paths to byte offsets (``task_struct.cred``,
``fs_struct.pwd.dentry``) and enum values (``pid_type.PIDTYPE_SID``).

A path starts at a struct, union or enum by name and goes through members;
anonymous members are looked into transparently; typedefs and qualifiers
are followed. Bitfields and offsets that are not whole bytes are refused.
Fields renamed across kernels are tried under their other names
(:data:`ALTERNATIVES`, as upstream does).
"""

from __future__ import annotations

from quark.btf.parser import ENUM, ENUM64, STRUCT, UNION, Btf, Member, Type
from quark.errors import BTFError

__all__ = ["ALTERNATIVES", "enum_value", "offset", "resolve_path", "which"]

# upstream.md §5.5: the same field under the names it had across kernels
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "task_struct.start_boottime": ("task_struct.real_start_time",),
    "uts_namespace.proc_inum": ("uts_namespace.ns.inum",),
    "ipc_namespace.proc_inum": ("ipc_namespace.ns.inum",),
    "mnt_namespace.proc_inum": ("mnt_namespace.ns.inum",),
    "net_namespace.proc_inum": ("net.ns.inum", "net.proc_inum"),
    "kernfs_node.parent": ("kernfs_node.__parent",),
}


def _root(btf: Btf, name: str, kinds: tuple[int, ...]) -> Type:
    best = None
    for tid in btf.ids_named(name):
        t = btf.resolve(tid)
        if t.kind in kinds:
            if t.kind in (STRUCT, UNION) and t.vlen == 0 and best is None:
                best = t  # an empty declaration: keep looking
                continue
            return t
    if best is not None:
        return best
    raise BTFError(f"{btf.origin}: no type named {name!r}")


def _find(btf: Btf, t: Type, name: str, depth: int = 0) -> tuple[int, Member]:
    """(bit offset, member) of ``name`` in ``t``, anonymous members
    searched depth-first."""
    if depth > 16:
        raise BTFError(f"{btf.origin}: anonymous members nested too deep")
    for m in btf.members(t):
        if m.name == name:
            return m.bit_offset, m
        if not m.name:
            inner = btf.resolve(m.type_id)
            if inner.kind in (STRUCT, UNION):
                try:
                    off, found = _find(btf, inner, name, depth + 1)
                except KeyError:
                    continue
                return m.bit_offset + off, found
    raise KeyError(name)


def resolve_path(btf: Btf, path: str) -> int:
    """The byte offset of a dotted path (no alternatives tried)."""
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise BTFError(f"{path!r}: a path is TYPE.MEMBER[.MEMBER...]")
    t = _root(btf, parts[0], (STRUCT, UNION))
    bits = 0
    for i, name in enumerate(parts[1:], start=1):
        if t.kind not in (STRUCT, UNION):
            raise BTFError(
                f"{path}: {'.'.join(parts[:i])} is a {t.kind_name}, not a "
                "struct or union"
            )
        try:
            off, m = _find(btf, t, name)
        except KeyError:
            raise BTFError(
                f"{path}: {t.kind_name.lower()} {t.name or '(anonymous)'} "
                f"has no member {name!r}"
            ) from None
        if m.bitfield_size:
            raise BTFError(
                f"{path}: {name} is a bitfield "
                f"({m.bitfield_size} bits): no byte offset"
            )
        bits += off
        t = btf.resolve(m.type_id)
    if bits % 8:
        raise BTFError(f"{path}: bit offset {bits} is not a whole byte")
    return bits // 8


def enum_value(btf: Btf, path: str) -> int:
    enum, _, member = path.partition(".")
    if not member or "." in member:
        raise BTFError(f"{path!r}: an enum value is ENUM.NAME")
    t = _root(btf, enum, (ENUM, ENUM64))
    values = btf.enum_values(t)
    if member not in values:
        raise BTFError(f"{path}: enum {enum} has no {member}")
    return values[member]


def which(btf: Btf, path: str) -> str:
    """The path that resolves: ``path`` itself or one of its
    alternatives (for tools that check the result independently)."""
    for cand in (path, *ALTERNATIVES.get(path, ())):
        try:
            resolve_path(btf, cand)
        except BTFError:
            continue
        return cand
    raise BTFError(f"{btf.origin}: {path} does not resolve")


def offset(btf: Btf, path: str) -> int:
    """A path's byte offset, or an enum's value; alternatives are tried
    when the path itself does not resolve."""
    first = path.split(".", 1)[0]
    try:
        is_enum = any(
            btf.resolve(t).kind in (ENUM, ENUM64) for t in btf.ids_named(first)
        )
    except BTFError:
        is_enum = False
    if is_enum:
        return enum_value(btf, path)
    try:
        return resolve_path(btf, path)
    except BTFError as first_error:
        for alt in ALTERNATIVES.get(path, ()):
            try:
                return resolve_path(btf, alt)
            except BTFError:
                continue
        raise first_error from None
