"""The EBPF backend: our CO-RE BPF programs on tracepoints, one ring buffer.

Programs (``bpf/quark.bpf.c``), BTF-typed tracepoints first (``tp_btf``),
raw tracepoints (``raw_tp``) on kernels without them:

- core: ``sched_process_fork``, ``sched_process_exec``,
  ``sched_process_exit``; if one cannot load or attach, opening fails with
  a :class:`quark.NotSupportedError` that quotes the verifier;
- optional: ``task_rename`` (SETPROCTITLE), the ``execve``/``execveat``
  syscall tracepoints (they tell an exec's rename from a process's own),
  and the ``set*id``/``setsid`` syscall exit tracepoints (ID_CHANGE). One
  that cannot load or attach is left out and reported in
  ``Stats.skipped_probes``, never fatal.

Records are read from the ring buffer's mmap'd pages in batches. Programs
wake the reader only when a quarter of the ring is used; the queue polls the
ring at :meth:`EbpfBackend.poll_interval` anyway, well inside the hold time.

The kinds (``QQ.SOCK_CONN``, ``QQ.FILE``...) are served by the programs
whose role is theirs (:mod:`quark.backends.ebpf_programs`). A kind asked for
whose program cannot load or attach fails the open, naming the kind, the
program and the verifier's reason; with ``probe_kinds=True`` every kind the
object has programs for is asked for, and a kind refused that way is left
out (all of its programs) and its reason kept (:meth:`refused_kinds`), so
that one open tells what this kernel can serve.

``QQ.BYPASS`` (:meth:`EbpfBackend.read_bypass`) hands the ring's records
over as they are, undecoded; it needs nothing beyond the core programs.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import select
import struct
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from quark import libbpf_ctypes as bpf
from quark.backends import KIND_BITS, KIND_FLAGS, Backend
from quark.backends.cgroup import open_cgroup2_root
from quark.backends.ebpf_layout import Layout, raw_layout
from quark.backends.ebpf_programs import (
    FLAVOURS,
    KIND_ROLES,
    Program,
    parse,
    wanted,
)
from quark.backends.ebpf_proto import Decoded, Decoder, Pending, Result
from quark.backends.holdtimer import HoldTimer
from quark.backends.tracefs import ensure_mounted
from quark.errors import (
    ConfigError,
    DecodeError,
    LibbpfError,
    NotSupportedError,
    PrivilegeError,
    ProtocolError,
    QuarkError,
)
from quark.events import QQ
from quark.procfs import read_cgroup_source
from quark.raw.types import RawEvent
from quark.sys.ringbuf import RingReader, ring_bytes

if TYPE_CHECKING:
    from quark.events import QueueAttr

__all__ = ["EbpfBackend", "ensure_mounts"]

log = logging.getLogger("quark.ebpf")


def ensure_mounts() -> None:
    """Mount tracefs and bpffs where they belong when they are missing."""
    ensure_mounted("/sys/kernel/tracing", "tracefs")
    ensure_mounted("/sys/fs/bpf", "bpf")


def object_path() -> str:
    ref = resources.files("quark._data") / "quark.bpf.o"
    path = str(ref)
    if not os.path.exists(path):
        raise NotSupportedError(
            f"the BPF object is missing from the package ({path}); "
            "rebuild it with python bpf/build.py"
        )
    return path


def _failed_program(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if "prog '" in line and (
            "failed to load" in line or "load failed" in line
        ):
            return line.split("prog '", 1)[1].split("'", 1)[0]
    return None


# libbpf's words about a program that say only that it failed
_GENERIC = (
    "failed to load", "failed to prepare load attributes",
    "BPF program load failed",
)  # fmt: skip
_NO_BTF_TYPE = "failed to find kernel BTF type ID of '"


def _verifier_reason(lines: list[str], prog: str | None = None) -> str:
    """Why a load failed: the verifier's last words, or when the kernel
    was never asked (the hook is not in its BTF...) libbpf's about
    ``prog``."""
    keep = [
        ln for ln in lines
        if not ln.startswith(("libbpf: prog", "libbpf: map", "libbpf: sec",
                              "libbpf: elf", "libbpf: CO-RE",
                              "libbpf: failed to load object"))
    ]  # fmt: skip
    if keep or prog is None:
        return " | ".join(keep[-4:])
    tag = f"libbpf: prog '{prog}': "
    # its failures, not its relocations and other debug lines
    own = [
        ln[len(tag) :]
        for ln in lines
        if ln.startswith(tag)
        and "fail" in ln[len(tag) :]
        and not ln[len(tag) :].startswith(_GENERIC)
    ]
    why = " | ".join(own[-2:])
    if why.startswith(_NO_BTF_TYPE):
        # a tp_btf/fentry hook the kernel does not have (a tracepoint or
        # function compiled out: CONFIG_MODULES off has no module_load)
        hook = why[len(_NO_BTF_TYPE) :].split("'", 1)[0]
        return f"the kernel has no {hook} in its BTF ({why})"
    return why or "libbpf logged no reason"


def _preflight() -> None:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise NotSupportedError(
            "no kernel BTF (/sys/kernel/btf/vmlinux): the EBPF backend needs "
            "CONFIG_DEBUG_INFO_BTF; use the kprobe backend"
        )
    if os.geteuid() != 0:
        raise PrivilegeError(
            "the EBPF backend needs root (CAP_BPF, CAP_PERFMON and "
            "CAP_SYS_ADMIN)"
        )


_TIME = struct.Struct("<Q")  # q_event.time (its offset is the layout's)

# loads of the object tried when the kernel says EAGAIN (interrupted)
_LOAD_TRIES = 5

# pending records kept at most (a thread has one at a time)
_PENDING_MAX = 65536
#: how often the programs' skipped runs are read (ns)
MISSES_NS = 1_000_000_000

def fold_period_ns(hold_time_ms: int) -> int:
    """How often a reader that holds events sweeps the forks kept back
    (see folding in bpf/quark.bpf.c): an eighth of the hold time, about
    as often as a busy reader wakes anyway (the queue releases what is
    due a tenth of the hold time late, in one go): a shorter period cost
    more in wakeups than folding saved (bench ebpf, 25 ms: 45 against
    39-46 us per process). A fork no EXEC or EXIT came for reaches the
    engine at most two periods late, a quarter of the time the engine
    holds events to order them."""
    return hold_time_ms * 1_000_000 // 8


# the kinds the object has programs for
_PROGRAM_KINDS = QQ(0)
for _bit in KIND_ROLES.values():
    _PROGRAM_KINDS |= _bit


class EbpfBackend(Backend):
    name = "ebpf"
    # BYPASS needs no program of its own: the core's records, undecoded
    SERVES = _PROGRAM_KINDS | QQ.BYPASS

    def __init__(self, attr: QueueAttr, **options: object) -> None:
        probe = bool(options.pop("probe_kinds", False))
        # off by default: measured, it saves no CPU (see the README)
        fold = bool(options.pop("fold_forks", False))
        if options.pop("ignore_btf", False):
            # CO-RE relocates against the kernel's own BTF: without it there
            # is no EBPF (the auto order goes on to KPROBE)
            raise NotSupportedError(
                "told to ignore the kernel BTF, which the EBPF backend needs"
            )
        if options:
            raise ConfigError(
                f"unknown option(s) for the ebpf backend: {sorted(options)}"
            )
        if probe and attr.flags & QQ.BYPASS:
            raise ConfigError(
                "probe_kinds opens a queue of events: not with QQ.BYPASS "
                "(which is live wherever the ebpf backend opens)"
            )
        self._reset(attr, probe)
        # fold_forks=True: a short process's FORK record carried by its
        # EXEC or EXIT (see folding in bpf/quark.bpf.c), two records where
        # there were three; not where the fork must be an event of its own
        # (QQ.MIN_AGG), nor where records go out undecoded
        self._folds = fold and not attr.flags & (QQ.MIN_AGG | QQ.BYPASS)
        try:
            _preflight()
            ensure_mounts()
            self._open(attr)
        except BaseException:
            self.close()
            raise

    def _reset(self, attr: QueueAttr, probe: bool) -> None:
        """The state of a backend before it opens."""
        self._obj: bpf.BpfObject | None = None
        self._ring: RingReader | None = None
        self._skipped: list[str] = []
        # why an fentry hook cannot load here (None: it can), by function
        self._fentry: dict[str, str | None] = {}
        # the syscall programs a live fentry hook stands in for (_try_load)
        self._replaced: set[str] = set()
        # the hierarchy Process.cgroup is read from, for the records too
        self._cgroup_src = read_cgroup_source()
        self._decode_errors = 0
        self._unresolved = 0
        self._counters_fd = -1
        self._ring_fd = -1
        self._ncpus = 1
        self._ring_size = 0  # QueueAttr.ring_size, resolved at open
        self._hold_ms = attr.hold_time
        self._timer: HoldTimer | None = None  # waking the reader: fileno
        self._epoll: select.epoll | None = None
        self._wake: bpf.DataCell | None = None
        # folding: the deadline told to the programs (fold_until), the map
        # of kept-back forks, read in one syscall, and when it is swept
        self._folds = False
        self._fold: bpf.DataCell | None = None
        self._fold_fd = -1
        self._fold_batch: bpf.Batch | None = None
        self._fold_ns = fold_period_ns(attr.hold_time)
        self._fold_told = False  # a deadline is told (not 0)
        self._sweep_at: int | None = None  # when a sweep is owed
        self._swept = 0  # forks the sweeps took
        self._misses = 0  # the last recursion-miss count that could be read
        self._misses_due = 0  # when it is read again
        self._programs: dict[str, Program] = {}
        self._fds: list[tuple[Program, int]] | None = None
        self._writing: list[tuple[Program, int]] | None = None
        self._layout: Layout | None = None
        self._decode: Callable[[bytes], Decoded] | None = None
        # records read at a syscall's entry, waiting for its result, by tid
        self._pending: dict[int, Pending] = {}
        self._probe = probe
        self._bypass = bool(attr.flags & QQ.BYPASS)
        # the kinds asked of the programs; under probe_kinds, every kind
        # they serve, less the ones refused on the way (self._refused)
        self._kinds = _PROGRAM_KINDS if probe else attr.flags & _PROGRAM_KINDS
        self._refused: dict[QQ, str] = {}
        self._header: tuple[int, int] = (0, 0)  # q_event.time: offset, end

    @property
    def _wire(self) -> Layout:
        """The object's wire layout (read by the first load attempt)."""
        if self._layout is None:
            raise ProtocolError("the BPF object's layout is not read yet")
        return self._layout

    # -- opening --------------------------------------------------------------
    def _config(self, attr: QueueAttr) -> bytes:
        lay = self._wire
        cfg = lay.record("q_config")
        src = self._cgroup_src
        values = {
            "max_env": min(max(attr.max_env, 0), lay.const("Q_ENV_MAX") - 1),
            "thread_events": 1 if attr.flags & QQ.THREAD_EVENTS else 0,
            "wakeup_bytes": self._ring_size // 4,
            # what the consumer does to files would come back to it
            "self_tgid": os.getpid(),
            # one MODIFY per process and file per hold time: the engine
            # holds events that long anyway
            "file_dedup_ns": attr.hold_time * 1_000_000,
            # 0: cgroup v2; else a legacy layout's v1 controller, + 1
            "cgroup_v1": 0 if src.ssid is None else src.ssid + 1,
            "fold": 1 if self._folds else 0,
        }
        # a kind's switch, for the hooks that serve more than one kind:
        # the field named as the kind (q_config.file for QQ.FILE)
        asked = self._kinds | (attr.flags & QQ.BYPASS)
        for kind in KIND_BITS:
            assert kind.name is not None
            values[kind.name.lower()] = 1 if asked & kind else 0
        return cfg.fmt.pack(*(values.get(n, 0) for n in cfg.names))

    def _open(self, attr: QueueAttr) -> None:
        path = object_path()
        self._ncpus = bpf.num_possible_cpus()
        self._ring_size = ring_bytes(attr.ring_size, self._ncpus)
        errors: list[str] = []
        for flavour in FLAVOURS:
            disabled: set[str] = set()
            while True:
                try:
                    self._try_load(path, attr, flavour, disabled)
                except _ProgramFailed as e:
                    prog = self._programs.get(e.program)
                    if prog is not None and prog.optional:
                        disabled.add(e.program)
                        self._skip(prog, e.reason)
                        continue
                    if prog is not None and prog.kind is not None:
                        self._refuse(prog, e.reason)
                        continue  # again, without the kind's programs
                    errors.append(f"{flavour}: {e.program}: {e.reason}")
                    break
                try:
                    self._attach_all(flavour, disabled)
                except _KindFailed as e:
                    self._refuse(e.program, e.reason)
                    continue  # load again: the attached links go with it
                except _StandInFailed as e:
                    # again with the syscall hooks it would have replaced
                    disabled.add(e.program.name)
                    self._skip(e.program, e.reason)
                    continue
                if self._probe:
                    # the decoder tells FILE from SHM by the kinds asked
                    self._decode = Decoder(
                        self._wire,
                        attr.flags & ~KIND_FLAGS | self._kinds,
                        cgroups=self._cgroup_src.hierarchy is not None,
                    ).decode
                return
        raise NotSupportedError(
            "the EBPF programs cannot load on this kernel: "
            + "; ".join(errors)
        )

    def _refuse(self, program: Program, reason: str) -> None:
        """A kind's program cannot load or attach: fail the open, or under
        probe_kinds leave out the kind(s) it serves and keep why."""
        kinds = (program.kind or QQ(0)) & self._kinds
        if not self._probe or not kinds:
            raise _kind_refused(program, reason, kinds)
        self._drop(kinds, lambda k: _kind_refused(program, reason, k))

    def _unserved(
        self, chosen: list[Program], disabled: set[str], flavour: str
    ) -> None:
        """A kind asked for that no program to load serves (the object has
        none, or none that this kernel takes) is refused as well: never a
        queue that silently lacks it."""
        have = QQ(0)
        for p in chosen:
            if p.kind is not None and p.name not in disabled:
                have |= p.kind
        missing = self._kinds & ~have
        if not missing:
            return

        def error(kinds: QQ) -> NotSupportedError:
            names = " and ".join(
                f"QQ.{k.name}" for k in KIND_BITS if k & kinds
            )
            return NotSupportedError(
                f"{names} cannot be served on this kernel: the BPF object "
                f"has no program for it that can load here ({flavour} "
                "flavour)"
            )

        if not self._probe:
            raise error(missing)
        self._drop(missing, error)

    def _drop(
        self, kinds: QQ, error: Callable[[QQ], NotSupportedError]
    ) -> None:
        """Under probe_kinds: leave ``kinds`` out, each with its error."""
        for kind in KIND_BITS:
            if kind & kinds:
                self._refused[kind] = str(error(kind))
                log.info("probe: %s", self._refused[kind])
        self._kinds &= ~kinds

    def _skip(self, program: Program, reason: str) -> None:
        entry = f"{program.what}: {reason}"
        if entry not in self._skipped:
            self._skipped.append(entry)
            log.warning("optional probe skipped: %s", entry)

    def _try_load(
        self,
        path: str,
        attr: QueueAttr,
        flavour: str,
        disabled: set[str],
        attempt: int = 1,
    ) -> None:
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        obj = bpf.BpfObject(path)
        self._obj = obj
        if self._decode is None:
            # the object's wire format, before anything is loaded: an
            # object of another protocol is refused here (ProtocolError)
            self._layout = raw_layout(obj.btf_data(), path)
            self._decode = Decoder(
                self._layout,
                attr.flags,
                cgroups=self._cgroup_src.hierarchy is not None,
            ).decode
        self._programs = {
            name: parse(name, obj.section(name)) for name, _ in obj.programs()
        }
        chosen = wanted(self._programs.values(), flavour, self._kinds)
        for p in chosen:
            if p.flavour == "fe" and p.name not in disabled:
                # probed alone, cheaply, rather than failing the whole
                # object's load once per hook on a kernel without them
                if p.what not in self._fentry:
                    # once per open: reloads and the other flavour ask too
                    self._fentry[p.what] = bpf.fentry_refusal(
                        p.what, _FENTRY_PARAMS.get(p.what)
                    )
                why = self._fentry[p.what]
                if why is not None:
                    disabled.add(p.name)
                    self._skip(p, why)
        # a live fentry hook that sees all a role's tracepoints see, and
        # more, stands in for them: one record per write (should it then
        # fail to attach, _open loads again without it, and them)
        self._replaced = {
            q.name
            for p in chosen
            if p.flavour == "fe"
            and p.name not in disabled
            and (gone := _REPLACES.get(p.role))
            for q in chosen
            if q.role == gone and q.flavour == "tp"
        }
        off = disabled | self._replaced
        self._unserved(chosen, off, flavour)
        load = {p.name for p in chosen}
        for name in self._programs:
            obj.set_autoload(name, name in load and name not in off)
        obj.set_max_entries(
            "scratch", self._ncpus * self._wire.const("Q_NEST")
        )
        obj.set_max_entries("ringbuf", self._ring_size)
        obj.write_initial_value(".rodata", self._config(attr))
        mark = bpf.log_mark()
        try:
            obj.load()
        except LibbpfError as e:
            if e.errno == _errno.EAGAIN and attempt < _LOAD_TRIES:
                # a signal was pending while the verifier ran (a profiler
                # stopping the process to sample it): the kernel gives up
                # with EAGAIN; load again, from a fresh object
                log.info("BPF load interrupted (EAGAIN), loading again")
                self._try_load(path, attr, flavour, disabled, attempt + 1)
                return
            err = load_failure(e, bpf.recent_log(mark))
            if e.errno == _errno.EAGAIN:
                err = NotSupportedError(
                    f"loading the BPF object was interrupted {_LOAD_TRIES} "
                    "times (EAGAIN: a signal pending while the verifier "
                    f"ran, as a profiler stopping the process sends): {err}",
                    errno=e.errno,
                )
            raise err from None

    def _attach_all(self, flavour: str, disabled: set[str]) -> None:
        obj = self._obj
        assert obj is not None
        cgroup_fd = -1
        try:
            for prog in wanted(self._programs.values(), flavour, self._kinds):
                if prog.name in disabled or prog.name in self._replaced:
                    continue
                if prog.cgroup and cgroup_fd < 0:
                    try:
                        cgroup_fd = open_cgroup2_root()
                    except QuarkError as e:
                        raise _KindFailed(prog, str(e)) from None
                self._attach(obj, prog, cgroup_fd)
        finally:
            if cgroup_fd >= 0:
                os.close(cgroup_fd)  # the links keep the cgroup
        self._counters_fd = obj.map_fd("counters")
        self._ring_fd = obj.map_fd("ringbuf")
        self._ring = RingReader(self._ring_fd, self._ring_size)
        self._wake = obj.data_cell(".data.wake")
        if self._folds:
            self._fold = obj.data_cell(".data.fold", 8)
            self._fold_fd = obj.map_fd("folding")
            self._fold_batch = obj.map_batch("folding")
        self._timer = HoldTimer(self._hold_ms)
        self._epoll = select.epoll()
        self._epoll.register(self._ring_fd, select.EPOLLIN)
        self._epoll.register(self._timer.fd, select.EPOLLIN)
        self._fds = self._writing = None
        self._writers()  # now, while privileged (quark-mon -D drops them)
        ev = self._wire.record("q_event")
        at = ev.offsets["time"]
        self._header = (at, at + _TIME.size)
        log.info("ebpf backend: %s tracepoints, %d CPUs", flavour, self._ncpus)

    def _attach(
        self, obj: bpf.BpfObject, prog: Program, cgroup_fd: int
    ) -> None:
        try:
            if prog.cgroup:
                obj.attach_cgroup(prog.name, cgroup_fd)
            else:
                obj.attach(prog.name)
        except LibbpfError as e:
            if prog.kind is not None and not prog.optional:
                raise _KindFailed(prog, f"attach failed: {e}") from None
            if not prog.optional:
                raise NotSupportedError(
                    f"cannot attach {prog.section}: {e}",
                    errno=e.errno,
                ) from None
            if prog.role in _REPLACES:  # its stand-ins were not loaded
                raise _StandInFailed(prog, f"attach failed: {e}") from None
            self._skip(prog, f"attach failed: {e}")

    # -- Backend interface ----------------------------------------------------
    def kinds(self) -> QQ:
        if self._bypass or self._probe:
            # BYPASS is live wherever the core is (under probe_kinds:
            # would be, for a queue that asks for it)
            return self._kinds | QQ.BYPASS
        return self._kinds

    def refused_kinds(self) -> dict[QQ, str]:
        return dict(self._refused)

    def fileno(self) -> int:
        """An epoll descriptor over the ring and a timer. The ring wakes it
        when a quarter of it waits, and at the first record after the
        reader went idle (a read found it empty with nothing held: the
        programs are told through ``wake_next``), never per record; the
        timer when what was read is due, since no record may come to wake
        the reader for it."""
        assert self._epoll is not None
        return self._epoll.fileno()

    def _watch(self, got: bool) -> None:
        """After a read (``got``: it found records): while the engine may
        hold what was read, the ring wakes nobody per record and the timer
        brings the reader back when that is due (reading what came
        meanwhile); once nothing is held, the next record wakes it."""
        wake, timer, ring = self._wake, self._timer, self._ring
        if wake is None or timer is None or ring is None:
            return
        now = self.now()
        held = timer.held(now, got)
        soon = False
        if held:
            wake.value = 0
        else:
            wake.value = 1
            # a record that came between the read and this woke nobody
            soon = ring.sample() > 0
        fold = self._fold
        if fold is not None:
            if held:
                # forks may be kept back until then: come back by then
                until = now + self._fold_ns
                fold.value = until
                self._fold_told = True
                if self._sweep_at is None:
                    self._sweep_at = until
            elif self._fold_told:
                # idle: every fork goes out at once again, and the ones
                # kept back meanwhile are swept once the programs that
                # read the old deadline are done (a millisecond is ample)
                fold.value = 0
                self._fold_told = False
                if self._sweep_at is None:
                    self._sweep_at = now + 1_000_000
        timer.settle(now, held, soon, self._sweep_at)

    def _sweep(self, out: list[RawEvent], now: int) -> None:
        """Take the forks kept back that no EXEC or EXIT record carried
        (see folding in bpf/quark.bpf.c) into ``out``: a delete succeeds
        once, so an entry deleted here is this reader's to decode. While
        the programs may keep forks back, one younger than the fold period
        is left for its exec to carry, and swept a period later (at the
        latest twice the period after its fork); once they may not, all
        go."""
        batch, decode = self._fold_batch, self._decode
        self._sweep_at = None
        if batch is None or decode is None:
            return
        at = self._header[0]
        oldest = now - self._fold_ns if self._fold_told else None
        left = False
        try:
            for pid, rec in batch.read():
                young = oldest is not None and (
                    _TIME.unpack_from(rec, at)[0] > oldest
                )
                if young:
                    left = True
                    continue
                if not bpf.delete_u32(self._fold_fd, pid):
                    continue  # its EXEC, EXIT or another record took it
                self._swept += 1
                try:
                    item = decode(rec)
                except DecodeError as e:
                    self._decode_errors += 1
                    log.warning("skipped a kept-back fork: %s", e)
                    continue
                if isinstance(item, RawEvent):
                    out.append(item)
            if left:
                self._sweep_at = now + self._fold_ns
        except LibbpfError as e:
            # no sweeping, no folding: the forks go out at once from now
            # on, and the ones kept back with their process's next record
            log.warning("cannot sweep the kept-back forks (%s): folding "
                        "is off for this queue", e)  # fmt: skip
            if self._fold is not None:
                self._fold.value = 0
            self._fold = None
            self._fold_batch = None

    def read(self, limit: int) -> list[RawEvent]:
        ring = self._ring
        decode = self._decode
        if ring is None or decode is None or limit <= 0:
            return []
        out: list[RawEvent] = []
        pending = self._pending
        sweep_at = self._sweep_at
        if sweep_at is not None:
            now = self.now()
            if now >= sweep_at:
                self._sweep(out, now)
        recs = ring.read(limit)
        self._watch(bool(recs))
        for rec in recs:
            try:
                item = decode(rec)
            except DecodeError as e:
                self._decode_errors += 1
                log.warning("skipped a ring record: %s", e)
                continue
            if isinstance(item, RawEvent):
                out.append(item)
            elif type(item) is tuple:  # a folded fork, then its record
                out.extend(item)
            elif isinstance(item, Pending):
                if pending.pop(item.raw.tid, None) is not None:
                    self._unresolved += 1  # its result never came
                pending[item.raw.tid] = item
            elif isinstance(item, Result):
                p = pending.pop(item.tid, None)
                if p is not None and p.ok(item.ret):
                    out.append(p.raw)
        if len(pending) > _PENDING_MAX:
            # results lost with the ring's overruns (counted there): let
            # the oldest go rather than grow
            for tid in list(pending)[: len(pending) - _PENDING_MAX]:
                del pending[tid]
                self._unresolved += 1
        return out

    def read_bypass(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ring records as the programs wrote them (each
        begins as ``struct q_event``), with the time of their header."""
        ring = self._ring
        if ring is None or limit <= 0:
            return []
        at, end = self._header
        out: list[tuple[int, bytes]] = []
        recs = ring.read(limit)
        self._watch(False)  # nothing is held: each record goes at once
        for rec in recs:
            data = bytes(rec)
            if len(data) < end:
                # too short to hold a header: handed over all the same (a
                # bypass queue hands every record), stamped on arrival
                out.append((self.now(), data))
                continue
            out.append((_TIME.unpack_from(data, at)[0], data))
        return out

    def fold_counts(self) -> dict[str, int]:
        """How the forks went (see folding in bpf/quark.bpf.c): kept back
        (``deferred``), carried by their EXEC or EXIT (``folded``), sent
        before another record of their pid (``flushed``), and taken by
        this reader's sweeps (``swept``)."""
        return {
            "deferred": self._counter("Q_CNT_DEFERRED"),
            "folded": self._counter("Q_CNT_FOLDED"),
            "flushed": self._counter("Q_CNT_FLUSHED"),
            "swept": self._swept,
        }

    def _counter(self, name: str) -> int:
        if self._counters_fd < 0:
            return 0
        which = self._wire.const(name)
        return sum(
            bpf.lookup_percpu_u64(self._counters_fd, which, self._ncpus)
        )

    def recursion_misses(self) -> int:
        """Records lost to runs the kernel skipped because the program was
        already running on that CPU (a preempted handler).

        A core hook's skipped run is handled by its backup, attached after
        it: an event is lost only when the backup's run was skipped too, so
        what the backups did not recover counts, up to the backups' own
        skipped runs (a skipped primary run whose event the backup found
        not to be one, a kernel thread's fork, loses nothing). Any other
        program's skipped run counts when the program writes records at
        all: one that only keeps state (the exec markers) loses none.
        """
        now = self.now()
        if now < self._misses_due:
            return self._misses
        # one syscall per program: read at most once per MISSES_NS (under
        # TCG, reading them at every 250 ms check was most of an idle
        # queue's CPU)
        self._misses_due = now + MISSES_NS
        primary = backup = total = 0
        for prog, fd in self._writers():
            try:
                misses = bpf.prog_run_stats(fd)[2]
            except LibbpfError as e:
                if e.errno not in (_errno.EPERM, _errno.EACCES):
                    raise
                return self._misses  # privileges dropped: the last known
            if prog.role == "core":
                primary += misses
            elif prog.role == "backup":
                backup += misses
            else:
                total += misses
        recovered = self._counter("Q_CNT_RECOVERED")
        self._misses = skipped_losses(primary, backup, recovered, total)
        return self._misses

    def _writers(self) -> list[tuple[Program, int]]:
        """(program, fd) of the loaded programs that write to the ring."""
        fds = self._prog_fds()
        if not fds:
            return []
        if self._writing is None:
            try:
                ring = bpf.map_id(self._ring_fd)
                self._writing = [
                    (p, fd) for p, fd in fds if ring in bpf.prog_map_ids(fd)
                ]
            except LibbpfError as e:
                if e.errno not in (_errno.EPERM, _errno.EACCES):
                    raise
                return []  # privileges dropped before the first look
        return self._writing

    def lost(self) -> int:
        return (
            self._counter("Q_CNT_LOST")
            + self._counter("Q_CNT_NOBUF")
            + self.recursion_misses()
            + self._decode_errors
        )

    def decode_errors(self) -> int:
        return self._decode_errors

    def ring_stats(self) -> tuple[int, int, int]:
        ring = self._ring
        if ring is None:
            return (self._ring_size, 0, 0)
        ring.sample()  # a consumer that reads seldom is seen filling up
        return (ring.size, ring.high_water, ring.behind)

    def skipped_probes(self) -> tuple[str, ...]:
        return tuple(self._skipped)

    def _prog_fds(self) -> list[tuple[Program, int]]:
        """(program, fd) of the loaded programs (cached: they live as long
        as the object)."""
        if self._fds is None:
            self._fds = []
            if self._obj is not None:
                for name, handle in self._obj.programs():
                    try:
                        fd = bpf.lib().bpf_program__fd(handle)
                    except LibbpfError:
                        continue  # not loaded (autoload off)
                    self._fds.append((self._programs[name], fd))
        return self._fds

    def close(self) -> None:
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        if self._fold is not None:
            self._fold.value = 0
            self._fold.close()
            self._fold = None
        self._fold_batch = None
        self._fold_fd = -1
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        self._fds = self._writing = None
        self._counters_fd = self._ring_fd = -1


def skipped_losses(
    primary: int, backup: int, recovered: int, other: int
) -> int:
    """The records lost to skipped runs: ``primary`` and ``backup`` are the
    core hooks' skipped runs, ``recovered`` the events the backups handled
    for a skipped primary, ``other`` the skipped runs of the other programs
    that write records. A skipped primary run the backup did not recover
    was either no event for it (a kernel thread's fork) or skipped by the
    backup too: only the latter are lost, and there are no more of them
    than the backups' skipped runs."""
    return other + max(0, min(primary - recovered, backup))


def load_failure(e: LibbpfError, lines: list[str]) -> QuarkError:
    """The error for a failed ``bpf_object__load``, from libbpf's log lines
    since the load began: which program the verifier refused and why."""
    prog = _failed_program(lines)
    if e.errno in (_errno.EPERM, _errno.EACCES) and prog is None:
        return PrivilegeError(
            f"loading BPF programs: {e} (root with CAP_BPF needed)",
            errno=e.errno,
        )
    if prog is None:
        return NotSupportedError(
            f"loading the BPF object failed: {e}: {_verifier_reason(lines)}",
            errno=e.errno,
        )
    return _ProgramFailed(prog, _verifier_reason(lines, prog))


def _kind_refused(
    prog: Program, reason: str, kinds: QQ | None = None
) -> NotSupportedError:
    """The error for a kind whose program ``prog`` cannot serve: ``kinds``
    names the kinds asked for (by default, every kind ``prog`` serves)."""
    kind = kinds or prog.kind
    name = (
        " and ".join(f"QQ.{k.name}" for k in KIND_BITS if k & kind)
        if kind
        else prog.role
    )
    for bit, (path, lack) in _KIND_NEEDS.items():
        if kind and kind & bit and not os.path.exists(path):
            reason = f"{lack}; {reason}"
    return NotSupportedError(
        f"{name} cannot be served on this kernel: {prog.section} "
        f"({prog.name}): {reason}"
    )


#: fentry hooks whose program reads its function's arguments by one
#: prototype: the number of arguments of that prototype (tty_write took
#: (file, buf, count, ppos) before 5.11, (iocb, from) since)
_FENTRY_PARAMS = {"tty_write": 2}
#: an optional fentry role, live, replaces the tracepoint programs of
#: another role: tty_write sees every terminal write the write and writev
#: syscalls do, and those of io_uring, splice and sendfile
_REPLACES = {"ttyopt": "tty"}

#: what a kind needs of the kernel, beyond its hooks, said first when the
#: kind is refused: the file that shows it and what its absence means
_KIND_NEEDS = {
    QQ.MODULE_LOAD: (
        "/proc/modules",
        "this kernel has no loadable modules (CONFIG_MODULES is off: no "
        "/proc/modules)",
    ),
}


class _KindFailed(Exception):
    """A kind's program could not attach (caught by ``_open``)."""

    def __init__(self, program: Program, reason: str) -> None:
        super().__init__(f"{program.name}: {reason}")
        self.program = program
        self.reason = reason


class _StandInFailed(Exception):
    """An optional fentry program that stands in for a kind's syscall hooks
    could not attach: ``_open`` loads again without it, with them."""

    def __init__(self, program: Program, reason: str) -> None:
        super().__init__(f"{program.name}: {reason}")
        self.program = program
        self.reason = reason


class _ProgramFailed(QuarkError):
    def __init__(self, program: str, reason: str) -> None:
        super().__init__(f"{program}: {reason}")
        self.program = program
        self.reason = reason
