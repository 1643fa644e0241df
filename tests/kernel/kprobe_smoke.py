"""Run inside a guest (tests/kernel/test_kprobe_plumbing.py): a kprobe on
wake_up_new_task with a fetch argument from quark.btf, read through perf
rings on every CPU, must see a forked child's tgid; a stale quark probe of a
dead process is removed at open; ours are removed at close."""

from __future__ import annotations

import os
import subprocess
import sys

from quark.backends.kprobe_decode import SAMPLE
from quark.backends.tracefs import KprobeEvents, ensure_mounted, find_tracefs
from quark.backends.tracefs_format import parse_format
from quark.btf import kernel_offsets
from quark.sys import perf


def main() -> int:
    ensure_mounted("/sys/kernel/tracing", "tracefs")
    root = find_tracefs()
    fd = os.open(
        os.path.join(root, "kprobe_events"), os.O_WRONLY | os.O_APPEND
    )
    os.write(fd, b"p:quark_999999/stale wake_up_new_task\n")
    os.close(fd)
    probes = KprobeEvents(root)
    assert probes.removed_stale == 1, probes.lines()
    table = kernel_offsets(["task_struct.tgid"])
    off = table["task_struct.tgid"]
    if os.environ.get("QUARK_IGNORE_BTF") == "1":
        assert table.source.startswith("table:"), table.source
    eid = probes.add("fork", "wake_up_new_task", f"tgid=+{off}(%di):s32")
    fmt = parse_format(probes.format("fork"))
    assert fmt.id == eid, (fmt.id, eid)
    fmt.compile(("tgid",))
    fds, rings = [], []
    try:
        for cpu in range(os.cpu_count() or 1):
            attr = perf.PerfEventAttr(
                type=perf.PERF_TYPE_TRACEPOINT, config=eid, sample_period=1,
                sample_type=perf.PERF_SAMPLE_TID | perf.PERF_SAMPLE_TIME
                | perf.PERF_SAMPLE_CPU | perf.PERF_SAMPLE_RAW,
                flags=perf.ATTR_DISABLED | perf.ATTR_SAMPLE_ID_ALL,
            )  # fmt: skip
            fd = perf.perf_event_open(attr, -1, cpu)
            fds.append(fd)
            _, ring = perf.map_ring(fd, 8)
            rings.append(ring)
            perf.ioctl(fd, perf.PERF_EVENT_IOC_ENABLE)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        seen = []
        for ring in rings:
            for rtype, _, body in ring.read(1000):
                if rtype != perf.PERF_RECORD_SAMPLE:
                    continue
                raw_size = SAMPLE.unpack_from(body)[-1]
                raw = body[SAMPLE.size : SAMPLE.size + raw_size]
                seen.append(fmt.unpack(raw)["tgid"])
        assert child.pid in seen, (child.pid, seen)
    finally:
        for ring in rings:
            ring.close()  # its views into the mapping, then the mapping
        for fd in fds:
            os.close(fd)
        probes.close()
    assert not [ln for ln in probes.lines() if "quark_" in ln], probes.lines()
    print(
        f"kprobe plumbing ok ({table.source}):",
        child.pid,
        "seen in",
        len(seen),
        "samples",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
