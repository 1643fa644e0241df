"""quark-mon: print the system's process events as they come.

Built on quark's public API only, so it doubles as an example of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import sys
import time
from typing import Any, TextIO

import quark
from quark import QQ
from quark.dump import dump_event, dump_process

__all__ = ["main"]

DESCRIPTION = """\
Print process events (fork, exec, exit, comm and id changes) of the whole
system, aggregated as quark does: a short-lived fork+exec+exit is one event.
Needs root for the ebpf and kprobe backends. By default every cached process
is printed first, then events as they come; Ctrl-C (SIGINT), SIGTERM or
SIGHUP ends it (status 0) with the queue's statistics on stderr, whatever
the signal's inherited disposition; a second Ctrl-C while it shuts down
ends it at once. -S and -N add TCP connections and DNS packets, -F file
operations, -H shared memory, -Y terminal output, -T ptrace requests, -L
module loads and -G getpid calls, which are off unless asked for; a kind
that this kernel or backend cannot serve fails the open, saying why.

--probe prints, for every kind and each live backend (ebpf, kprobe), whether
this kernel can serve it and why not, then exits.
"""

EPILOG = """\
statistics columns: insertions removals aggregations non-aggregations lost
garbage-collections, then the backend.

-B (QQ.BYPASS) prints one * per raw record, or with -E one JSON object per
line: {"time": NS, "bytes": "HEX"} (the record's monotonic time in ns and
its bytes, as bpf/proto.h lays them out); it cannot go with -C -e -g -k -P
-r -t --record --replay.

