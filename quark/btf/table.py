"""The shipped offset table and its best-match lookup.

``quark/_data/offsets.json.gz``: ``{"version": 1, "sets": [{target:
offset, ...}, ...], "kernels": {release: set index}}``. Kernels with the
same offsets share one set, which keeps the table small.

Lookup. A kernel's struct layout depends on its series, its configuration
and its architecture, so an entry may serve only a release of the same
*kind*, read from the release string:

- series: ``major.minor`` (6.1 and 6.12 differ);
- architecture: the release's arch word (``amd64``/``x86_64``,
  ``arm64``/``aarch64``, ...); a release without one takes the machine's
  (``uname -m``) when the caller knows it, and is refused otherwise;
- flavour: the release's other words (``rt``, ``cloud``; none for Debian's
  plain flavour): ``rt`` (PREEMPT_RT) changes ``task_struct``, ``cloud``
  drops options that others keep.

An exact release wins. Otherwise, among the entries of the same kind, the
nearest build: the smallest difference of the point release (6.12.117 vs
6.12.107), then of the build numbers (the Debian ABI, 6.1.0-50 vs
6.1.0-47); a tie goes to the newer. No entry of the same kind means no
entry: a wrong one would read wrong offsets, silently. The refusal names
the kind that was missing and what the table has instead.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from quark.errors import ConfigError, NotSupportedError

__all__ = [
    "Match",
    "Release",
    "best_match",
    "load",
    "lookup",
    "match",
    "parse_release",
]

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


# architecture words in releases, and the name each one means
ARCHES = {
    "amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64",
    "aarch64": "arm64", "i386": "i386", "i686": "i386", "armhf": "arm",
    "armmp": "arm", "ppc64el": "ppc64le", "ppc64le": "ppc64le",
    "s390x": "s390x", "riscv64": "riscv64", "sparc64": "sparc64",
    "loong64": "loongarch64", "mips64el": "mips64",
}  # fmt: skip
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Release:
    """A ``uname -r`` string taken apart."""

    text: str
    series: tuple[int, int]
    arch: str | None
    flavour: tuple[str, ...]
    # point release, then every build number (Debian's ABI, +debN)
    build: tuple[int, ...]

    @property
    def kind(self) -> str:
        flavour = "-".join(self.flavour) or "plain"
        return (
            f"{self.series[0]}.{self.series[1]} {flavour} "
            f"{self.arch or 'unknown-arch'}"
        )


def parse_release(release: str, machine: str | None = None) -> Release:
    """Series, architecture, flavour and build numbers of a release;
    ``machine`` (``uname -m``) stands for the architecture when the
    release names none. ConfigError when it does not start X.Y."""
    m = _VERSION.match(release)
    if m is None:
        raise ConfigError(
            f"{release!r} is not a kernel release (uname -r starts X.Y)"
        )
    build = [int(m.group(3) or 0)]
    arch = None
    rest = release[m.end() :].lower()
    for word in sorted(ARCHES, key=len, reverse=True):  # x86_64 whole
        found = re.search(rf"(?:^|[-+.~_]){word}(?:$|[-+.~_])", rest)
        if found:
            arch = ARCHES[word]
            rest = rest[: found.start()] + "-" + rest[found.end() :]
            break
    flavour = []
    for word in re.split(r"[-+._~]", rest):
        if not word:
            continue
        if any(c.isdigit() for c in word):
            build += [int(n) for n in re.findall(r"\d+", word)]
        else:
            flavour.append(word.lower())
    if arch is None and machine is not None:
        arch = ARCHES.get(machine, machine)
    return Release(
        release,
        (int(m.group(1)), int(m.group(2))),
        arch,
        tuple(flavour),
        tuple(build),
    )


@dataclass(frozen=True)
class Match:
    """Which entry serves a release, and how close it is."""

    entry: str
    exact: bool
    # how far the entry's build is, number by number (0s when exact)
    distance: tuple[int, ...]

    def describe(self, release: str) -> str:
        if self.exact:
            return f"{self.entry}: exact"
        kind = parse_release(self.entry).kind
        return (
            f"{self.entry}: nearest build of the same kind ({kind}) for "
            f"{release}; build numbers {_build_text(release)} vs "
            f"{_build_text(self.entry)}"
        )


def _build_text(release: str) -> str:
    return ".".join(str(n) for n in parse_release(release).build)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return tuple(abs(x - y) for x, y in zip(a, b, strict=True))


def match(
    release: str, candidates: list[str], machine: str | None = None
) -> Match:
    """The entry of ``candidates`` that serves ``release`` (see the
    module's rule); NotSupportedError naming why when none may."""
    if release in candidates:
        return Match(release, True, ())
    want = parse_release(release, machine)
    if want.arch is None:
        raise NotSupportedError(
            f"kernel {release!r} names no architecture and none was given: "
            "no offset table entry can be chosen for it"
        )
    parsed = [parse_release(c) for c in candidates]
    same = [
        c
        for c in parsed
        if (c.series, c.arch, c.flavour)
        == (want.series, want.arch, want.flavour)
    ]
    if not same:
        near = sorted(
            {c.kind for c in parsed if c.series == want.series}
        ) or sorted({c.kind for c in parsed})
        raise NotSupportedError(
            f"no offset table entry of the kind of kernel {release!r} "
            f"({want.kind}): series, flavour and architecture must all "
            "match, as another's struct layout would give wrong offsets; "
            f"the table has {', '.join(near) or 'nothing'}"
        )
    best = min(
        same,
        key=lambda c: (_distance(c.build, want.build), [-n for n in c.build]),
    )
    return Match(best.text, False, _distance(best.build, want.build))


def best_match(
    release: str, candidates: list[str], machine: str | None = None
) -> str | None:
    """The entry's name, or None when no entry may serve ``release``."""
    try:
        return match(release, candidates, machine).entry
    except NotSupportedError:
        return None


def lookup(
    release: str, machine: str | None = None
) -> tuple[str, dict[str, int]]:
    """(entry name, offsets) of the entry serving ``release``."""
    table = load()
    name = match(release, list(table["kernels"]), machine).entry
    offsets: dict[str, int] = table["sets"][table["kernels"][name]]
    return name, offsets
