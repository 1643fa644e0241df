"""The roles of the BPF object's programs, read from their names.

``bpf/quark.bpf.c`` stamps every program from one table of hooks, and its
name says what it is: ``ROLE__HOOK__FLAVOUR``.

- ROLE ``core``: the backend cannot open without it; ``backup``: a core
  program's twin, attached after it, that emits what a run the kernel
  skipped would have lost; ``opt``: skipped, and reported, when the kernel
  refuses it; a kind's role (``sock``: ``QQ.SOCK_CONN``, ``dns``:
  ``QQ.DNS``): loaded only when that kind is asked for, and the queue
  refuses to open for the kind when one of its programs cannot serve,
  unless its role ends in ``opt`` (``fileopt``, ``fsopt``: a hook only
  newer kernels, or only some architectures, have (fchmodat2; open, creat,
  unlink, rename, symlink, chmod, chown and lchown, which arm64 lacks),
  skipped and reported like ``opt``; ``vfsopt``: FILE's VFS hooks, which
  see writes no syscall hook does, where the kernel has fentry).
- FLAVOUR ``btf`` (``tp_btf/``), ``raw`` (``raw_tp/``): one of the two is
  loaded; ``tp`` (``tracepoint/``), ``cg`` (``cgroup/``,
  ``cgroup_skb/``: attached to the cgroup v2 root) and ``fe`` (``fentry/``:
  a kernel function, where the kernel has BPF trampolines) go with either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quark.errors import ProtocolError
from quark.events import QQ

__all__ = ["FLAVOURS", "KIND_ROLES", "Program", "parse", "wanted"]

FLAVOURS = ("btf", "raw")
#: the roles of the programs that serve event kinds; a role ending in
#: "opt" is one of the kind's optional hooks (skipped, and reported, where
#: the kernel lacks it), "fs" serves FILE and SHM both
KIND_ROLES = {
    "sock": QQ.SOCK_CONN,
    "dns": QQ.DNS,
    "file": QQ.FILE,
    "fileopt": QQ.FILE,
    "shm": QQ.SHM,
    "fs": QQ.FILE | QQ.SHM,
    "fsopt": QQ.FILE | QQ.SHM,
    "vfsopt": QQ.FILE,
    "tty": QQ.TTY,
    "ttyopt": QQ.TTY,
    "ptrace": QQ.PTRACE,
    "module": QQ.MODULE_LOAD,
    "getpid": QQ.GETPID,
}
_ROLES = ("core", "backup", "opt", *KIND_ROLES)
_SECTION_OF = {
    "btf": ("tp_btf/",),
    "raw": ("raw_tp/",),
    "tp": ("tracepoint/",),
    "cg": ("cgroup/", "cgroup_skb/"),
    "fe": ("fentry/",),
}


@dataclass(frozen=True)
class Program:
    name: str
    section: str
    role: str
    hook: str
    flavour: str

    @property
    def optional(self) -> bool:
        return self.role.endswith("opt")

    @property
    def kind(self) -> QQ | None:
        """The event kind this program serves, if it serves one."""
        return KIND_ROLES.get(self.role)

    @property
    def cgroup(self) -> bool:
        """Attached to the cgroup v2 root, not to a tracepoint."""
        return self.flavour == "cg"

    @property
    def what(self) -> str:
        """The hook as a user knows it: the tracepoint's name."""
        return self.section.rsplit("/", 1)[-1]


def parse(name: str, section: str) -> Program:
    """A program's role from its name, checked against its section."""
    parts = name.split("__")
    if (
        len(parts) != 3
        or parts[0] not in _ROLES
        or parts[2] not in _SECTION_OF
        or not section.startswith(_SECTION_OF[parts[2]])
    ):
        raise ProtocolError(
            f"BPF program {name!r} (section {section!r}) is not named "
            "ROLE__HOOK__FLAVOUR as bpf/quark.bpf.c's hook macros name them"
        )
    role, hook, flavour = parts
    return Program(name, section, role, hook, flavour)


_NO_KINDS = QQ(0)


def wanted(
    programs: Iterable[Program], flavour: str, kinds: QQ = _NO_KINDS
) -> list[Program]:
    """The programs to load with ``flavour`` for the event ``kinds`` asked
    for, in attach order: every primary before the backups (a backup must
    follow its primary)."""
    chosen = [
        p
        for p in programs
        if p.flavour in (flavour, "tp", "cg", "fe")
        and (p.kind is None or p.kind & kinds)
    ]
    return sorted(chosen, key=lambda p: p.role == "backup")
