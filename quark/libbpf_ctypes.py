"""The binding of the system's libbpf (``libbpf.so.1``) through ctypes.

The only module that talks to libbpf. Rules (style.md §4.3):

- the library is loaded on first use, never at import; when it is absent the
  error says so (:class:`quark.NotSupportedError`);
- one table, :data:`SYMBOLS`, declares every function used, with its
  argument and result types; libbpf's names are kept so a grep works across
  C and Python;
- libbpf 1.x reports failure as a negative errno (int functions) or NULL
  with ``errno`` set (pointer functions): both become
  :class:`quark.LibbpfError` in :func:`_check_int` and :func:`_check_ptr`;
- libbpf's log goes to the ``quark.libbpf`` logger; the callback is kept
  referenced and never lets an exception escape. Every line is counted and
  the last :data:`LOG_WINDOW` are kept, so that a load failure can say what
  the verifier said: take :func:`log_mark` before the call, read
  :func:`recent_log` after it;
- every handle has one owner object with an idempotent ``close()``.

x86_64 and aarch64 pass ``va_list`` differently; the log callback formats
with ``vsnprintf`` taking it as a pointer, which is right on x86_64 (the
architecture the BPF object is built for). A message longer than the first
buffer (a verifier log) is formatted again from a copy of the ``va_list``
on x86_64, where ``va_copy`` is a copy of its 24 bytes; elsewhere it is cut.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno as _errno
import logging
import mmap
import os
import platform
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from quark.errors import LibbpfError, NotSupportedError
from quark.sys.libc import last_errno, libc, oserror

__all__ = [
    "LOG_WINDOW",
    "BpfLink",
    "BpfObject",
    "fentry_refusal",
    "lib",
    "log_mark",
    "num_possible_cpus",
    "recent_log",
]

log = logging.getLogger("quark.libbpf")


class BpfObjectP(ctypes.c_void_p):
    """``struct bpf_object *``"""


class BpfProgramP(ctypes.c_void_p):
    """``struct bpf_program *``"""


class BpfMapP(ctypes.c_void_p):
    """``struct bpf_map *``"""


class BpfLinkP(ctypes.c_void_p):
    """``struct bpf_link *``"""


class DataCell:
    """An unsigned integer of ``width`` bytes at the start of an mmapable
    BPF array map, shared with the programs (:meth:`BpfObject.data_cell`).
    Its mapping outlives the object's close until :meth:`close` (or
    collection)."""

    def __init__(self, map_fd: int, width: int = 4) -> None:
        self._width = width
        try:
            self._mm = mmap.mmap(map_fd, mmap.PAGESIZE, mmap.MAP_SHARED)
        except OSError as e:
            raise LibbpfError(
                f"mapping a data map: {e.strerror}", errno=e.errno or 0
            ) from None

    @property
    def value(self) -> int:
        return int.from_bytes(self._mm[: self._width], sys.byteorder)

    @value.setter
    def value(self, v: int) -> None:
        # one store of the whole cell (see quark/sys/ringbuf.py on torn
        # writes): a slice assignment of an aligned 4 or 8 bytes
        self._mm[: self._width] = v.to_bytes(self._width, sys.byteorder)

    def close(self) -> None:
        self._mm.close()


c_int, c_uint, c_char_p, c_void_p, c_bool, c_size_t = (
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_bool,
    ctypes.c_size_t,
)

# name: (restype, argtypes, kind) with kind "int" (negative errno), "ptr"
# (NULL + errno) or "raw" (no check).
SYMBOLS: dict[str, tuple[Any, list[Any], str]] = {
    "libbpf_set_print": (c_void_p, [c_void_p], "raw"),
    "libbpf_num_possible_cpus": (c_int, [], "int"),
    "bpf_object__open_file": (BpfObjectP, [c_char_p, c_void_p], "ptr"),
    "bpf_object__btf": (c_void_p, [BpfObjectP], "raw"),
    "btf__raw_data": (
        c_void_p,
        [c_void_p, ctypes.POINTER(ctypes.c_uint32)],
        "ptr",
    ),
    "bpf_object__load": (c_int, [BpfObjectP], "int"),
    "bpf_object__close": (None, [BpfObjectP], "raw"),
    "bpf_object__next_program": (
        BpfProgramP,
        [BpfObjectP, BpfProgramP],
        "raw",
    ),
    "bpf_object__next_map": (BpfMapP, [BpfObjectP, BpfMapP], "raw"),
    "bpf_object__find_map_by_name": (BpfMapP, [BpfObjectP, c_char_p], "ptr"),
    "bpf_program__name": (c_char_p, [BpfProgramP], "raw"),
    "bpf_program__section_name": (c_char_p, [BpfProgramP], "raw"),
    "bpf_program__set_autoload": (c_int, [BpfProgramP, c_bool], "int"),
    "bpf_program__autoload": (c_bool, [BpfProgramP], "raw"),
    "bpf_program__attach": (BpfLinkP, [BpfProgramP], "ptr"),
    "bpf_program__attach_cgroup": (BpfLinkP, [BpfProgramP, c_int], "ptr"),
    "bpf_program__fd": (c_int, [BpfProgramP], "int"),
    "bpf_link__destroy": (c_int, [BpfLinkP], "raw"),
    "bpf_map__name": (c_char_p, [BpfMapP], "raw"),
    "bpf_map__fd": (c_int, [BpfMapP], "int"),
    "bpf_map__set_max_entries": (c_int, [BpfMapP, ctypes.c_uint32], "int"),
    "bpf_map__value_size": (ctypes.c_uint32, [BpfMapP], "raw"),
    "bpf_map__max_entries": (ctypes.c_uint32, [BpfMapP], "raw"),
    "bpf_map__initial_value": (
        c_void_p,
        [BpfMapP, ctypes.POINTER(c_size_t)],
        "ptr",
    ),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p], "int"),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p], "raw"),
    "bpf_map_lookup_batch": (
        c_int,
        [
            c_int,
            c_void_p,
            c_void_p,
            c_void_p,
            c_void_p,
            ctypes.POINTER(ctypes.c_uint32),
            c_void_p,
        ],
        "raw",
    ),
    "libbpf_find_vmlinux_btf_id": (c_int, [c_char_p, c_int], "int"),
    "btf__load_vmlinux_btf": (c_void_p, [], "ptr"),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint], "int"),
    "btf__type_by_id": (c_void_p, [c_void_p, c_uint], "ptr"),
    "btf__free": (None, [c_void_p], "raw"),
    "bpf_prog_load": (
        c_int,
        [c_int, c_char_p, c_char_p, c_void_p, c_size_t, c_void_p],
        "int",
    ),
    "bpf_raw_tracepoint_open": (c_int, [c_char_p, c_int], "int"),
    "bpf_obj_get_info_by_fd": (
        c_int,
        [c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32)],
        "int",
    ),
}

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_DEBUG = 2  # enum libbpf_print_level: LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG
_LEVELS = {0: logging.WARNING, 1: logging.INFO, _DEBUG: logging.DEBUG}

# The latest log lines kept: enough for the tail of a verifier log (its
# reason), bounded however much a debug load logs.
LOG_WINDOW = 1000
_FIRST_BUF = 4096  # most messages fit; a longer one is formatted again
_VA_LIST_SIZE = 24 if platform.machine() == "x86_64" else 0

_lock = threading.Lock()
_lib: Any = None
_vsnprintf: Any = None
_print_cb: Any = None  # kept referenced for as long as libbpf may call it
_log_lock = threading.Lock()
_recent: collections.deque[str] = collections.deque(maxlen=LOG_WINDOW)
_logged = 0  # lines ever logged: marks keep counting past the window


def _error(code: int, call: str) -> OSError:
    def make(code: int, message: str) -> LibbpfError:
        return LibbpfError(message, errno=code, call=call)

    return oserror(code, call, make)


def _check_int(result: int, func: Any, args: tuple[Any, ...]) -> int:
    if result < 0:
        raise _error(-result, func.__name__)
    return result


def _check_ptr(result: Any, func: Any, args: tuple[Any, ...]) -> Any:
    if not result:
        raise _error(last_errno(_errno.EINVAL), func.__name__)
    return result


def _format(fmt: bytes, args: int | None) -> bytes:
    saved = None
    if _VA_LIST_SIZE and args:
        saved = ctypes.create_string_buffer(_VA_LIST_SIZE)
        ctypes.memmove(saved, args, _VA_LIST_SIZE)
    buf = ctypes.create_string_buffer(_FIRST_BUF)
    n = _vsnprintf(buf, _FIRST_BUF, fmt, c_void_p(args))
    if n >= _FIRST_BUF and saved is not None:
        buf = ctypes.create_string_buffer(n + 1)
        _vsnprintf(buf, n + 1, fmt, saved)
    return buf.value


def _remember(lines: list[str]) -> None:
    global _logged
    with _log_lock:
        _recent.extend(lines)
        _logged += len(lines)


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    # Called from C: must never raise.
    try:
        if fmt is None:
            return 0
        if level == _DEBUG and not log.isEnabledFor(logging.DEBUG):
            # thousands of relocation lines per load, formatted for no
            # one (a failure's reason is in the warnings)
            return 0
        text = _format(fmt, args).decode(errors="replace").rstrip("\n")
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            _remember(lines)
            log.log(_LEVELS.get(level, logging.DEBUG), "%s", text)
    except BaseException:  # nothing may cross into C
        return 0
    return 0


def _load() -> Any:
    names = []
    found = ctypes.util.find_library("bpf")
    if found:
        names.append(found)
    names += ["libbpf.so.1", "libbpf.so.0"]
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            errors.append(f"{name}: {e}")
    raise NotSupportedError(
        "libbpf not found (install Debian's libbpf1): " + "; ".join(errors),
        errno=_errno.ENOENT,
    )


def lib() -> Any:
    """The loaded library, with every symbol of :data:`SYMBOLS` declared."""
    global _lib, _vsnprintf, _print_cb
    with _lock:
        if _lib is not None:
            return _lib
        handle = _load()
        for name, (restype, argtypes, kind) in SYMBOLS.items():
            try:
                fn = getattr(handle, name)
            except AttributeError:
                raise NotSupportedError(
                    f"libbpf lacks {name} (libbpf 1.0 or newer needed)"
                ) from None
            fn.restype = restype
            fn.argtypes = argtypes
            if kind == "int":
                fn.errcheck = _check_int
            elif kind == "ptr":
                fn.errcheck = _check_ptr
        _vsnprintf = libc().vsnprintf
        _print_cb = _PRINT_FN(_on_print)
        handle.libbpf_set_print(ctypes.cast(_print_cb, c_void_p))
        _lib = handle
        return _lib


def num_possible_cpus() -> int:
    n: int = lib().libbpf_num_possible_cpus()
    return n


def log_mark() -> int:
    """How many lines libbpf has logged so far: a mark for
    :func:`recent_log`."""
    with _log_lock:
        return _logged


def recent_log(since: int = 0) -> list[str]:
    """The lines libbpf logged after mark ``since`` (a load failure's
    verifier output). Of more than :data:`LOG_WINDOW` lines, only the
    latest are left: the tail, where the verifier gives its reason."""
    with _log_lock:
        count = _logged - since
        if count <= 0:
            return []
        lines = list(_recent)
    return lines[-count:]


class BpfLink:
    """An attached program; ``close()`` detaches it."""

    def __init__(self, handle: BpfLinkP, name: str) -> None:
        self._handle: BpfLinkP | None = handle
        self.name = name
        self._finalizer = weakref.finalize(self, _destroy_link, handle)

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            self._finalizer()


def _destroy_link(handle: BpfLinkP) -> None:
    lib().bpf_link__destroy(handle)


def _close_object(handle: BpfObjectP) -> None:
    lib().bpf_object__close(handle)


class BpfObject:
    """A BPF object file: open, configure, load, attach, close.

    ``close()`` destroys every link made through :meth:`attach`, then the
    object (its programs and maps, hence their fds).
    """

    def __init__(self, path: str) -> None:
        lb = lib()
        self.path = path
        self._handle: BpfObjectP | None = lb.bpf_object__open_file(
            os.fsencode(path), None
        )
        self._links: list[BpfLink] = []
        self._by_name: dict[str, BpfProgramP] | None = None
        self._finalizer = weakref.finalize(self, _close_object, self._handle)

    @property
    def handle(self) -> BpfObjectP:
        if self._handle is None:
            raise LibbpfError("BPF object is closed", errno=_errno.EBADF)
        return self._handle

    def btf_data(self) -> bytes:
        """The object's own BTF, raw (its ``.BTF`` section, as libbpf read
        it): where bpf/proto.h's types are."""
        lb = lib()
        btf = lb.bpf_object__btf(self.handle)
        if not btf:
            raise LibbpfError(
                f"{self.path} carries no BTF", errno=_errno.ENODATA
            )
        size = ctypes.c_uint32()
        data = lb.btf__raw_data(btf, ctypes.byref(size))
        return ctypes.string_at(data, size.value)

    # -- programs -----------------------------------------------------------
    def programs(self) -> Iterator[tuple[str, BpfProgramP]]:
        lb = lib()
        prog = BpfProgramP(None)
        while True:
            prog = lb.bpf_object__next_program(self.handle, prog)
            if not prog:
                return
            yield lb.bpf_program__name(prog).decode(), prog

    def program(self, name: str) -> BpfProgramP:
        self.handle  # noqa: B018 - raises once the object is closed
        if self._by_name is None:
            # an opened object's programs are fixed: one walk, not one
            # per lookup (hundreds of lookups per open)
            self._by_name = dict(self.programs())
        prog = self._by_name.get(name)
        if prog is not None:
            return prog
        raise LibbpfError(
            f"no program {name} in {self.path}", errno=_errno.ENOENT
        )

    def set_autoload(self, name: str, on: bool) -> None:
        lib().bpf_program__set_autoload(self.program(name), on)

    def section(self, name: str) -> str:
        sec: bytes = lib().bpf_program__section_name(self.program(name))
        return sec.decode()

    # -- maps ---------------------------------------------------------------
    def maps(self) -> Iterator[tuple[str, BpfMapP]]:
        lb = lib()
        m = BpfMapP(None)
        while True:
            m = lb.bpf_object__next_map(self.handle, m)
            if not m:
                return
            yield lb.bpf_map__name(m).decode(), m

    def map(self, name: str) -> BpfMapP:
        for mname, m in self.maps():
            if mname == name or mname.endswith(name):
                return m
        raise LibbpfError(f"no map {name} in {self.path}", errno=_errno.ENOENT)

    def set_max_entries(self, name: str, n: int) -> None:
        lib().bpf_map__set_max_entries(self.map(name), n)

    def write_initial_value(self, name: str, data: bytes) -> None:
        """Overwrite the start of a data map (``.rodata``) before load."""
        size = c_size_t(0)
        ptr = lib().bpf_map__initial_value(self.map(name), ctypes.byref(size))
        if len(data) > size.value:
            raise LibbpfError(
                f"{name}: {len(data)} bytes do not fit in {size.value}",
                errno=_errno.E2BIG,
            )
        ctypes.memmove(ptr, data, len(data))

    def data_cell(self, name: str, width: int = 4) -> DataCell:
        """The first ``width`` bytes (a u32 or u64) of a loaded data map
        (``.data.*``, which libbpf makes mmapable), mapped from the
        kernel's map: setting its ``value`` is seen by the programs at
        once, with no syscall."""
        return DataCell(self.map_fd(name), width)

    def map_batch(self, name: str) -> Batch:
        """A :class:`Batch` reader of the loaded hash map ``name`` (keyed
        by u32), sized from the map."""
        m = self.map(name)
        return Batch(
            self.map_fd(name),
            lib().bpf_map__value_size(m),
            lib().bpf_map__max_entries(m),
        )

    def map_fd(self, name: str) -> int:
        fd: int = lib().bpf_map__fd(self.map(name))
        return fd

    # -- load and attach ----------------------------------------------------
    def load(self) -> None:
        lib().bpf_object__load(self.handle)

    def attach(self, name: str) -> BpfLink:
        link = BpfLink(lib().bpf_program__attach(self.program(name)), name)
        self._links.append(link)
        return link

    def attach_cgroup(self, name: str, cgroup_fd: int) -> BpfLink:
        """Attach a cgroup program to the cgroup open at ``cgroup_fd`` (a
        BPF link: detached when closed, or when this process dies)."""
        link = BpfLink(
            lib().bpf_program__attach_cgroup(self.program(name), cgroup_fd),
            name,
        )
        self._links.append(link)
        return link

    def close(self) -> None:
        links, self._links = self._links, []
        for link in links:
            link.close()
        self._by_name = None
        if self._handle is not None:
            self._handle = None
            self._finalizer()


