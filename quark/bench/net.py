"""``python -m quark.bench net [--json] [--connections N] [--parallel P]``.

A load of N (default 2000) short TCP connections over loopback, P (default
4) at a time: a server process and P client worker processes (so every
pid is real). Each connection is a real exchange: the client sends a
request of a few hundred bytes, the server answers a few KB and closes,
the client reads to EOF and closes. Sizes vary per connection, so a byte
count that belongs to another connection cannot pass.

Measured in one run, alternating ``--rounds`` times (the machine is a
noisy VM: compare the ratios, not the absolute figures):

1. the load alone: connections per second;
2. the same load with ``Queue(QQ.EBPF | QQ.SOCK_CONN)`` open and this
   process draining it: connections per second, this process's CPU time
   (user+sys, getrusage) per connection, and whether every connection was
   seen ESTABLISHED for both ends (the client's pid by CONNECT, the
   server's pid by ACCEPT) and CLOSED for both ends with exactly the bytes
   each side sent and received; plus ``Stats.lost``.

Exits 1 if any connection was missed or anything was lost. Needs root.

Nothing is pinned: the load and the consumer share the machine's CPUs as
they would in production, so the with/without ratio includes the BPF
programs' cost in the load's processes and the consumer's competition for
CPU. The consumer's CPU includes its idle wait for the hold time after the
load (a few wake-ups), not the queue's opening.

The load generator (:func:`run_load`) and the check (:func:`verify`) are
shared with ``tests/system/test_net_load.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median

import quark
from quark import EV, QQ, SockOrigin

__all__ = [
    "Conn",
    "Load",
    "Problem",
    "drain_until",
    "main",
    "run_load",
    "sock_events",
    "verify",
]

# The server: accepts exactly N connections on P threads (one pid), reads
# an 8-byte header (request size, response size) and the rest of the
# request, answers with the response and closes first.
SERVER = r"""
import socket, struct, sys, threading
family, host, n, par = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4])
ls = socket.socket(family, socket.SOCK_STREAM)
ls.bind((host, 0))
ls.listen(256)
ls.settimeout(120)
print(ls.getsockname()[1], flush=True)
lock = threading.Lock()
left = [n]
failed = []
payload = memoryview(b"s" * (1 << 16))

def exact(s, k):
    buf = bytearray()
    while len(buf) < k:
        b = s.recv(k - len(buf))
        if not b:
            raise EOFError(f"short request: {len(buf)} of {k}")
        buf += b
    return bytes(buf)

def serve():
    while True:
        with lock:
            if not left[0] or failed:
                return
            left[0] -= 1
        try:
            s, _ = ls.accept()
            with s:
                req, resp = struct.unpack("!II", exact(s, 8))
                exact(s, req - 8)
                s.sendall(payload[:resp])
        except Exception as e:
            failed.append(repr(e))
            return