--probe prints a table (a row per kind: live or no for each backend, then
why not); with -E, one JSON document: {"kernel": RELEASE, "backends":
{BACKEND: {KIND: null or "why not", ...}, ...}, "skipped_probes":
{BACKEND: ["optional hook: why", ...], ...}}. A backend that cannot open
gives its open error for every kind.
"""

#: the backends --probe tries, in this order
PROBED = ("ebpf", "kprobe")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="quark-mon",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "-b",
        action="store_true",
        help="use the EBPF backend (with -k: EBPF, then KPROBE)",
    )
    ap.add_argument(
        "-k",
        action="store_true",
        help="use the KPROBE backend (with -b: EBPF, then KPROBE)",
    )
    ap.add_argument(
        "-t", action="store_true", help="thread events too (QQ.THREAD_EVENTS)"
    )
    ap.add_argument(
        "-g", action="store_true", help="minimal aggregation (QQ.MIN_AGG)"
    )
    ap.add_argument(
        "-e",
        action="store_true",
        help="compute entry leaders (QQ.ENTRY_LEADER)",
    )
    ap.add_argument(
        "-S",
        action="store_true",
        help="TCP connections too: connect, accept and close, with the "
        "bytes each way (QQ.SOCK_CONN; needs the EBPF backend and a "
        "cgroup v2 hierarchy, mounted or mountable)",
    )
    ap.add_argument(
        "-N",
        action="store_true",
        help="DNS packets too, UDP port 53 both ways (QQ.DNS; needs the "
        "EBPF backend and a cgroup v2 hierarchy, mounted or mountable)",
    )
    ap.add_argument(
        "-F",
        action="store_true",
        help="file operations too: create, modify (content, permissions, "
        "owner), remove and move, with absolute paths (QQ.FILE; needs the "
        "EBPF backend)",
    )
    ap.add_argument(
        "-H",
        action="store_true",
        help="shared memory too: shmget, shm_open and memfd_create "
        "(QQ.SHM; needs the EBPF backend)",
    )
    ap.add_argument(
        "-Y",
        action="store_true",
        help="terminal output too: what processes write to ttys and ptys "
        "(QQ.TTY; upstream has no letter for it)",
    )
    ap.add_argument(
        "-T",
        action="store_true",
        help="ptrace requests too (QQ.PTRACE)",
    )
    ap.add_argument(
        "-L",
        action="store_true",
        help="kernel module loads too (QQ.MODULE_LOAD)",
    )
    ap.add_argument(
        "-G",
        action="store_true",
        help="an event per getpid(2) too, for benchmarks (QQ.GETPID)",
    )
    ap.add_argument(
        "-B",
        action="store_true",
        help="bypass: raw records as the kernel hands them over, no "
        "processing; prints one * per record (QQ.BYPASS; EBPF only)",
    )
    ap.add_argument(
        "--probe",
        action="store_true",
        help="print which event kinds this kernel can serve, per backend, "
        "and why not; then exit",
    )
    ap.add_argument(
        "-l",
        metavar="MAXLENGTH",
        type=int,
        help="max raw events buffered (default 10000)",
    )
    ap.add_argument(
        "-s",
        action="store_true",
        help="do not print the cached processes first",
    )
    ap.add_argument(
        "-P",
        metavar="PPID",
        type=int,
        help="only events whose process has this parent pid",
    )
    ap.add_argument(
        "-M",
        action="store_true",
        help="print no events; statistics to stderr every second",
    )
    ap.add_argument(
        "-v",
        action="count",
        default=0,
        help="more logging (repeat for debug); print the backend",
    )
    ap.add_argument(
        "-V", action="version", version=f"quark-mon {quark.__version__}"
    )
    ap.add_argument(
        "-E",
        action="store_true",
        help="ECS JSON output, one document per line",
    )
    ap.add_argument(
        "-C",
        metavar="FILE",
        help="at exit, write the process cache as a DOT graph to FILE",
    )
    ap.add_argument(
        "-D",
        action="store_true",
        help="drop privileges to nobody once open, and keep running",
    )
    ap.add_argument(
        "-r",
        metavar="FILE",
        help="rules in quark's DSL from FILE, or - for stdin",
    )
    ap.add_argument(
        "--record",
        metavar="FILE",
        help="also record the raw events to FILE (replayable)",
    )
    ap.add_argument(
        "--replay",
        metavar="FILE",
        help="replay a recorded raw stream instead of the kernel",
    )
    return ap  # fmt: skip


def _stats_line(s: quark.Stats) -> str:
    return (
        f"{s.insertions:>8} {s.removals:>8} {s.aggregations:>8} "
        f"{s.non_aggregations:>8} {s.lost:>8} {s.garbage_collections:>8} "
        f"{s.backend}"
    )


def _stats_header() -> str:
    return (
        f"{'inserts':>8} {'removes':>8} {'aggs':>8} {'non-aggs':>8} "
        f"{'lost':>8} {'gc-cols':>8} backend"
    )


def _flags(args: argparse.Namespace) -> QQ:
    flags = QQ(0)
    if args.t:
        flags |= QQ.THREAD_EVENTS
    if args.g:
        flags |= QQ.MIN_AGG
    if args.e:
        flags |= QQ.ENTRY_LEADER
    if args.S:
        flags |= QQ.SOCK_CONN
    if args.N:
        flags |= QQ.DNS
    if args.F:
        flags |= QQ.FILE
    if args.H:
        flags |= QQ.SHM
    if args.Y:
        flags |= QQ.TTY
    if args.T:
        flags |= QQ.PTRACE
    if args.L:
        flags |= QQ.MODULE_LOAD
    if args.G:
        flags |= QQ.GETPID
    if args.B:
        flags |= QQ.BYPASS
    return flags


def _open(args: argparse.Namespace) -> quark.Queue:
    kw: dict[str, object] = {"flags": _flags(args)}
    if args.l is not None:
        kw["max_length"] = args.l
    if args.replay:
        kw["backend"] = "replay"
        kw["path"] = args.replay
    elif args.b and not args.k:
        kw["backend"] = "ebpf"
    elif args.k and not args.b:
        kw["backend"] = "kprobe"
    else:
        kw["backend"] = "auto"
    if args.record:
        kw["record"] = args.record
    if args.r:
        from quark.rules import Ruleset

        kw["ruleset"] = Ruleset.parse_file(args.r)
    return quark.Queue(**kw)  # type: ignore[arg-type]


def probe(backends: tuple[str, ...] = PROBED) -> dict[str, Any]:
    """What ``--probe -E`` prints: for every kind bit and each backend,
    None when this kernel can serve it, else why not."""
    from quark.backends import KIND_BITS

    doc: dict[str, Any] = {
        "kernel": os.uname().release,
        "backends": {},
        "skipped_probes": {},
    }
    for name in backends:
        try:
            with quark.Queue(backend=name, flags=QQ(0), probe_kinds=True) as q:
                caps = q.capabilities()
                skipped = list(q.stats().skipped_probes)
        except quark.QuarkError as e:
            why = f"the {name} backend cannot open here: {e}"
            caps = dict.fromkeys(KIND_BITS, why)
            skipped = []
        doc["backends"][name] = {str(k.name): v for k, v in caps.items()}
        doc["skipped_probes"][name] = skipped
    return doc


def format_probe(doc: dict[str, Any]) -> str:
    """``--probe``'s table of the document :func:`probe` returns."""
    backends: dict[str, dict[str, str | None]] = doc["backends"]
    kinds: list[str] = []
    for caps in backends.values():
        kinds.extend(k for k in caps if k not in kinds)
    width = max([len("kind"), *map(len, kinds)]) + 2
    cols = [max(len(b), len("live")) + 2 for b in backends]
    lines = [f"kernel {doc['kernel']}"]
    head = "".join(b.ljust(c) for b, c in zip(backends, cols, strict=True))
    lines.append(("kind".ljust(width) + head).rstrip())
    for kind in kinds:
        cells = (
            ("live" if caps.get(kind, "") is None else "no").ljust(c)
            for caps, c in zip(backends.values(), cols, strict=True)
        )
        lines.append((kind.ljust(width) + "".join(cells)).rstrip())
    notes = []
    for name, caps in backends.items():
        whys = {k: v for k, v in caps.items() if v is not None}
        if not whys:
            continue
        if len(whys) == len(caps) and len(set(whys.values())) == 1:
            notes.append(f"  {name} (every kind): {next(iter(whys.values()))}")
            continue
        notes.extend(f"  {name} {k}: {v}" for k, v in whys.items())
    if notes:
        lines.append("why not:")
        lines.extend(notes)
    skipped = [
        f"  {name}: {hook}"
        for name, hooks in doc.get("skipped_probes", {}).items()
        for hook in hooks
    ]
    if skipped:
        lines.append("optional hooks skipped (the kind is live without):")
        lines.extend(skipped)
    return "\n".join(lines) + "\n"


