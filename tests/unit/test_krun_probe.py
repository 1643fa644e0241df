"""The matrix's probe: quark-mon --probe's document read from a boot's
console, without disturbing the verdicts of the cases around it."""

from __future__ import annotations

import json
import subprocess

import krun

DOC = {
    "kernel": "6.1.0-test",
    "backends": {
        "ebpf": {"SOCK_CONN": None, "MODULE_LOAD": "no module_load hook"},
        "kprobe": {"SOCK_CONN": "needs BPF", "MODULE_LOAD": "needs BPF"},
    },
    "skipped_probes": {"ebpf": [], "kprobe": []},
}


def _console(*lines: str) -> list[bytes]:
    return [ln.encode() for ln in lines]


def _boot(status: int, lines: list[bytes]) -> krun.Outcome:
    o = krun.Outcome(status, "" if status == 0 else "failed")
    o.lines = lines
    return o


CONSOLE = _console(
    "quark-init: 6.1.0-test ready",
    "quark-mon: quark.ebpf: some warning on stderr",
    "quark-probe: " + json.dumps(DOC),
    "t_a                  ebpf    pass (1.5s)",
    "t_a                  kprobe  pass (2.0s)",
    "2 passed, 0 failed",
    "quark-init: exit 0",
)


def test_the_document_is_read_from_its_line() -> None:
    assert krun._probe_doc(CONSOLE) == DOC
    # the serial console may end a line with a carriage return
    assert krun._probe_doc([b"quark-probe: " + json.dumps(DOC).encode()
                            + b"\r"]) == DOC  # fmt: skip


def test_a_probe_that_printed_nothing_or_garbage_says_so() -> None:
    assert (
        "printed nothing"
        in krun._probe_doc(_console("t_a ebpf pass"))["error"]
    )
    cut = "quark-probe: " + json.dumps(DOC)[:40]
    assert "does not parse" in krun._probe_doc(_console(cut))["error"]
    assert (
        "not its document"
        in krun._probe_doc(_console("quark-probe: 1"))["error"]
    )


def test_the_probe_lines_do_not_disturb_the_verdicts() -> None:
    expected = {"ebpf": 1, "kprobe": 1}
    v = krun._verdicts(_boot(0, CONSOLE), ["ebpf", "kprobe"], expected)
    got = {be: (ok, x.seconds, x.failed) for be, (ok, x) in v.items()}
    assert got == {"ebpf": (True, 1.5, []), "kprobe": (True, 2.0, [])}


def test_the_guest_command_probes_then_becomes_quark_test() -> None:
    test = krun._quark_test(["-b", "-k"])
    argv = krun._with_probe(test)
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2]
    probe, _, rest = script.partition(";")
    assert "quark.cli.mon --probe -E" in probe
    assert "sed 's/^/quark-probe: /'" in probe
    # the boot's status is quark-test's own
    assert rest.strip().startswith("exec ") and rest.strip().endswith(
        "-m quark.cli.test -b -k"
    )


def test_the_shell_prefixes_every_line_of_the_document() -> None:
    # what the guest's shell does, on this host, with a stand-in for
    # quark-mon: the line parses back to the document
    script = krun._with_probe(["true"])[2].replace(
        krun.shlex.join(krun._probe_argv()),
        krun.shlex.join(["echo", json.dumps(DOC)]),
    )
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True,
                         check=True).stdout  # fmt: skip
    assert krun._probe_doc(out.splitlines()) == DOC


def test_each_kernel_gets_its_table_under_its_heading() -> None:
    text = krun._probe_tables(
        {"6.1": DOC, "7.2": {"error": "quark-mon --probe printed nothing"}}
    )
    first, second = text.split("== event kinds on 7.2 (quark-mon --probe)")
    assert first.startswith("== event kinds on 6.1 (quark-mon --probe)\n")
    assert "kernel 6.1.0-test" in first
    assert "SOCK_CONN    live  no" in first
    assert "ebpf MODULE_LOAD: no module_load hook" in first
    assert "no table: quark-mon --probe printed nothing" in second
