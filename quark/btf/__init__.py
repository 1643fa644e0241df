"""BTF: parse it, resolve struct field offsets, and the shipped offset table.

- :func:`load_kernel_btf` reads the running kernel's BTF;
  :func:`load_btf_file` raw BTF, a vmlinux ELF or a vmlinuz image.
- ``Btf.offset("task_struct.cred")`` gives a byte offset;
  ``Btf.enum_value("pid_type.PIDTYPE_SID")`` an enum's value.
- :func:`kernel_offsets` gives every offset the KPROBE backend needs, from
  the running kernel's BTF or, when it has none (or when told to ignore it:
  ``ignore_btf=True`` or ``QUARK_IGNORE_BTF=1``), from the table generated
  from Debian's kernels (``kernel_images/gen_offset_table.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from quark.btf import resolve as _resolve
from quark.btf import table as _table
from quark.btf.parser import Btf as _RawBtf
from quark.btf.sources import btf_bytes
from quark.errors import BTFError, NotSupportedError

__all__ = [
    "TARGETS",
    "Btf",
    "OffsetTable",
    "kernel_offsets",
    "load_btf_file",
    "load_kernel_btf",
]

KERNEL_BTF = "/sys/kernel/btf/vmlinux"

# The offsets the KPROBE backend fetches: upstream's 51 (upstream.md §5.2)
# and the ones ours needs to do better (argv/env ranges, exe and cwd paths
# across mounts, cgroup path, exit signal).
TARGETS: tuple[str, ...] = (
    # credentials and capabilities
    "cred.cap_ambient", "cred.cap_bset", "cred.cap_effective",
    "cred.cap_inheritable", "cred.cap_permitted", "cred.egid", "cred.euid",
    "cred.gid", "cred.sgid", "cred.suid", "cred.uid",
    # paths: dentries, mounts, the cwd and root
    "dentry.d_name.name", "dentry.d_parent", "fs_struct.pwd.dentry",
    "fs_struct.pwd.mnt", "fs_struct.root.dentry",
    "mount.mnt", "mount.mnt_mountpoint",
    "vfsmount.mnt_root",
    # namespaces
    "ipc_namespace.proc_inum", "mnt_namespace.proc_inum",
    "net_namespace.proc_inum", "uts_namespace.proc_inum",
    "nsproxy.ipc_ns", "nsproxy.mnt_ns", "nsproxy.net_ns", "nsproxy.uts_ns",
    # memory: argv
    "mm_struct.start_stack",
    # pids, process groups, sessions
    "pid.numbers", "pid_type.PIDTYPE_PGID", "pid_type.PIDTYPE_SID",
    "signal_struct.pids", "signal_struct.tty", "upid.nr",
    "task_struct.comm", "task_struct.cred", "task_struct.exit_code",
    "task_struct.fs", "task_struct.group_leader", "task_struct.mm",
    "task_struct.nsproxy", "task_struct.pid", "task_struct.pids",
    "task_struct.real_parent", "task_struct.start_boottime",
    "task_struct.signal", "task_struct.tgid",
    # tty
    "tty_driver.major", "tty_driver.minor_start", "tty_struct.driver",
    "tty_struct.index",
    # ours: argv and environment ranges, mount walk, exe, cgroup, exits
    "mm_struct.arg_start", "mm_struct.arg_end", "mm_struct.env_start",
    "mm_struct.env_end", "mm_struct.exe_file", "file.f_path",
    "dentry.d_name.len", "mount.mnt_parent", "task_struct.cgroups",
    "css_set.dfl_cgrp", "cgroup.kn", "kernfs_node.name",
    "kernfs_node.parent", "signal_struct.group_exit_code",
    "signal_struct.flags", "signal_struct.live",
    # ours: kernel threads, mount ids (cwd and exe across mounts), the exe's
    # dentry and mount
    "task_struct.flags", "mount.mnt_id", "file.f_path.dentry",
    "file.f_path.mnt",
    # ours: the exe's inode (task->mm->exe_file->f_inode->i_ino)
    "file.f_inode", "inode.i_ino",
)  # fmt: skip
# Exactly one of these exists on a given kernel (upstream.md §5.2).
ONE_OF = (("signal_struct.pids", "task_struct.pids"),)


class Btf:
    """A kernel's BTF with path resolution."""

    def __init__(self, raw: _RawBtf) -> None:
        self.raw = raw
        self.origin = raw.origin

    def offset(self, dotted: str) -> int:
        """Byte offset of a dotted path (or an enum's value)."""
        return _resolve.offset(self.raw, dotted)

    def enum_value(self, dotted: str) -> int:
        return _resolve.enum_value(self.raw, dotted)

    def offsets(self, targets: Iterable[str] = TARGETS) -> dict[str, int]:
        """Every target that resolves (the missing one of ONE_OF pairs is
        left out; any other failure raises)."""
        out: dict[str, int] = {}
        for target in targets:
            try:
                out[target] = self.offset(target)
            except BTFError:
                if any(target in pair for pair in ONE_OF):
                    continue
                raise
        return out


