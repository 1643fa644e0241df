"""quark-test: run quark's integration cases against the running kernel.

    quark-test [-b | -k] [-v] [-x NAME]... [NAME...]
    quark-test -l

Every case of :mod:`quark.selftest` runs per backend (``-b``: EBPF only,
``-k``: KPROBE only), each in a forked child so that one case cannot
disturb another, with a time limit and a check that it leaks no file
descriptor. The exit status is 0 only when every case passed.

A case that does not apply here (``NotApplicable``) is reported n/a. A
backend that reports itself unsupported is a skip on an ordinary host, but
a FAILURE with QUARK_TEST_STRICT=1 (set inside the qemu guests, where every
backend must work) — a skip must never pass for a success there.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

import quark
from quark.backends import get_backend_class
from quark.selftest import NotApplicable, load_cases

__all__ = ["main"]

PASS, FAIL, NA, UNSUPPORTED = 0, 1, 2, 3
CASE_TIMEOUT = 180
#: QUARK_CHAOS_FULL=1's full counts (a 2,000-process storm, 100 KPROBE
#: open/close cycles) take several times that in a TCG guest
FULL_CASE_TIMEOUT = 1500


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _offsets_source() -> str:
    """Where the KPROBE backend's struct offsets come from here."""
    from quark.btf import kernel_offsets

    try:
        return kernel_offsets().source
    except quark.QuarkError as e:
        return f"nowhere ({e})"


def _child(name: str, backend: str) -> int:
    cases = load_cases()
    before = _fds()
    try:
        cases[name].func(backend)
    except NotApplicable as e:
        print(f"  n/a: {e}", file=sys.stderr)
        return NA
    except quark.NotSupportedError as e:
        print(f"  unsupported: {e}", file=sys.stderr)
        return UNSUPPORTED
    except BaseException:
        traceback.print_exc()
        return FAIL
    leaked = _fds() - before
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    if leaked:
        print(f"  FD LEAK: {sorted(leaked)}", file=sys.stderr)
        return FAIL
    return PASS


def _run_one(name: str, backend: str) -> tuple[int, float]:
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        rc = FAIL
        try:
            full = os.environ.get("QUARK_CHAOS_FULL") == "1"
            signal.alarm(FULL_CASE_TIMEOUT if full else CASE_TIMEOUT)
            rc = _child(name, backend)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - t0
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        print(
            f"  killed by signal {sig}"
            + (" (timeout)" if sig == signal.SIGALRM else ""),
            file=sys.stderr,
        )
        return FAIL, took
    return os.WEXITSTATUS(status), took


def _warm(backends: list[str]) -> None:
    """Import the backends here, once: every case runs in a forked child,
    which then starts with them, instead of importing (and, on a read-only
    root with no bytecode cache, compiling) them per case. In a qemu guest
    without KVM that is seconds per case."""
    for be in backends:
        try:
            get_backend_class(be)
        except ImportError:
            pass  # each case reports it


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="quark-test",
        description="Run quark's integration cases on this kernel.",
    )
    ap.add_argument("-b", action="store_true", help="EBPF backend only")
    ap.add_argument("-k", action="store_true", help="KPROBE backend only")
    ap.add_argument("-l", action="store_true", help="list the cases")
    ap.add_argument(
        "-x",
        action="append",
        default=[],
        metavar="NAME",
        help="exclude a case (repeatable)",
    )
    ap.add_argument("-v", action="store_true", help="show each case's doc")
    ap.add_argument("names", nargs="*", help="cases to run (default: all)")
    args = ap.parse_args(argv)
    cases = load_cases()
    if args.l:
        for name, c in cases.items():
            print(
                f"{name:<20} {','.join(c.backends):<12} "
                f"{c.doc.splitlines()[0] if c.doc else ''}"
            )
        return 0
    unknown = [n for n in [*args.names, *args.x] if n not in cases]
    if unknown:
        print(
            f"quark-test: unknown case(s): {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    backends = ["ebpf", "kprobe"]
    if args.b and not args.k:
        backends = ["ebpf"]
    elif args.k and not args.b:
        backends = ["kprobe"]
    strict = os.environ.get("QUARK_TEST_STRICT") == "1"
    names = [n for n in (args.names or cases) if n not in args.x]
    passed = failed = skipped = 0
    print(
        f"quark-test: kernel {os.uname().release}, backends "
        f"{','.join(backends)}{', strict' if strict else ''}",
        flush=True,
    )
    if "kprobe" in backends:
        print(f"quark-test: kprobe offsets from {_offsets_source()}")
    _warm(backends)
    for name in names:
        for be in backends:
            if be not in cases[name].backends:
                continue
            rc, took = _run_one(name, be)
            if rc == PASS:
                verdict = "pass"
                passed += 1
            elif rc == NA:
                verdict = "n/a"
                skipped += 1
            elif rc == UNSUPPORTED and not strict:
                verdict = "skip (unsupported here)"
                skipped += 1
            else:
                verdict = "FAIL"
                failed += 1
            print(f"{name:<20} {be:<7} {verdict} ({took:.1f}s)", flush=True)
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
