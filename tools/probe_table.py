"""The README's table of what each kernel can serve, from the documents
``python krun.py --matrix --probe-out FILE`` writes (one ``quark-mon
--probe -E`` document per kernel).

    python tools/probe_table.py FILE [--backend ebpf]

Prints a Markdown table: a row per kind bit, a column per kernel, "live"
or a note number; each distinct reason is a numbered note below it, then
the optional hooks each kernel skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def table(docs: dict[str, Any], backend: str) -> str:
    kernels = list(docs)
    kinds: list[str] = []
    for doc in docs.values():
        for kind in doc.get("backends", {}).get(backend, {}):
            if kind not in kinds:
                kinds.append(kind)
    notes: list[str] = []

    def cell(doc: dict[str, Any], kind: str) -> str:
        if "error" in doc:
            why = f"the probe failed: {doc['error']}"
        else:
            caps = doc.get("backends", {}).get(backend, {})
            if kind not in caps:
                why = f"{backend} did not answer for it"
            elif caps[kind] is None:
                return "live"
            else:
                why = str(caps[kind])
        if why not in notes:
            notes.append(why)
        return f"no ({notes.index(why) + 1})"

    rows = [
        "| kind | " + " | ".join(kernels) + " |",
        "|---|" + "---|" * len(kernels),
    ]
    for kind in kinds:
        cells = [cell(docs[k], kind) for k in kernels]
        rows.append(f"| `QQ.{kind}` | " + " | ".join(cells) + " |")
    rows.append("")
    rows += [f"({i}) {why}" for i, why in enumerate(notes, 1)]
    skipped = [
        (k, docs[k].get("skipped_probes", {}).get(backend, []))
        for k in kernels
    ]
    if any(hooks for _, hooks in skipped):
        rows += ["", "Optional hooks skipped (the kind is live without them):"]
        for k, hooks in skipped:
            names = sorted({h.split(":", 1)[0] for h in hooks})
            rows.append(f"- {k}: " + (", ".join(names) or "none"))
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="what krun.py --matrix --probe-out wrote")
    ap.add_argument("--backend", default="ebpf")
    args = ap.parse_args(argv)
    with open(args.file) as f:
        docs = json.load(f)["kernels"]
    sys.stdout.write(table(docs, args.backend))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