def _bypass_json(ev: quark.Event) -> str:
    data = ev.bypass or b""
    return json.dumps({"time": ev.time, "bytes": data.hex()}) + "\n"


def _bypass_star(ev: quark.Event) -> str:
    return "*"


def _drop_privileges() -> None:
    """Become nobody: groups, gids, then uids (in that order, or the later
    steps are no longer allowed). The queue's descriptors stay usable."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        raise quark.PrivilegeError("-D: no user nobody") from None
    try:
        os.setgroups([])
        os.setresgid(nobody.pw_gid, nobody.pw_gid, nobody.pw_gid)
        os.setresuid(nobody.pw_uid, nobody.pw_uid, nobody.pw_uid)
    except OSError as e:
        raise quark.PrivilegeError(
            f"-D: cannot drop privileges: {e.strerror}", errno=e.errno
        ) from None
    if os.getresuid() != (nobody.pw_uid,) * 3:
        raise quark.PrivilegeError("-D: privileges were not dropped")


def _run(args: argparse.Namespace, qq: quark.Queue, out: TextIO) -> None:
    if args.v:
        print(f"quark-mon: backend {qq.stats().backend}", file=sys.stderr)
    quiet = args.M
    ppid = args.P
    write = out.write
    render = dump_event
    if args.B:
        # raw records: no process to print, nothing cached
        render = _bypass_json if args.E else _bypass_star
    elif args.E:
        from quark.ecs import EcsEncoder

        encoder = EcsEncoder(qq.lookup)

        def render(ev: quark.Event) -> str:
            return encoder.encode(ev) + "\n"

    if args.D:
        _drop_privileges()
        if args.v:
            print("quark-mon: running as nobody", file=sys.stderr)
    if not args.s and not quiet:
        now = time.monotonic_ns()  # a snapshot is "now", not an event time
        for p in qq.processes():
            if ppid is None or p.ppid == ppid:
                if args.E:
                    write(
                        render(
                            quark.Event(
                                events=quark.EV(0), time=now, process=p
                            )
                        )
                    )
                else:
                    write(dump_process(p))
        out.flush()
    next_stats = time.monotonic() + 1.0
    if quiet:
        print(_stats_header(), file=sys.stderr)
    get_event = qq.get_event
    while True:
        ev = get_event()
        if ev is not None:
            if quiet:
                continue
            proc = ev.process
            if (
                ppid is not None
                and proc is not None
                and proc.ppid is not None
                and proc.ppid != ppid
            ):
                continue
            write(render(ev))
            continue
        if qq.exhausted:
            return
        _check_stop()
        if not quiet:
            out.flush()
        timeout = None
        if quiet:
            tick = time.monotonic()
            if tick >= next_stats:
                print(_stats_line(qq.stats()), file=sys.stderr, flush=True)
                next_stats = tick + 1.0
            timeout = max(0.0, next_stats - time.monotonic())
        qq.block(timeout)


class _Terminate(BaseException):
    """A stop signal: a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it."""


# quark-mon ends cleanly on each of these, whatever disposition it
# inherited: a non-interactive shell starts background jobs with SIGINT
# ignored, and Python would keep that.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_stopping = False
# set by the handler too: code that must not let anything through (a
# callback from C) may swallow the _Terminate it raised; the loop checks
_stop_asked = False


def _check_stop() -> None:
    if _stop_asked:
        raise _Terminate


def _on_stop_signal(signum: int, frame: object) -> None:
    global _stop_asked
    if not _stopping:
        _stop_asked = True
        raise _Terminate
    if signum == signal.SIGINT:
        # a second Ctrl-C while shutting down: leave now
        os._exit(128 + signum)


def _handle_stop_signals() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)


def _check_bypass(
    ap: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    # upstream's exclusions; the queue refuses the flags itself (-e -g -t
    # -k), these are quark-mon's own
    clash = [
        opt
        for opt, on in (("-C", args.C), ("-P", args.P is not None),
                        ("-r", args.r), ("--record", args.record),
                        ("--replay", args.replay))
        if on
    ]  # fmt: skip
    if clash:
        ap.error(f"-B cannot go with {' '.join(clash)}")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.B:
        _check_bypass(ap, args)
    if args.probe and args.replay:
        ap.error("--probe asks the kernel: not with --replay")
    level = (
        logging.WARNING
        if args.v == 0
        else (logging.INFO if args.v == 1 else logging.DEBUG)
    )
    if args.probe and args.v == 0:
        level = logging.ERROR  # the table tells the hooks skipped
    logging.basicConfig(level=level, format="quark-mon: %(name)s: %(message)s")
    global _stopping, _stop_asked
    _stopping = _stop_asked = False
    _handle_stop_signals()
    qq: quark.Queue | None = None
    status = 0
    graph: TextIO | None = None
    try:
        if args.probe:
            doc = probe()
            if args.E:
                print(json.dumps(doc))
            else:
                sys.stdout.write(format_probe(doc))
            return 0
        if args.C:
            # opened now: after -D, nobody may not be allowed to create it
            try:
                graph = open(args.C, "w")  # noqa: SIM115 - closed below
            except OSError as e:
                raise quark.ConfigError(
                    f"-C {args.C}: {e.strerror}", errno=e.errno
                ) from None
        qq = _open(args)
        _check_stop()
        _run(args, qq, sys.stdout)
    except (KeyboardInterrupt, _Terminate):
        pass
    except BrokenPipeError:
        # the reader went away: not an error, but stop writing to it
        sys.stdout = None
    except quark.QuarkError as e:
        print(f"quark-mon: {e}", file=sys.stderr)
        status = 1
    finally:
        _stopping = True
        if qq is not None:
            try:
                if sys.stdout is not None:
                    sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass
            stats = qq.stats()
            if graph is not None:
                from quark.graph import cache_graph

                graph.write(cache_graph(qq.processes()))
            qq.close()
            print(_stats_header(), file=sys.stderr)
            print(_stats_line(stats), file=sys.stderr)
            if stats.skipped_probes:
                print(
                    "skipped probes: " + "; ".join(stats.skipped_probes),
                    file=sys.stderr,
                )
    return status


if __name__ == "__main__":
    sys.exit(main())
