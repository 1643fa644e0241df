"""QueueAttr.ring_size: its validation and default, and the ring's
high-water mark and falling-behind count (over memory laid out as the
kernel's, see test_ringbuf); what the BPF programs' skipped runs add to
Stats.lost."""

from __future__ import annotations

import mmap

import pytest

import quark
from quark.sys.ringbuf import MAX_DEFAULT, MIN_DEFAULT, PER_CPU, ring_bytes

from .test_ringbuf import PAGE, FakeKernel, padded


@pytest.mark.parametrize("bad", [-PAGE, 1, PAGE + 1, 3 * PAGE, PAGE // 2])
def test_a_bad_ring_size_is_a_config_error(bad: int) -> None:
    with pytest.raises(quark.ConfigError, match="ring_size"):
        ring_bytes(bad, 4)


@pytest.mark.parametrize("bad", [3 * PAGE, 12345, "big", True, 2.0])
def test_queue_refuses_a_bad_ring_size_before_any_backend(bad: object) -> None:
    # refused as the caller's error, not taken for the backend failing (and
    # falling back to another backend)
    with pytest.raises(quark.ConfigError, match="ring_size"):
        quark.Queue(backend="auto", ring_size=bad)


@pytest.mark.parametrize("size", [PAGE, 2 * PAGE, 1 << 20, 64 << 20])
def test_a_power_of_two_of_pages_is_kept(size: int) -> None:
    assert ring_bytes(size, 64) == size


@pytest.mark.parametrize(
    ("ncpus", "want"),
    [(1, 16 << 20), (2, 16 << 20), (4, 16 << 20), (5, 32 << 20),
     (16, 64 << 20), (32, 128 << 20), (96, 128 << 20)],
)  # fmt: skip
def test_the_default_follows_the_cpus(ncpus: int, want: int) -> None:
    got = ring_bytes(0, ncpus)
    assert got == want
    assert got >= min(MAX_DEFAULT, max(MIN_DEFAULT, ncpus * PER_CPU))
    assert got <= MAX_DEFAULT
    assert got % mmap.PAGESIZE == 0 and not got & (got - 1)


def test_the_attribute_defaults_to_sized_from_the_cpus() -> None:
    assert quark.QueueAttr().ring_size == 0


def test_high_water_and_behind_are_noted_at_reads() -> None:
    size = 4 * PAGE
    k = FakeKernel(size=size)
    r = k.reader
    body = bytes(120)
    rec = padded(len(body))
    # a quarter full: no warning
    for _ in range(size // 4 // rec):
        k.write(body)
    r.read(1)
    assert r.behind == 0
    assert r.high_water == (size // 4 // rec) * rec
    r.read(1 << 20)
    # over three quarters: one episode, however many reads see it
    for _ in range(size * 7 // 8 // rec):
        k.write(body)
    assert r.sample() > size * 3 // 4
    r.read(1)
    r.read(1)
    assert r.behind == 1
    assert r.high_water >= size * 3 // 4
    # caught up, then behind again: a second episode
    r.read(1 << 20)
    assert r.sample() == 0
    for _ in range(size * 7 // 8 // rec):
        k.write(body)
    r.read(1)
    assert r.behind == 2


def test_kprobe_shares_the_ring_size_out_among_the_cpus() -> None:
    from quark.backends.kprobe import RING_PAGES, _ring_pages, online_cpus

    n = len(online_cpus())
    assert _ring_pages(0) == RING_PAGES
    assert _ring_pages(PAGE) == 1  # one page per CPU at least
    for size in (1 << 20, 8 << 20):
        pages = _ring_pages(size)
        assert not pages & (pages - 1)
        assert pages * PAGE * n <= size < 2 * pages * PAGE * n
    with pytest.raises(quark.ConfigError, match="ring_size"):
        _ring_pages(3 * PAGE)


# -- what the skipped runs of the BPF programs lose -------------------------
@pytest.mark.parametrize(
    ("primary", "backup", "recovered", "other", "lost"),
    [
        (0, 0, 0, 0, 0),
        # every skipped primary run recovered by its backup: nothing lost
        (9, 0, 9, 0, 0),
        # skipped primary runs that were no event (a kernel thread's
        # fork, which the backup ignores too): nothing lost
        (9, 0, 2, 0, 0),
        # the backup skipped too: lost, at most as many as it skipped
        (9, 3, 2, 0, 3),
        (5, 7, 2, 0, 3),
        # a writing program's skipped runs count as they are
        (0, 0, 0, 4, 4),
        (9, 3, 2, 4, 7),
    ],
)  # fmt: skip
def test_skipped_runs_count_only_what_no_program_wrote(
    primary: int, backup: int, recovered: int, other: int, lost: int
) -> None:
    from quark.backends.ebpf import skipped_losses

    assert skipped_losses(primary, backup, recovered, other) == lost
