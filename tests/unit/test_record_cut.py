"""A recording cut anywhere (its writer SIGKILLed, its disk full) replays
up to its last whole line and says where it was cut: a counted, logged
condition, never an exception. And a recording whose writes fail stops,
leaving the queue running."""

from __future__ import annotations

import logging
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quark
from quark.raw.record import StreamReader, StreamWriter
from tests.golden import deliver

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "raw"
STREAM = (DATA / "basic.jsonl").read_bytes()
HEADER_END = STREAM.index(b"\n") + 1


def _items(path: pathlib.Path) -> tuple[list[str], str | None]:
    r = StreamReader(path)
    try:
        return [repr(x) for x in r], r.cut
    finally:
        r.close()


def _expected(cut_at: int) -> tuple[bytes, bool]:
    """The whole lines of STREAM[:cut_at] (a last line that lacks only its
    newline is whole), and whether a partial line is left over."""
    data = STREAM[:cut_at]
    whole = data[: data.rfind(b"\n") + 1]
    rest = data[len(whole) :]
    if rest and STREAM[len(whole) : len(whole) + len(rest) + 1] == (
        rest + b"\n"
    ):
        return data + b"\n", False  # all but the newline
    return whole, bool(rest)


def test_every_cut_reads_its_whole_lines_and_names_the_cut(
    tmp_path: pathlib.Path,
) -> None:
    """At the reader: every byte offset of the header and the first record,
    and those around every line's end and at its middle."""
    ends = [i for i, b in enumerate(STREAM) if b == ord("\n")]
    second = ends[1] + 2
    offsets = set(range(second))
    for start, end in zip([0, *ends], ends, strict=False):
        offsets.update((end - 1, end, end + 1, end + 2, (start + end) // 2))
    cut_file, clean_file = tmp_path / "cut.jsonl", tmp_path / "clean.jsonl"
    for at in sorted(o for o in offsets if o <= len(STREAM)):
        cut_file.write_bytes(STREAM[:at])
        if at == 0:
            with pytest.raises(quark.DecodeError, match="empty file"):
                StreamReader(cut_file)
            continue
        if at < HEADER_END - 1:
            with pytest.raises(quark.DecodeError, match="cut in its header"):
                StreamReader(cut_file)
            continue
        clean, was_cut = _expected(at)
        clean_file.write_bytes(clean)
        items, cut = _items(cut_file)
        assert items == _items(clean_file)[0], at
        if not was_cut:
            assert cut is None, at
            continue
        assert cut is not None, at
        line = clean.count(b"\n") + 1
        assert f"cut.jsonl:{line}: the stream is cut here" in cut, (at, cut)
        assert f"starts at byte {len(clean)})" in cut, (at, cut)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(at=st.integers(min_value=HEADER_END, max_value=len(STREAM)))
def test_a_cut_stream_replays_like_its_whole_lines(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, at: int
) -> None:
    """Through the queue (errors="raise", the default): the events of a cut
    stream are those of its whole lines; the cut is counted and logged."""
    cut_file, clean_file = tmp_path / "cut.jsonl", tmp_path / "clean.jsonl"
    cut_file.write_bytes(STREAM[:at])
    clean, was_cut = _expected(at)
    clean_file.write_bytes(clean)
    got = deliver(cut_file).splitlines()
    want = deliver(clean_file).splitlines()
    assert got[:-1] == want[:-1]  # the events
    with quark.Queue(backend="replay", path=str(clean_file)) as q:
        list(q)
        clean_stats = q.stats()
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="quark.replay"),
        quark.Queue(backend="replay", path=str(cut_file)) as q,
    ):
        list(q)
        stats = q.stats()
    cuts = [r.getMessage() for r in caplog.records if "is cut" in r.message]
    if was_cut:
        assert stats.decode_errors == 1
        assert stats.lost == clean_stats.lost + 1
        assert len(cuts) == 1 and "cut.jsonl:" in cuts[0]
    else:
        assert stats.decode_errors == 0 and stats.lost == clean_stats.lost
        assert cuts == []


def test_a_cut_in_the_middle_is_not_a_cut(tmp_path: pathlib.Path) -> None:
    """Only the last line can be cut: a partial line followed by others is
    malformed, and raised as before."""
    lines = STREAM.split(b"\n")
    lines[3] = lines[3][:20]
    p = tmp_path / "s.jsonl"
    p.write_bytes(b"\n".join(lines))
    with (
        quark.Queue(backend="replay", path=str(p)) as q,
        pytest.raises(quark.DecodeError, match=r"s\.jsonl:4: not JSON"),
    ):
        list(q)


def test_a_failed_write_stops_the_recording_not_the_queue(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/dev/full fails every write with ENOSPC: the replay still delivers
    every event, the recorder says why it stopped, once."""
    want = deliver(DATA / "basic.jsonl")
    with (
        caplog.at_level(logging.ERROR, logger="quark.record"),
        quark.Queue(
            backend="replay", path=str(DATA / "basic.jsonl"),
            record="/dev/full",
        ) as q,
    ):  # fmt: skip
        n = len(list(q))
    assert n == len(want.splitlines()) - 1
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1, errors
    assert "recording to /dev/full stopped: No space left" in errors[0]


def test_a_writer_says_why_it_stopped() -> None:
    w = StreamWriter("/dev/full")
    for i in range(2000):  # more than a buffer: a write reaches the disk
        w.now(i)
    w.close()
    assert w.error is not None and "No space left on device" in w.error


def test_an_unwritable_record_path_is_a_config_error(
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(
        quark.ConfigError, match=r"cannot record to .*/no/x: No such file"
    ):
        StreamWriter(tmp_path / "no" / "x")
