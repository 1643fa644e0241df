"""The shipped offset table: every entry complete, and a sample of each
flavour and architecture checked against clang's offsetof over that
kernel's own BTF (tests/btf_oracle.py).

The sample's BTF is fetched once through the system's configured Debian
source and kept in the quark cache (some 5 MB a kernel; the package is
not kept), so a CI machine pays the download once, then only the oracle's
bpftool + clang run (a few seconds a kernel)."""

from __future__ import annotations

import pathlib
import sys

import pytest

from quark.btf import ONE_OF, TARGETS, kernel_offsets, load_btf_bytes
from quark.btf import table as offset_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import btf_oracle  # noqa: E402

from kernel_images import gen_offset_table as gen  # noqa: E402

KERNELS = sorted(offset_table.load()["kernels"])


def _flavour(release: str) -> str:
    r = offset_table.parse_release(release)
    return "-".join(r.flavour) or "plain"


def sample() -> list[str]:
    """One entry of each flavour and architecture of the generator, each
    from another series where the table has it (flavour i takes series
    i mod n), the newest build of it."""
    series = sorted({offset_table.parse_release(k).series for k in KERNELS})
    kinds = sorted(
        {(_flavour(k), offset_table.parse_release(k).arch) for k in KERNELS}
    )
    out = []
    for i, (flavour, arch) in enumerate(kinds):
        same = [
            k
            for k in KERNELS
            if (_flavour(k), offset_table.parse_release(k).arch)
            == (flavour, arch)
        ]
        want = series[i % len(series)]
        of_series = [
            k for k in same if offset_table.parse_release(k).series == want
        ]
        pool = of_series or same
        out.append(
            max(pool, key=lambda k: offset_table.parse_release(k).build)
        )
    return out


def test_the_table_covers_every_flavour_and_architecture() -> None:
    kinds = {
        (_flavour(k), offset_table.parse_release(k).arch) for k in KERNELS
    }
    for flavour in gen.FLAVOURS:
        r = offset_table.parse_release(f"6.1.0-1-{flavour}")
        assert (_flavour(r.text), r.arch) in kinds, flavour
    series = {offset_table.parse_release(k).series for k in KERNELS}
    assert {(5, 10), (6, 1), (6, 12)} <= series
    assert any(s[0] == 7 for s in series)


@pytest.mark.parametrize("release", KERNELS)
def test_every_entry_resolves_every_target(release: str) -> None:
    t = kernel_offsets(ignore_btf=True, release=release)
    assert t.source == f"table:{release}"
    # every target, one of each ONE_OF pair
    alternatives = {t for pair in ONE_OF for t in pair}
    assert set(TARGETS) - alternatives <= set(t)
    for pair in ONE_OF:
        assert sum(p in t for p in pair) >= 1, pair


@pytest.mark.slow
@pytest.mark.parametrize("release", sample())
def test_sample_agrees_with_clang_over_its_btf(release: str) -> None:
    assert btf_oracle.available(), "bpftool and clang are set-up tools"
    raw = gen.cached_btf(release)
    btf = load_btf_bytes(raw, release)
    ours = btf.offsets()
    name, table = offset_table.lookup(release)
    assert name == release
    assert table == ours
    assert btf_oracle.oracle_offsets(raw, btf, list(ours)) == ours