# struct bpf_prog_info (uapi, append-only): run_time_ns, run_cnt and
# recursion_misses (5.12+) at fixed offsets
PROG_INFO_SIZE = 256
_RUN_TIME_NS, _RUN_CNT, _RECURSION_MISSES = 192, 200, 208


def prog_run_stats(prog_fd: int) -> tuple[int, int, int]:
    """(run_time_ns, run_cnt, recursion_misses) of a loaded program.

    recursion_misses counts the runs the kernel skipped because the same
    program was already running on that CPU (preempted): events lost.
    Kernels older than 5.12 report 0 for it.
    """
    buf = (ctypes.c_uint8 * PROG_INFO_SIZE)()
    size = ctypes.c_uint32(PROG_INFO_SIZE)
    lib().bpf_obj_get_info_by_fd(prog_fd, buf, ctypes.byref(size))

    def u64(off: int) -> int:
        if off + 8 > size.value:
            return 0
        return int.from_bytes(bytes(buf[off : off + 8]), "little")

    return u64(_RUN_TIME_NS), u64(_RUN_CNT), u64(_RECURSION_MISSES)


_NR_MAP_IDS, _MAP_IDS = 52, 56  # struct bpf_prog_info
_MAP_ID = 4  # struct bpf_map_info: id


def prog_map_ids(prog_fd: int) -> list[int]:
    """The ids of the maps a loaded program uses."""
    buf = (ctypes.c_uint8 * PROG_INFO_SIZE)()
    size = ctypes.c_uint32(PROG_INFO_SIZE)
    lib().bpf_obj_get_info_by_fd(prog_fd, buf, ctypes.byref(size))
    n = int.from_bytes(bytes(buf[_NR_MAP_IDS : _NR_MAP_IDS + 4]), "little")
    if not n:
        return []
    ids = (ctypes.c_uint32 * n)()
    buf = (ctypes.c_uint8 * PROG_INFO_SIZE)()
    ctypes.c_uint32.from_buffer(buf, _NR_MAP_IDS).value = n
    ctypes.c_uint64.from_buffer(buf, _MAP_IDS).value = ctypes.addressof(ids)
    size = ctypes.c_uint32(PROG_INFO_SIZE)
    lib().bpf_obj_get_info_by_fd(prog_fd, buf, ctypes.byref(size))
    return list(ids)


