"""quark-mon: print the system's process events as they come.

Built on quark's public API only, so it doubles as an example of it.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
import time
from typing import TextIO

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
operations and -H shared memory, which are off unless asked for.
"""

EPILOG = """\
statistics columns: insertions removals aggregations non-aggregations lost
garbage-collections, then the backend.
"""


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


def _open(args: argparse.Namespace) -> quark.Queue:
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
    kw: dict[str, object] = {"flags": flags}
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
    if args.E:
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


class _Terminate(Exception):
    pass


# quark-mon ends cleanly on each of these, whatever disposition it
# inherited: a non-interactive shell starts background jobs with SIGINT
# ignored, and Python would keep that.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_stopping = False


def _on_stop_signal(signum: int, frame: object) -> None:
    if not _stopping:
        raise _Terminate
    if signum == signal.SIGINT:
        # a second Ctrl-C while shutting down: leave now
        os._exit(128 + signum)


def _handle_stop_signals() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = (
        logging.WARNING
        if args.v == 0
        else (logging.INFO if args.v == 1 else logging.DEBUG)
    )
    logging.basicConfig(level=level, format="quark-mon: %(name)s: %(message)s")
    global _stopping
    _stopping = False
    _handle_stop_signals()
    qq: quark.Queue | None = None
    status = 0
    graph: TextIO | None = None
    try:
        if args.C:
            # opened now: after -D, nobody may not be allowed to create it
            try:
                graph = open(args.C, "w")  # noqa: SIM115 - closed below
            except OSError as e:
                raise quark.ConfigError(
                    f"-C {args.C}: {e.strerror}", errno=e.errno
                ) from None
        qq = _open(args)
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