def load_btf_bytes(data: bytes, origin: str = "BTF") -> Btf:
    return Btf(_RawBtf(btf_bytes(data, origin), origin=origin))


def load_btf_file(path: str | os.PathLike[str]) -> Btf:
    """Raw BTF, a vmlinux ELF or a vmlinuz image."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BTFError(
            f"cannot read {p}: {e.strerror}", errno=e.errno
        ) from None
    return load_btf_bytes(data, p)


def load_kernel_btf(path: str | None = None) -> Btf:
    """The running kernel's BTF (or the file ``path``)."""
    if path is not None:
        return load_btf_file(path)
    if not os.path.exists(KERNEL_BTF):
        raise NotSupportedError(
            f"no kernel BTF ({KERNEL_BTF}): CONFIG_DEBUG_INFO_BTF is off"
        )
    return load_btf_file(KERNEL_BTF)


class OffsetTable(Mapping[str, int]):
    """Offsets by dotted name; ``source`` says where they came from."""

    def __init__(self, offsets: dict[str, int], source: str) -> None:
        self._offsets = offsets
        self.source = source

    def __getitem__(self, key: str) -> int:
        try:
            return self._offsets[key]
        except KeyError:
            raise KeyError(
                f"{key} not in offsets from {self.source}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)

    def __repr__(self) -> str:
        return f"OffsetTable({len(self)} offsets from {self.source})"


def _ignore_btf(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get("QUARK_IGNORE_BTF", "") not in ("", "0")


# The running kernel's offsets, by what was asked: its BTF cannot change
# under a running process, and parsing it costs seconds in a slow guest
# (a queue opened per test case, or reopened by an agent after an error,
# pays it once). Keyed by the file too, for callers that point KERNEL_BTF
# elsewhere.
_btf_memo: dict[tuple[Any, ...], dict[str, int]] = {}


def _btf_offsets(wanted: tuple[str, ...]) -> OffsetTable:
    st = os.stat(KERNEL_BTF)
    key = (KERNEL_BTF, st.st_ino, st.st_size, st.st_mtime_ns, wanted)
    offsets = _btf_memo.get(key)
    if offsets is None:
        offsets = load_kernel_btf().offsets(wanted)
        _btf_memo[key] = offsets
    return OffsetTable(dict(offsets), f"btf:{KERNEL_BTF}")


def kernel_offsets(
    targets: Iterable[str] | None = None,
    *,
    ignore_btf: bool | None = None,
    release: str | None = None,
) -> OffsetTable:
    """The offsets of ``targets`` (default :data:`TARGETS`) for this kernel:
    from its BTF, else from the shipped table's best entry for ``release``
    (default ``uname -r``)."""
    wanted = tuple(targets) if targets is not None else TARGETS
    if not _ignore_btf(ignore_btf) and os.path.exists(KERNEL_BTF):
        return _btf_offsets(wanted)
    rel = release or os.uname().release
    # the running kernel's machine stands for an architecture its release
    # does not name; a release given by the caller stands alone
    name, offsets = _table.lookup(rel, None if release else os.uname().machine)
    missing = [
        t
        for t in wanted
        if t not in offsets and not any(t in pair for pair in ONE_OF)
    ]
    if missing:
        raise NotSupportedError(
            f"the offset table entry {name} (for {rel}) lacks "
            f"{', '.join(missing[:5])}"
        )
    return OffsetTable(
        {t: offsets[t] for t in wanted if t in offsets}, f"table:{name}"
    )
