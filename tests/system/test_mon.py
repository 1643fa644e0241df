"""quark-mon itself, on the real kernel (root, EBPF)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from quark.backends import KIND_BITS
from quark.backends.ebpf import object_path
from quark.backends.ebpf_layout import object_layout

from .conftest import require, why_not

pytestmark = [pytest.mark.root, pytest.mark.ebpf, pytest.mark.slow]
MON = [sys.executable, "-m", "quark.cli.mon"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


@pytest.fixture(autouse=True)
def _needs_ebpf() -> None:
    require("ebpf")


def _start(*args: str) -> subprocess.Popen[str]:
    # other tests run processes whose argv is not UTF-8, and the dump
    # prints argv byte for byte: decode the way quark-mon encodes
    mon = subprocess.Popen(
        [*MON, "-v", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="surrogateescape",
    )  # fmt: skip
    _wait_for(mon, "quark-mon: backend ebpf")  # printed once open
    return mon


def _wait_for(mon: subprocess.Popen[str], text: str) -> None:
    assert mon.stderr is not None
    seen = []
    for _ in range(50):
        line = mon.stderr.readline()
        seen.append(line)
        if text in line or not line:
            break
    assert text in seen[-1], seen


def _stop(mon: subprocess.Popen[str]) -> tuple[str, str, int]:
    time.sleep(2.0)  # the hold time, and a poll
    mon.send_signal(signal.SIGINT)
    out, err = mon.communicate(timeout=20)
    return out, err, mon.returncode


@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
def test_a_background_job_stops_on_a_signal(sig: str) -> None:
    """Started in the background by a non-interactive shell, which starts it
    with SIGINT ignored, quark-mon still ends cleanly on SIGINT, SIGTERM
    and SIGHUP: status 0 and the statistics on stderr."""
    probe = subprocess.run(
        ["/bin/sh", "-c", f"{sys.executable} -c 'import signal; "
         "print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)' & wait"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "True"  # what a background job inherits
    with tempfile.TemporaryDirectory() as d:
        err_path = os.path.join(d, "err")
        script = (
            f"{' '.join(MON)} -M -s 2>{err_path} >/dev/null & "
            "echo $!; wait $!; echo status $?"
        )
        sh = subprocess.Popen(["/bin/sh", "-c", script],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert sh.stdout is not None
        pid = int(sh.stdout.readline())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with open(err_path) as f:  # the shell creates it
                        if "inserts" in f.read():  # the -M header: open
                            break
                except FileNotFoundError:
                    pass
                time.sleep(0.1)
            os.kill(pid, getattr(signal, f"SIG{sig}"))
            out, _ = sh.communicate(timeout=30)
        finally:  # never leave a queue open behind a failed test
            if sh.poll() is None:
                os.kill(pid, signal.SIGKILL)
                sh.wait()
        assert out.splitlines()[-1] == "status 0", out
        with open(err_path) as f:
            err = f.read()
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1].split()[0].isdigit(), err


def test_ecs_document_of_a_known_command() -> None:
    mon = _start("-E", "-s")
    with tempfile.TemporaryDirectory() as d:
        cwd = os.path.realpath(d)
        argv = ["/bin/sh", "-c", "exit 7", "quark test arg"]
        child = subprocess.Popen(argv, cwd=cwd)
        assert child.wait() == 7
        out, err, rc = _stop(mon)
    assert rc == 0, err
    docs = [json.loads(line) for line in out.splitlines()]  # every line
    mine = [d for d in docs if d.get("process", {}).get("pid") == child.pid]
    assert len(mine) == 1, mine
    doc = mine[0]
    assert RFC3339.match(doc["@timestamp"])
    assert doc["event"] == {
        "kind": "event", "category": ["process"], "type": ["start", "end"],
        "action": "process-forked-executed-exited",
    }  # fmt: skip
    p = doc["process"]
    assert p["name"] == "sh"
    assert p["executable"] == os.path.realpath("/bin/sh")
    assert p["args"] == argv and p["args_count"] == 4
    assert p["command_line"] == " ".join(argv)
    assert p["working_directory"] == cwd
    assert p["exit_code"] == 7
    assert isinstance(p["exit_code"], int)
    assert p["parent"]["pid"] == os.getpid()
    assert p["user"]["id"] == str(os.geteuid())
    assert p["real_user"]["id"] == str(os.getuid())
    assert p["saved_group"]["id"] == str(os.getresgid()[2])
    assert len(p["entity_id"]) == 16
    assert RFC3339.match(p["start"]) and RFC3339.match(p["end"])
    assert p["start"] <= p["end"]
    assert doc["host"]["os"]["type"] == "linux"


def test_drop_privileges_keeps_delivering() -> None:
    mon = _start("-D", "-s")
    _wait_for(mon, "running as nobody")
    with open(f"/proc/{mon.pid}/status") as f:
        uids = next(ln for ln in f if ln.startswith("Uid:")).split()[1:]
    assert set(uids) == {"65534"}, uids
    child = subprocess.Popen(["/bin/true", "after-drop"])
    child.wait()
    out, err, rc = _stop(mon)
    assert rc == 0, err
    assert f"->{child.pid} (FORK+EXEC+EXIT)" in out


def test_record_then_replay_gives_the_same_event() -> None:
    with tempfile.TemporaryDirectory() as d:
        rec = os.path.join(d, "run.jsonl")
        mon = _start("-s", "--record", rec)
        child = subprocess.Popen(["/bin/true", "recorded"])
        child.wait()
        out, err, rc = _stop(mon)
        assert rc == 0, err
        r = subprocess.run(
            [*MON, "-s", "--replay", rec], capture_output=True, text=True,
            errors="surrogateescape", timeout=60,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    block = f"->{child.pid} (FORK+EXEC+EXIT)"
    assert block in out and block in r.stdout
    live = out.split(block, 1)[1].split("->", 1)[0]
    replayed = r.stdout.split(block, 1)[1].split("->", 1)[0]
    assert live == replayed


def test_ctrl_c_in_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """tmux runs quark-mon in a real terminal; Ctrl-C ends it cleanly."""
    session = f"quark{os.getpid()}"
    err, rcfile = tmp_path / "err", tmp_path / "rc"
    cmd = (f"{sys.executable} -m quark.cli.mon -s 2>{err}; "
           f"echo $? > {rcfile}")  # fmt: skip
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160",
                    "-y", "50", cmd], check=True)  # fmt: skip
    try:
        time.sleep(2.5)  # open
        child = subprocess.Popen(["/bin/true", "in-tmux"])
        child.wait()
        deadline = time.monotonic() + 10
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session, "-S", "-2000"],
                capture_output=True, text=True, check=True, errors="replace",
            ).stdout  # fmt: skip
            if "in-tmux" in screen:
                break
            time.sleep(0.3)
        assert "in-tmux" in screen, screen[-2000:]
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"],
                       check=True)  # fmt: skip
        deadline = time.monotonic() + 15
        while not rcfile.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rcfile.read_text().strip() == "0"
        stats = err.read_text()
        assert "inserts" in stats and "ebpf" in stats
        assert "Traceback" not in stats
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session],
                       capture_output=True)  # fmt: skip


def test_probe_prints_every_kind_for_each_backend() -> None:
    r = subprocess.run(
        [*MON, "--probe"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"kernel {os.uname().release}"
    assert lines[1].split() == ["kind", "ebpf", "kprobe"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:11]}
    assert list(rows) == [k.name for k in KIND_BITS]
    for kind in ("SOCK_CONN", "DNS", "FILE", "SHM", "BYPASS"):
        assert rows[kind][0] == "live", (kind, r.stdout)
    why = r.stdout.split("why not:\n", 1)[1]
    if why_not("kprobe") is not None:
        # the host has no kprobes: KPROBE cannot open, and says why
        assert all(cells[1] == "no" for cells in rows.values())
        assert "kprobe (every kind): " in why
        assert "kprobe_events" in why.split("kprobe (every kind): ")[1]


def test_probe_json_is_one_document() -> None:
    r = subprocess.run(
        [*MON, "--probe", "-E"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # the whole output: one document
    assert doc["kernel"] == os.uname().release
    assert list(doc["backends"]) == ["ebpf", "kprobe"]
    names = [k.name for k in KIND_BITS]
    for caps in doc["backends"].values():
        assert list(caps) == names
        assert all(v is None or isinstance(v, str) for v in caps.values())
    ebpf = doc["backends"]["ebpf"]
    for kind in ("SOCK_CONN", "DNS", "FILE", "SHM", "BYPASS"):
        assert ebpf[kind] is None, (kind, ebpf[kind])
    if why_not("kprobe") is not None:
        kprobe = doc["backends"]["kprobe"]
        assert all("kprobe_events" in why for why in kprobe.values())
    assert set(doc["skipped_probes"]) == {"ebpf", "kprobe"}


def test_bypass_prints_a_star_per_record() -> None:
    mon = _start("-B")
    child = subprocess.Popen(["/bin/true", "bypassed"])
    child.wait()
    out, err, rc = _stop(mon)
    assert rc == 0, err
    assert out and set(out) == {"*"}, out[:200]


def test_bypass_json_gives_the_records_bytes() -> None:
    mon = _start("-B", "-E")
    child = subprocess.Popen(["/bin/true", "bypassed"])
    child.wait()
    out, err, rc = _stop(mon)
    assert rc == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs
    # every record begins as struct q_event does (kind, size, time, pid)
    at = object_layout(object_path()).record("q_event").offsets
    pids = set()
    for doc in docs:
        assert set(doc) == {"time", "bytes"}
        data = bytes.fromhex(doc["bytes"])
        t = data[at["time"] : at["time"] + 8]
        assert int.from_bytes(t, "little") == doc["time"]
        pids.add(int.from_bytes(data[at["pid"] : at["pid"] + 4], "little"))
    assert child.pid in pids


def test_bypass_refuses_options_upstream_refuses() -> None:
    r = subprocess.run([*MON, "-B", "-P", "1"], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "-B cannot go with -P" in r.stderr
    r = subprocess.run([*MON, "-B", "-g"], capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 1 and "MIN_AGG" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
