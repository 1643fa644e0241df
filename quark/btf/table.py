"""The shipped offset table and its best-match lookup.

``quark/_data/offsets.json.gz``: ``{"version": 1, "sets": [{target:
offset, ...}, ...], "kernels": {release: set index}}``. Kernels with the
same offsets share one set, which keeps the table small.

Lookup (upstream's rule): an exact release wins; otherwise the entry with
the highest score, the length of the common prefix plus the length of the
common suffix of the two release strings, where a candidate needs at least
one prefix character in common. Ties go to the entry that sorts last (the
newer point release).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from quark.errors import NotSupportedError

__all__ = ["best_match", "load", "lookup", "score"]

FILE = "offsets.json.gz"


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    ref = resources.files("quark._data") / FILE
    try:
        data = ref.read_bytes()
    except FileNotFoundError:
        raise NotSupportedError(
            "no offset table in this installation (quark/_data/"
            f"{FILE}); generate it with kernel_images/gen_offset_table.py"
        ) from None
    table: dict[str, Any] = json.loads(gzip.decompress(data))
    return table


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def score(release: str, candidate: str) -> int:
    """Common prefix + common suffix; 0 without a common prefix."""
    prefix = _common_prefix(release, candidate)
    if prefix == 0:
        return 0
    if prefix == len(release) == len(candidate):
        return 2 * prefix
    suffix = _common_prefix(release[::-1], candidate[::-1])
    return prefix + min(suffix, min(len(release), len(candidate)) - prefix)


def best_match(release: str, candidates: list[str]) -> str | None:
    if release in candidates:
        return release
    best, best_score = None, 0
    for c in sorted(candidates):
        s = score(release, c)
        if s >= best_score and s > 0:
            best, best_score = c, s
    return best


def lookup(release: str) -> tuple[str, dict[str, int]]:
    """(entry name, offsets) of the best entry for ``release``."""
    table = load()
    name = best_match(release, list(table["kernels"]))
    if name is None:
        raise NotSupportedError(
            f"no offset table entry matches kernel {release!r} and it has "
            "no BTF"
        )
    offsets: dict[str, int] = table["sets"][table["kernels"][name]]
    return name, offsets