threads = [threading.Thread(target=serve) for _ in range(par)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ls.close()
if failed:
    sys.exit("server: " + failed[0])
"""

# A client worker: says "ready", waits for a line on stdin, then makes its
# connections one after the other and writes what it did to a file:
# "start end" (monotonic seconds), then one line per connection:
# "local_port request_size response_size connect_time_ns".
WORKER = r"""
import socket, struct, sys, time
family, host, port, first, count, out = int(sys.argv[1]), sys.argv[2], \
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
payload = b"c" * 1024
lines = []
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
for i in range(first, first + count):
    req = 200 + (i * 37) % 400          # 200..599 bytes
    resp = 2000 + (i * 211) % 6000      # 2000..7999 bytes
    c = socket.socket(family, socket.SOCK_STREAM)
    c.connect((host, port))
    # after connect: a port is only this socket's from then on, so two
    # uses of one port are in the order of these times (taken before
    # connect, a client preempted there could follow the next user)
    t = time.monotonic_ns()
    lport = c.getsockname()[1]
    c.sendall(struct.pack("!II", req, resp) + payload[:req - 8])
    got = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += len(b)
    c.close()
    if got != resp:
        sys.exit(f"worker: response of {got} bytes, expected {resp}")
    lines.append(f"{lport} {req} {resp} {t}")
end = time.monotonic()
with open(out, "w") as f:
    f.write(f"{start} {end}\n" + "\n".join(lines) + "\n")
"""


@dataclass(frozen=True, slots=True)
class Conn:
    """One connection of the load, as its client made it. The client's
    socket is (``client_port``, ``server_port``); the server's the
    reverse. ``request`` bytes went client to server, ``response`` bytes
    back."""

    client_pid: int
    server_pid: int
    client_port: int
    server_port: int
    request: int
    response: int
    connect_ns: int


@dataclass(frozen=True, slots=True)
class Load:
    """What :func:`run_load` did: its connections, and the wall time the
    workers spent making them (first start to last end)."""

    family: int
    host: str
    server_pid: int
    server_port: int
    conns: tuple[Conn, ...]
    seconds: float

    @property
    def rate(self) -> float:
        """Connections per second."""
        return len(self.conns) / self.seconds


def _kill(procs: Iterable[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def run_load(
    n: int = 2000,
    parallel: int = 4,
    family: int = socket.AF_INET,
    *,
    while_running: Callable[[], object] | None = None,
    timeout: float = 120.0,
) -> Load:
    """Make ``n`` short connections, ``parallel`` at a time, from ``parallel``
    worker processes to a server process, over loopback.

    The processes start first and wait; the timed part begins when they
    are all ready. Until every process has exited, ``while_running()`` is
    called over and over (it should return within about 50 ms: a queue's
    ``get_event``/``block(0.05)``); without it, this process sleeps.
    Raises RuntimeError if a process fails or ``timeout`` passes."""
    if n < 1 or parallel < 1:
        raise ValueError("n and parallel must be >= 1")
    parallel = min(parallel, n)
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    py = sys.executable
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="quark-bench-net-") as tmp:
        try:
            server = subprocess.Popen(
                [py, "-c", SERVER, str(family), host, str(n), str(parallel)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(server)
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.strip().isdigit():
                raise RuntimeError("the server did not start")
            port = int(line)
            workers: list[tuple[subprocess.Popen[str], str]] = []
            first = 0
            for k in range(parallel):
                count = n // parallel + (1 if k < n % parallel else 0)
                out = os.path.join(tmp, f"worker{k}")
                w = subprocess.Popen(
                    [py, "-c", WORKER, str(family), host, str(port),
                     str(first), str(count), out],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                procs.append(w)
                workers.append((w, out))
                first += count
            for w, _ in workers:
                assert w.stdout is not None
                if w.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"worker {w.pid} did not start")
            for w, _ in workers:
                assert w.stdin is not None
                w.stdin.write("go\n")
                w.stdin.close()
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the load took more than {timeout}s")
                if while_running is not None:
                    while_running()
                else:
                    time.sleep(0.01)
            bad = [p for p in procs if p.returncode != 0]
            if bad:
                raise RuntimeError(
                    "load process(es) failed: "
                    + ", ".join(f"{p.pid} rc={p.returncode}" for p in bad)
                )
            conns: list[Conn] = []
            starts, ends = [], []
            for w, out in workers:
                with open(out) as f:
                    start, end = map(float, f.readline().split())
                    starts.append(start)
                    ends.append(end)
                    for ln in f:
                        lport, req, resp, t = map(int, ln.split())
                        conns.append(
                            Conn(w.pid, server.pid, lport, port, req, resp, t)
                        )
        finally:
            _kill(procs)
            for p in procs:
                for stream in (p.stdin, p.stdout):
                    if stream is not None:
                        stream.close()
    return Load(
        family, host, server.pid, port, tuple(conns), max(ends) - min(starts)
    )


def sock_events(events: Iterable[quark.Event], port: int) -> list[quark.Event]:
    """The socket events of connections to or from ``port``."""
    return [
        ev
        for ev in events
        if ev.socket is not None
        and (ev.socket.local.port == port or ev.socket.remote.port == port)
    ]


def drain_until(
    q: quark.Queue, out: list[quark.Event], until: Callable[[], bool]
) -> None:
    """Append every socket event of ``q`` to ``out`` until ``until()``,
    blocking at most 50 ms at a time; other events are dropped."""
    while not until():
        ev = q.get_event()
        if ev is None:
            q.block(0.05)
        elif ev.socket is not None:
            out.append(ev)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one end of one connection (``client_port`` is
    the connection's), or, with ``client_port`` None, events for a
    connection the load never made."""

    client_port: int | None
    text: str

    def __str__(self) -> str:
        return self.text


def _check_end(
    name: str,
    pid: int,
    origin: SockOrigin,
    sent: int,
    received: int,
    opened: list[quark.Event],
    closed: list[quark.Event],
) -> list[str]:
    p: list[str] = []
    if len(opened) != 1:
        p.append(f"{name}: {len(opened)} ESTABLISHED events, expected 1")
    for ev in opened[:1]:
        s = ev.socket
        assert s is not None
        evpid = ev.process.pid if ev.process is not None else None
        if evpid != pid or s.pid_origin != pid or s.conn_origin != origin:
            p.append(
                f"{name}: ESTABLISHED for pid {evpid} (pid_origin "
                f"{s.pid_origin}, {s.conn_origin}), expected pid {pid} "
                f"({origin.name})"
            )
    if len(closed) != 1:
        p.append(f"{name}: {len(closed)} CLOSED events, expected 1")
    for ev in closed[:1]:
        s = ev.socket
        assert s is not None
        evpid = ev.process.pid if ev.process is not None else None
        if evpid != pid or s.pid_last_use != pid:
            p.append(
                f"{name}: CLOSED for pid {evpid} (pid_last_use "
                f"{s.pid_last_use}), expected pid {pid}"
            )
        if (s.bytes_sent, s.bytes_received) != (sent, received):
            p.append(
                f"{name}: CLOSED with bytes sent/received "
                f"{s.bytes_sent}/{s.bytes_received}, expected "
                f"{sent}/{received}"
            )
    return p


def verify(load: Load, events: Iterable[quark.Event]) -> list[Problem]:
    """Every problem found, none when everything was seen: for each
    connection of ``load``, its client end must have exactly one
    ESTABLISHED (for the client's pid, CONNECT) and one CLOSED (for the
    client's pid, with the request's bytes sent and the response's
    received), and its server end the same for the server's pid, ACCEPT,
    and the byte counts reversed.

    Connections are told apart by (client port, server port). If the
    kernel handed out a client port twice in the run, the uses of that
    pair get its events in the order they happened."""
    port = load.server_port
    # per (local port, remote port), in the order delivered (time order)
    opened: dict[tuple[int, int], list[quark.Event]] = defaultdict(list)
    closed: dict[tuple[int, int], list[quark.Event]] = defaultdict(list)
    for ev in sock_events(events, port):
        s = ev.socket
        assert s is not None
        key = (s.local.port, s.remote.port)
        if ev.events & EV.SOCK_CONN_ESTABLISHED:
            opened[key].append(ev)
        if ev.events & EV.SOCK_CONN_CLOSED:
            closed[key].append(ev)
    uses: dict[int, list[Conn]] = defaultdict(list)
    for conn in sorted(load.conns, key=lambda c: c.connect_ns):
        uses[conn.client_port].append(conn)
    problems: list[Problem] = []
    for cport, conns in uses.items():
        for client in (True, False):
            key = (cport, port) if client else (port, cport)
            o, c = opened.pop(key, []), closed.pop(key, [])
            for i, conn in enumerate(conns):
                name = (
                    f"{'client' if client else 'server'} end of "
                    f"{cport}->{port}"
                )
                if len(conns) == 1:
                    oi, ci = o, c
                else:  # the i-th use gets the i-th events; the last use
                    # also gets any extra ones
                    stop = None if i == len(conns) - 1 else i + 1
                    oi, ci = o[i:stop], c[i:stop]
                    name += f" (use {i + 1} of {len(conns)})"
                texts = _check_end(
                    name,
                    conn.client_pid if client else conn.server_pid,
                    SockOrigin.CONNECT if client else SockOrigin.ACCEPT,
                    conn.request if client else conn.response,
                    conn.response if client else conn.request,
                    oi,
                    ci,
                )
                problems += (Problem(cport, t) for t in texts)
    for key in sorted(set(opened) | set(closed)):
        problems.append(
            Problem(None, f"events for {key[0]}->{key[1]}, never made")
        )
    return problems


# -- the benchmark ------------------------------------------------------------


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _without(n: int, parallel: int, family: int) -> dict[str, float]:
    c0 = _cpu()
    load = run_load(n, parallel, family)
    return {"conn_per_s": load.rate, "self_cpu_s": _cpu() - c0}


def _with(
    n: int, parallel: int, family: int, hold_time: int
) -> tuple[dict[str, float], list[Problem]]:
    t0 = time.monotonic()
    with quark.Queue(flags=QQ.EBPF | QQ.SOCK_CONN, hold_time=hold_time) as q:
        open_s = time.monotonic() - t0
        events: list[quark.Event] = []
        delivered = 0

        def drain() -> None:
            nonlocal delivered
            ev = q.get_event()
            if ev is None:
                q.block(0.05)
                return
            while ev is not None:
                delivered += 1
                if ev.socket is not None:
                    events.append(ev)
                ev = q.get_event()

        c0 = _cpu()
        load = run_load(n, parallel, family, while_running=drain)
        # every event is in the ring by now: wait out the hold time
        quiet = time.monotonic() + hold_time / 1000 + 0.5
        while time.monotonic() < quiet:
            drain()
        cpu = _cpu() - c0
        stats = q.stats()
    problems = verify(load, events)
    missed = {p.client_port for p in problems if p.client_port is not None}
    return {
        "conn_per_s": load.rate,
        "consumer_cpu_s": cpu,
        "consumer_cpu_us_per_conn": 1e6 * cpu / n,
        "consumer_cpu_us_per_event": 1e6 * cpu / max(delivered, 1),
        "events_delivered": delivered,
        "sock_events_of_load": len(sock_events(events, load.server_port)),
        "missed_conns": len(missed),
        "lost": stats.lost,
        "decode_errors": stats.decode_errors,
        "queue_open_s": open_s,
    }, problems


def _r(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quark.bench net")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hold-time", type=int, default=1000, help="ms")
    ap.add_argument("--ipv6", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("quark.bench net: needs root", file=sys.stderr)
        return 2
    n, par = args.connections, args.parallel
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    run_load(min(n, 200), par, family)  # warm-up, not measured
    offs: list[dict[str, float]] = []
    ons: list[dict[str, float]] = []
    problems: list[Problem] = []
    for _ in range(args.rounds):
        offs.append(_without(n, par, family))
        on, p = _with(n, par, family, args.hold_time)
        ons.append(on)
        problems += p
    ratios = [
        on["conn_per_s"] / off["conn_per_s"]
        for off, on in zip(offs, ons, strict=True)
    ]
    us = median([on["consumer_cpu_us_per_conn"] for on in ons])
    missed = sum(int(on["missed_conns"]) for on in ons)
    lost = sum(int(on["lost"]) for on in ons)
    ok = missed == 0 and lost == 0 and not problems
    result = {
        "benchmark": "net",
        "connections": n,
        "parallel": par,
        "family": "ipv6" if args.ipv6 else "ipv4",
        "hold_time_ms": args.hold_time,
        "rounds": [
            {"without": _r(off), "with": _r(on), "rate_ratio": round(r, 3)}
            for off, on, r in zip(offs, ons, ratios, strict=True)
        ],
        "median_rate_ratio": round(median(ratios), 3),
        "median_consumer_cpu_us_per_conn": round(us, 1),
        "missed_conns": missed,
        "lost": lost,
        "problems": [str(p) for p in problems[:20]],
        "ok": ok,
    }
    if args.json:
        print(json.dumps(result))
        return 0 if ok else 1
    print(
        f"{n} connections over loopback ({result['family']}), {par} at a "
        f"time; {args.rounds} rounds alternating without/with the queue "
        f"(hold_time {args.hold_time} ms)"
    )
    for i, (off, on, r) in enumerate(zip(offs, ons, ratios, strict=True), 1):
        print(
            f"  round {i}: without {off['conn_per_s']:.0f} conn/s, with "
            f"{on['conn_per_s']:.0f} conn/s (ratio {r:.3f}); consumer "
            f"{on['consumer_cpu_us_per_conn']:.0f} us CPU/conn; missed "
            f"{on['missed_conns']:.0f}, lost {on['lost']:.0f}"
        )
    print(
        f"median: with/without {result['median_rate_ratio']}, consumer "
        f"{result['median_consumer_cpu_us_per_conn']} us CPU per connection;"
        f" missed {missed}, lost {lost}: " + ("OK" if ok else "FAIL")
    )
    for problem in problems[:20]:
        print(f"  {problem}")
    return 0 if ok else 1
