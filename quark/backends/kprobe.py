"""The KPROBE backend: tracefs kprobes and perf rings, no BPF.

For hosts where BPF is not allowed or not possible, and for kernels without
BTF (the struct offsets then come from the shipped table, see
:func:`quark.btf.kernel_offsets`). What it installs and fetches is described
in :mod:`quark.backends.kprobe_probes`; the records are decoded by
:mod:`quark.backends.kprobe_decode`.

Per online CPU, the ``sched_process_exec`` tracepoint is opened as the group
leader; it owns the CPU's ring and also asks for COMM records (a rename that
is not an exec's becomes SETPROCTITLE). Every kprobe event is opened on the
same CPU in that group, and its output redirected into the leader's ring
(``PERF_EVENT_IOC_SET_OUTPUT``). Records are read from the mmap'd rings;
``PERF_RECORD_LOST`` adds to :meth:`KprobeBackend.lost`, and a record that is
impossible or cannot be decoded is counted and skipped. The
``cgroup:cgroup_attach_task`` tracepoint joins each CPU's group too: it
gives the processes' cgroup paths (see :mod:`quark.backends.kprobe_decode`).

Waking the reader (:meth:`KprobeBackend.fileno`, an epoll descriptor). The
data rings wake it only at a watermark (1/8 of a ring), never per record.
What tells it that records came after it drained the rings is a *sentinel*
per CPU: a second group on the same events (exec, fork, exit, ID_CHANGE
and rename), with its own one-page ring and a wakeup at every record. A
CPU's sentinel is enabled only while that CPU's data ring is drained and
nothing read is held, and all are disabled by the first read that finds
records, so they cost at most one small record and one wakeup per CPU each
time the reader goes idle, and nothing per record while it is busy. A
timerfd in the same epoll brings the reader back once the hold time of
what it read has passed, when the engine has those events due, since no
kernel wakeup would come for them.

Options: ``ignore_btf=True`` (offsets from the table even when the kernel
has BTF), ``ring_pages=N`` (data pages per CPU, a power of 2),
``probe_kinds=True`` (see :mod:`quark.backends`; this backend serves no
event kind beyond process events, so it changes nothing).

ID_CHANGE comes from the process connector's hooks (see
:mod:`quark.backends.kprobe_probes`).
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import select
import time
from typing import TYPE_CHECKING

from quark.backends import Backend
from quark.backends.holdtimer import HoldTimer
from quark.backends.kprobe_decode import (
    CGROUP_FIELDS,
    CGROUP_TP,
    CgroupMoves,
    Decoder,
    path_in_fs,
)
from quark.backends.kprobe_probes import ProbeSpec, probe_specs
from quark.backends.tracefs import KprobeEvents, ensure_mounted, find_tracefs
from quark.backends.tracefs_format import EventFormat, parse_format
from quark.btf import OffsetTable, kernel_offsets
from quark.errors import (
    ConfigError,
    DecodeError,
    NotSupportedError,
    PrivilegeError,
    QuarkError,
)
from quark.events import QQ
from quark.procfs import read_cgroup_source
from quark.sys import perf
from quark.sys.ringbuf import ring_bytes

if TYPE_CHECKING:
    from quark.events import QueueAttr
    from quark.raw.types import RawEvent

__all__ = ["KprobeBackend", "MountTable", "PathResolver"]

log = logging.getLogger("quark.kprobe")

RING_PAGES = 256  # 1 MiB of data per CPU


def _ring_pages(ring_size: int) -> int:
    """Data pages per CPU for ``QueueAttr.ring_size`` (0: RING_PAGES): the
    size shared out among the online CPUs, rounded down to a power of two,
    one page at least."""
    if not ring_size:
        return RING_PAGES
    page = os.sysconf("SC_PAGE_SIZE")
    share = ring_bytes(ring_size, 1) // max(len(online_cpus()), 1) // page
    return 1 << max(share, 1).bit_length() - 1


EXEC_TP = ("sched", "sched_process_exec")
RENAME_TP = ("task", "task_rename")
# the probes whose records a sentinel watches (see the module's docs): one
# of each process's events, so that any process activity wakes the reader
SENTINEL_PROBES = ("fork", "exit", "setid", "setsid")
SENTINEL_PAGES = 1


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """CPUs from a kernel cpu list such as ``0-3,5``."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space, ...)."""
    if "\\" not in s:
        return s
    out = bytearray()
    b = os.fsencode(s)
    i = 0
    while i < len(b):
        if b[i] == 0x5C and b[i + 1 : i + 4].isdigit() and i + 4 <= len(b):
            out.append(int(b[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse_mountinfo(text: str) -> dict[int, tuple[str, str]]:
    """mount id -> (root inside its filesystem, mount point)."""
    out: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or not f[0].isdigit():
            continue
        out[int(f[0])] = (_unescape(f[3]), _unescape(f[4]))
    return out


class MountTable:
    """Mount ids to mount points, from ``mountinfo``; reread on a miss."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._mounts: dict[int, tuple[str, str]] = {}
        self._reloaded_at = 0.0
        self.reload()

    def _read(self, pid: int | str) -> dict[int, tuple[str, str]]:
        try:
            with open(f"{self.proc}/{pid}/mountinfo") as f:
                return parse_mountinfo(f.read())
        except OSError:
            return {}

    def reload(self) -> None:
        self._mounts = self._read("self")
        self._reloaded_at = time.monotonic()

    def get(self, mnt_id: int, pid: int) -> tuple[str, str] | None:
        m = self._mounts.get(mnt_id)
        if m is not None:
            return m
        # A new mount (reread ours, at most every 10 ms), or one of
        # another mount namespace (the process's own view).
        if time.monotonic() - self._reloaded_at > 0.01:
            self.reload()
            m = self._mounts.get(mnt_id)
            if m is not None:
                return m
        m = self._read(pid).get(mnt_id)
        if m is not None:
            self._mounts[mnt_id] = m
        return m


class PathResolver:
    """Completes the paths the probes fetched (see kprobe_probes)."""

    def __init__(self, mounts: MountTable, proc: str = "/proc") -> None:
        self.mounts = mounts
        self.proc = proc
        self.from_proc = 0  # paths completed from /proc/PID/{cwd,exe}
        self.unknown = 0

    def __call__(
        self,
        pid: int,
        which: str,
        mnt_id: int,
        names: list[bytes],
        alt: int | None = None,
    ) -> str | None:
        inside = path_in_fs(names)
        if inside is not None:
            m = self.mounts.get(mnt_id, pid)
            if m is not None:
                root, point = m
                rel = _relative(inside, root)
                if rel is not None:
                    return _join(point, rel)
        found = self._from_proc(pid, which, names)
        if found is None and alt is not None and alt != pid:
            found = self._from_proc(alt, which, names)
        if found is None:
            self.unknown += 1
        return found

    def _from_proc(
        self, pid: int, which: str, names: list[bytes]
    ) -> str | None:
        leaf = [n for n in names if n]
        if len(leaf) != len(names) or not leaf:
            return None
        try:
            link = os.readlink(f"{self.proc}/{pid}/{which}")
        except OSError:
            return None
        if not link.startswith("/") or link.endswith(" (deleted)"):
            return None
        parts = os.fsencode(link).split(b"/")[1:]
        tail = [n for n in leaf if n != b"/"]
        tail.reverse()
        if len(parts) < len(tail) or parts[len(parts) - len(tail) :] != tail:
            return None  # changed since, or another process: do not guess
        self.from_proc += 1
        return link


def _relative(path: str, root: str) -> str | None:
    if root == "/":
        return path
    if path == root:
        return "/"
    if path.startswith(root + "/"):
        return path[len(root) :]
    return None


def _join(point: str, rel: str) -> str:
    if point == "/":
        return rel
    return point if rel == "/" else point + rel


class _Ring:
    __slots__ = (
        "armed", "cpu", "decoder", "fds", "leader", "ring", "sentinel",
        "sentinel_fds", "sentinel_ring",
    )  # fmt: skip

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.leader = -1
        self.fds: list[int] = []
        self.ring: perf.PerfRing | None = None
        self.decoder: Decoder | None = None
        self.sentinel = -1  # the sentinel group's leader
        self.sentinel_fds: list[int] = []
        self.sentinel_ring: perf.PerfRing | None = None
        self.armed = False


class KprobeBackend(Backend):
    name = "kprobe"

    @classmethod
    def why_not(cls, kind: QQ) -> str:
        if kind in (QQ.FILE, QQ.SHM):
            # paths are walked from dentries up to the task's root, and a
            # name given by path must be read at the syscall's entry and
            # kept until its exit: loops and state fetch arguments do not
            # have (and the host, where it would matter most, has no
            # kprobes at all)
            return (
                f"QQ.{kind.name} needs BPF: the kprobe backend cannot walk "
                "a path through tracefs fetch arguments; use the ebpf "
                "backend"
            )
        if kind in (QQ.SOCK_CONN, QQ.DNS):
            # tcp_close's byte counts and a packet's payload are beyond
            # what kprobe fetch arguments can copy whole (an IPv6 address
            # is 16 bytes, a packet up to 2 KiB), and the process of an
            # accept is only known at the syscall's exit
            return (
                f"QQ.{kind.name} needs BPF: the kprobe backend cannot "
                "copy socket addresses, byte counts and packets through "
                "tracefs fetch arguments; use the ebpf backend"
            )
        if kind == QQ.BYPASS:
            return (
                "QQ.BYPASS is the ebpf backend's only (as upstream): its "
                "records are the BPF programs' own"
            )
        return super().why_not(kind)

    def __init__(self, attr: QueueAttr, **options: object) -> None:
        ignore_btf = options.pop("ignore_btf", None)
        # it serves no kind yet: nothing to ask for, nothing to refuse
        options.pop("probe_kinds", None)
        ring_pages = options.pop("ring_pages", None)
        if ring_pages is None:  # QueueAttr.ring_size, shared out by CPU
            ring_pages = _ring_pages(attr.ring_size)
        if options:
            raise ConfigError(
                f"unknown option(s) for the kprobe backend: {sorted(options)}"
            )
        if (
            not isinstance(ring_pages, int)
            or ring_pages <= 0
            or (ring_pages & (ring_pages - 1))
        ):
            raise ConfigError(f"ring_pages={ring_pages!r}: a power of 2")
        self._probes: KprobeEvents | None = None
        self._rings: list[_Ring] = []
        self._ring_pages = ring_pages
        self._epoll: select.epoll | None = None
        self._timer: HoldTimer | None = None  # waking the reader: fileno
        self._cgroups = CgroupMoves(read_cgroup_source().hierarchy)
        self._skipped: list[str] = []
        self._decode_errors = 0
        self._next = 0
        self._hold_ns = attr.hold_time * 1_000_000
        self._hold_ms = attr.hold_time
        self.offsets: OffsetTable | None = None
        try:
            self._open(attr, ignore_btf, ring_pages)
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------
    def _open(
        self, attr: QueueAttr, ignore_btf: object, ring_pages: int
    ) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                "the kprobe backend needs root (kprobe_events and "
                "system-wide perf events)"
            )
        # tracefs only: this backend needs nothing of BPF
        ensure_mounted("/sys/kernel/tracing", "tracefs")
        root = find_tracefs()
        self.offsets = kernel_offsets(
            ignore_btf=None if ignore_btf is None else bool(ignore_btf)
        )
        specs, depths = probe_specs(self.offsets)
        self._probes = KprobeEvents(root)
        if self._probes.removed_stale:
            log.info(
                "removed %d stale kprobe(s) of exited quark processes",
                self._probes.removed_stale,
            )
        formats: dict[int, tuple[str, EventFormat]] = {}
        ids: list[int] = []
        for spec in specs:
            eid = self._install(spec)
            if eid is None:
                continue
            fmt = parse_format(self._probes.format(spec.name))
            fmt.compile(tuple(a.name for a in spec.args))
            formats[eid] = (spec.name, fmt)
            ids.append(eid)
        tp_dir = os.path.join(root, "events", *EXEC_TP)
        try:
            with open(os.path.join(tp_dir, "format")) as f:
                tp = parse_format(f.read())
        except OSError as e:
            raise NotSupportedError(
                f"no sched_process_exec tracepoint in {tp_dir}: {e.strerror}",
                errno=e.errno,
            ) from None
        tp.compile(("filename",))
        formats[tp.id] = (EXEC_TP[1], tp)
        cg = self._tracepoint(root, CGROUP_TP, "the cgroup paths")
        if cg is not None:
            cg.compile(CGROUP_FIELDS)
            formats[cg.id] = (CGROUP_TP[1], cg)
            ids.append(cg.id)
        rename = self._tracepoint(root, RENAME_TP, "waking at a rename")
        watched = [tp.id] + [
            eid for eid, (name, _) in formats.items()
            if name in SENTINEL_PROBES
        ]  # fmt: skip
        if rename is not None:
            watched.append(rename.id)
        resolver = PathResolver(MountTable())
        installed = {name for name, _ in formats.values()}
        parts = tuple(
            p for p in installed if p == "exec" or p.startswith("args")
        )
        self._epoll = select.epoll()
        self._timer = HoldTimer(self._hold_ms)
        self._epoll.register(self._timer.fd, select.EPOLLIN)
        for cpu in online_cpus():
            r = _Ring(cpu)
            try:
                self._open_cpu(r, tp.id, ids, ring_pages)
                self._open_sentinel(r, watched)
            except OSError as e:
                self._close_ring(r)
                if e.errno == _errno.ENODEV:
                    continue  # went offline meanwhile
                raise self._perf_error(e) from None
            r.decoder = Decoder(
                formats, depths, resolver,
                thread_events=bool(attr.flags & QQ.THREAD_EVENTS),
                max_env=attr.max_env, exec_parts=parts,
                cgroups=self._cgroups,
            )  # fmt: skip
            self._rings.append(r)
            self._epoll.register(r.leader, select.EPOLLIN)
            self._epoll.register(r.sentinel, select.EPOLLIN)
        if not self._rings:
            raise NotSupportedError("no online CPU could be opened")
        for r in self._rings:
            perf.ioctl(
                r.leader, perf.PERF_EVENT_IOC_ENABLE, perf.PERF_IOC_FLAG_GROUP
            )
            self._arm(r)
        log.info(
            "kprobe backend: %d CPUs, offsets from %s, cwd depth %d, exe "
            "depth %d",
            len(self._rings), self.offsets.source, depths.cwd, depths.exe,
        )  # fmt: skip

    def _tracepoint(
        self, root: str, tp: tuple[str, str], what: str
    ) -> EventFormat | None:
        """An optional tracepoint's format; None (and a skipped probe)
        where the kernel has none."""
        path = os.path.join(root, "events", *tp, "format")
        try:
            with open(path) as f:
                return parse_format(f.read())
        except OSError as e:
            entry = f"{what} ({':'.join(tp)}): {e.strerror}"
        except DecodeError as e:
            entry = f"{what} ({':'.join(tp)}): {e}"
        self._skipped.append(entry)
        log.warning("optional probe skipped: %s", entry)
        return None

    def _install(self, spec: ProbeSpec) -> int | None:
        assert self._probes is not None
        errors = []
        for target in spec.targets:
            try:
                return self._probes.add(spec.name, target, spec.line_args())
            except PrivilegeError:
                raise
            except QuarkError as e:
                errors.append(f"{target}: {e}")
        reason = "; ".join(errors)
        if spec.required:
            raise NotSupportedError(
                f"cannot install the {spec.what} kprobe: {reason}"
            )
        entry = f"{spec.what}: {reason}"
        self._skipped.append(entry)
        log.warning("optional probe skipped: %s", entry)
        return None

    def _attr(
        self, config: int, *, leader: bool, pages: int
    ) -> perf.PerfEventAttr:
        flags = (
            perf.ATTR_DISABLED
            | perf.ATTR_SAMPLE_ID_ALL
            | perf.ATTR_USE_CLOCKID
        )
        if leader:
            flags |= perf.ATTR_COMM | perf.ATTR_COMM_EXEC | perf.ATTR_WATERMARK
        return perf.PerfEventAttr(
            type=perf.PERF_TYPE_TRACEPOINT,
            config=config,
            sample_period=1,
            sample_type=perf.PERF_SAMPLE_TID | perf.PERF_SAMPLE_TIME
            | perf.PERF_SAMPLE_CPU | perf.PERF_SAMPLE_RAW,
            flags=flags,
            wakeup_watermark=pages * perf.PAGE_SIZE // 8 if leader else 0,
            clockid=time.CLOCK_MONOTONIC,
        )  # fmt: skip

    def _open_cpu(
        self, r: _Ring, tp_id: int, ids: list[int], pages: int
    ) -> None:
        r.leader = perf.perf_event_open(
            self._attr(tp_id, leader=True, pages=pages), -1, r.cpu
        )
        _, r.ring = perf.map_ring(r.leader, pages)
        for eid in ids:
            fd = perf.perf_event_open(
                self._attr(eid, leader=False, pages=pages), -1, r.cpu, r.leader
            )
            r.fds.append(fd)
            perf.ioctl(fd, perf.PERF_EVENT_IOC_SET_OUTPUT, r.leader)

    def _open_sentinel(self, r: _Ring, ids: list[int]) -> None:
        """The CPU's sentinel group on ``ids``: every record wakes (the
        shared word is wakeup_events without ATTR_WATERMARK)."""
        for i, eid in enumerate(ids):
            attr = perf.PerfEventAttr(
                type=perf.PERF_TYPE_TRACEPOINT,
                config=eid,
                sample_period=1,
                sample_type=perf.PERF_SAMPLE_TIME,
                flags=perf.ATTR_DISABLED,
                wakeup_watermark=1,
            )
            if i == 0:
                r.sentinel = perf.perf_event_open(attr, -1, r.cpu)
                _, r.sentinel_ring = perf.map_ring(r.sentinel, SENTINEL_PAGES)
                continue
            fd = perf.perf_event_open(attr, -1, r.cpu, r.sentinel)
            r.sentinel_fds.append(fd)
            perf.ioctl(fd, perf.PERF_EVENT_IOC_SET_OUTPUT, r.sentinel)

    @staticmethod
    def _arm(r: _Ring) -> None:
        """Enable the CPU's sentinel, its ring emptied of what it saw."""
        assert r.sentinel_ring is not None
        r.sentinel_ring.skip()
        perf.ioctl(
            r.sentinel, perf.PERF_EVENT_IOC_ENABLE, perf.PERF_IOC_FLAG_GROUP
        )
        r.armed = True

    def _watch(self, now: int, got: bool) -> None:
        """After a read (``got``: it found records): while the engine may
        hold what was read, the sentinels are off and the timer brings the
        reader back when that is due (reading what came meanwhile); once
        nothing is held, the drained rings' sentinels are on again."""
        timer = self._timer
        if timer is None:
            return
        held = timer.held(now, got)
        soon = False
        for r in self._rings:
            if held:
                if r.armed:
                    perf.ioctl(
                        r.sentinel,
                        perf.PERF_EVENT_IOC_DISABLE,
                        perf.PERF_IOC_FLAG_GROUP,
                    )
                    r.armed = False
            elif not r.armed and r.ring is not None and r.ring.empty():
                self._arm(r)
                # a record that came between the read and the arming
                # woke nobody: come back for it
                soon = soon or not r.ring.empty()
        timer.settle(now, held, soon)

    @staticmethod
    def _perf_error(e: OSError) -> QuarkError:
        if e.errno in (_errno.EACCES, _errno.EPERM):
            return PrivilegeError(
                f"perf_event_open: {e.strerror} (root, or "
                "kernel.perf_event_paranoid, forbids system-wide events)",
                errno=e.errno,
            )
        if e.errno == _errno.ENOMEM:
            return NotSupportedError(
                f"perf ring: {e.strerror} (lower ring_pages, or raise "
                "kernel.perf_event_mlock_kb)",
                errno=e.errno,
            )
        return NotSupportedError(
            f"perf_event_open: {e.strerror}", errno=e.errno
        )

    # -- Backend interface --------------------------------------------------
    def fileno(self) -> int:
        assert self._epoll is not None
        return self._epoll.fileno()

    def poll_interval(self) -> None:
        # the descriptor wakes whenever there is work (the sentinels and
        # the timer): nothing to poll
        return None

    def read(self, limit: int) -> list[RawEvent]:
        out: list[RawEvent] = []
        rings = self._rings
        if not rings or limit <= 0:
            return out
        n = len(rings)
        start = self._next
        self._next = (start + 1) % n
        now = time.monotonic_ns()
        pending = False
        got = 0
        stale = now - max(self._hold_ns // 4, 5_000_000)
        for k in range(n):
            r = rings[(start + k) % n]
            ring, dec = r.ring, r.decoder
            if ring is None or dec is None:
                continue
            room = limit - len(out)
            if room <= 0:
                break
            corrupt = ring.corrupt
            records = ring.read(room)
            got += len(records)
            for rtype, misc, body in records:
                try:
                    dec.record(rtype, misc, body, out)
                except DecodeError as e:
                    self._decode_errors += 1
                    log.warning("skipped a perf record (cpu %d): %s", r.cpu, e)
            if ring.corrupt != corrupt:
                log.warning(
                    "cpu %d: a perf record of impossible size; the rest "
                    "of that ring was skipped",
                    r.cpu,
                )
            since = dec.pending_since()
            if since is not None and since < stale:
                dec.flush(out)  # a part never came: deliver what did
                since = None
            pending = pending or since is not None
        self._cgroups.apply(out)
        self._watch(now, got > 0 or pending)
        return out

    def lost(self) -> int:
        total = self._decode_errors
        for r in self._rings:
            if r.decoder is not None:
                total += r.decoder.lost
            if r.ring is not None:
                total += r.ring.corrupt
        return total

    def ring_stats(self) -> tuple[int, int, int]:
        # the perf rings' fill is not sampled (yet): their size only
        page = os.sysconf("SC_PAGE_SIZE")
        return (len(self._rings) * self._ring_pages * page, 0, 0)

    def decode_errors(self) -> int:
        return self._decode_errors

    def skipped_probes(self) -> tuple[str, ...]:
        return tuple(self._skipped)

    # -- lifetime -----------------------------------------------------------
    @staticmethod
    def _close_ring(r: _Ring) -> None:
        for fd in r.fds + r.sentinel_fds:
            os.close(fd)  # closing an event disables it
        r.fds = []
        r.sentinel_fds = []
        if r.sentinel_ring is not None:
            r.sentinel_ring.close()
            r.sentinel_ring = None
        if r.sentinel >= 0:
            os.close(r.sentinel)
            r.sentinel = -1
        if r.ring is not None:
            r.ring.close()
            r.ring = None
        if r.leader >= 0:
            os.close(r.leader)
            r.leader = -1

    def close(self) -> None:
        rings, self._rings = self._rings, []
        for r in rings:
            self._close_ring(r)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._probes is not None:
            self._probes.close()
            self._probes = None