def map_id(map_fd: int) -> int:
    """The kernel's id of a map."""
    buf = (ctypes.c_uint8 * 64)()
    size = ctypes.c_uint32(64)
    lib().bpf_obj_get_info_by_fd(map_fd, buf, ctypes.byref(size))
    return int.from_bytes(bytes(buf[_MAP_ID : _MAP_ID + 4]), "little")


def lookup_percpu_u64(map_fd: int, key: int, ncpus: int) -> list[int]:
    """The per-CPU u64 values of ``key`` in a PERCPU_ARRAY map."""
    k = ctypes.c_uint32(key)
    values = (ctypes.c_uint64 * ncpus)()
    lib().bpf_map_lookup_elem(map_fd, ctypes.byref(k), values)
    return list(values)


def delete_u32(map_fd: int, key: int) -> bool:
    """Delete ``key`` from a hash map: True when this call removed it,
    False when it was not there (another took it first)."""
    k = ctypes.c_uint32(key)
    r = lib().bpf_map_delete_elem(map_fd, ctypes.byref(k))
    if r == 0:
        return True
    if r == -_errno.ENOENT:
        return False
    raise _error(-r, "bpf_map_delete_elem")


class Batch:
    """Reads a hash map keyed by u32 in one syscall (BPF_MAP_LOOKUP_BATCH,
    Linux 5.6), into buffers made once."""

    def __init__(self, map_fd: int, value_size: int, max_entries: int):
        self._fd = map_fd
        self._size = value_size
        self._max = max_entries
        self._keys = (ctypes.c_uint32 * max_entries)()
        self._values = ctypes.create_string_buffer(value_size * max_entries)
        self._base = ctypes.addressof(self._values)
        self._token = ctypes.c_uint64()
        self._count = ctypes.c_uint32()

    def read(self) -> list[tuple[int, bytes]]:
        """(key, value) of every entry (an entry added or removed
        meanwhile may or may not be seen)."""
        self._count.value = self._max
        r = lib().bpf_map_lookup_batch(
            self._fd, None, ctypes.byref(self._token), self._keys,
            self._values, ctypes.byref(self._count), None,
        )  # fmt: skip
        # ENOENT: the walk reached the end, which it does at once here
        # (room for max_entries); what it found is in count all the same
        if r != 0 and r != -_errno.ENOENT:
            raise _error(-r, "bpf_map_lookup_batch")
        keys, base, size = self._keys, self._base, self._size
        return [
            (keys[i], ctypes.string_at(base + i * size, size))
            for i in range(self._count.value)
        ]


# uapi enum values (stable)
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_FENTRY = 24


class _ProgLoadOpts(ctypes.Structure):
    """The head of libbpf's ``struct bpf_prog_load_opts`` (its ``sz``
    says how much of it is given; libbpf zeroes the rest)."""

    _fields_ = [
        ("sz", c_size_t),
        ("attempts", c_int),
        ("expected_attach_type", c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
    ]


_BTF_KIND_FUNC = 12


def _func_params(func: str) -> int | None:
    """How many arguments kernel function ``func`` takes, by the running
    kernel's BTF (None when that cannot be read)."""
    lb = lib()
    try:
        btf = lb.btf__load_vmlinux_btf()
    except LibbpfError:
        return None
    try:
        fid = lb.btf__find_by_name_kind(btf, func.encode(), _BTF_KIND_FUNC)
        # struct btf_type: name_off, info, then size or type (u32 each)
        _, _, proto = _btf_type(lb, btf, fid)
        _, info, _ = _btf_type(lb, btf, proto)
        return info & 0xFFFF  # vlen: a FUNC_PROTO's parameters
    except LibbpfError:
        return None
    finally:
        lb.btf__free(btf)


def _btf_type(lb: Any, btf: int, tid: int) -> tuple[int, int, int]:
    t = lb.btf__type_by_id(btf, tid)
    name_off, info, size_or_type = (ctypes.c_uint32 * 3).from_address(t)
    return name_off, info, size_or_type


def fentry_refusal(func: str, params: int | None = None) -> str | None:
    """Why an ``fentry`` program on kernel function ``func`` cannot load
    here, or None when it can: the function is not in the kernel's BTF,
    takes another number of arguments than ``params`` (when given: a
    program written for another prototype), or the kernel refuses tracing
    programs (no BPF trampolines: EPERM, or ENOTSUPP). Loads a
    two-instruction program, at once closed, instead of failing a whole
    object's load."""
    lb = lib()
    try:
        btf_id = lb.libbpf_find_vmlinux_btf_id(
            func.encode(), _BPF_TRACE_FENTRY
        )
    except LibbpfError as e:
        return f"{func} is not in this kernel's BTF ({e})"
    insns = (ctypes.c_uint64 * 2)(0xB7, 0x95)  # r0 = 0; exit
    opts = _ProgLoadOpts(
        sz=ctypes.sizeof(_ProgLoadOpts),
        expected_attach_type=_BPF_TRACE_FENTRY,
        attach_btf_id=btf_id,
    )
    if params is not None:
        have = _func_params(func)
        if have is not None and have != params:
            return (
                f"this kernel's {func} takes {have} arguments, not the "
                f"{params} the program reads"
            )
    try:
        fd = lb.bpf_prog_load(
            _BPF_PROG_TYPE_TRACING, b"quark_probe", b"Dual BSD/GPL",
            insns, 2, ctypes.byref(opts),
        )  # fmt: skip
    except LibbpfError as e:
        return f"this kernel refuses fentry programs ({e})"
    try:
        return _fentry_attach_refusal(lb, fd)
    finally:
        os.close(fd)


_ENOTSUPP = 524  # the kernel's internal "not supported", seen by callers
_attach_refused: list[str | None] = []  # once per process, when known


def _fentry_attach_refusal(lb: Any, fd: int) -> str | None:
    """Why this kernel loads fentry programs but cannot attach them (an
    architecture without ftrace direct calls: arm64's 6.1 answers
    ENOTSUPP), or None. Asked once per process, by attaching the loaded
    probe for an instant: the answer is the architecture's, and each
    attach costs the kernel a trampoline."""
    if _attach_refused:
        return _attach_refused[0]
    why = None
    try:
        os.close(lb.bpf_raw_tracepoint_open(None, fd))
    except LibbpfError as e:
        if e.errno != _ENOTSUPP:
            return f"attaching fentry failed ({e})"  # this function's own
        why = (
            "this kernel loads fentry programs but cannot attach them "
            "(ENOTSUPP: no BPF trampolines through ftrace on this "
            f"architecture, {platform.machine()})"
        )
    _attach_refused.append(why)
    return why
