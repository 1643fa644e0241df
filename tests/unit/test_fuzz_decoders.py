"""The decoders of what the kernel hands over, fuzzed: whatever the bytes,
a decoder returns, or raises DecodeError (which its backend counts in
``Stats.decode_errors``), never another exception that would reach the
caller; and a ring reader never raises, and never moves its consumer past
the producer.

Records are not only random bytes, which the first length check refuses:
each is a record of a kind the decoder knows, its members and variable
areas random, its kind, size and length fields agreeing with them or not,
then maybe cut or flipped. The EBPF
decoder uses the shipped object's layout; the KPROBE decoder the probes'
formats as the kernel writes them. Derandomized, so CI sees the same
cases every run.
"""

from __future__ import annotations

import mmap
import os
import random
import re
import struct

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import quark
from quark.backends.ebpf import object_path
from quark.backends.ebpf_layout import Layout, Record, object_layout
from quark.backends.ebpf_proto import Decoder as EbpfDecoder
from quark.backends.kprobe_decode import Decoder as KprobeDecoder
from quark.backends.kprobe_decode import path_in_fs
from quark.backends.tracefs_format import parse_format
from quark.sys.perf import (
    PERF_RECORD_COMM,
    PERF_RECORD_LOST,
    PERF_RECORD_MISC_COMM_EXEC,
    PERF_RECORD_SAMPLE,
    PerfRing,
)
from quark.sys.ringbuf import RingReader
from tests.unit.test_kprobe_decode import EXEC_TP_FORMAT, _formats, _sample

EXAMPLES = int(os.environ.get("QUARK_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # shrinking is moot: a failure shows its seed
    suppress_health_check=[HealthCheck.too_slow],
)
LAYOUT: Layout = object_layout(object_path())
# every record kind of the object's protocol, by its Q_ constant
RECORD_OF = {
    "Q_SOCK": "q_sock_event", "Q_PACKET": "q_packet_event",
    "Q_FILE": "q_file_event", "Q_SHM": "q_shm_event",
    "Q_RESULT": "q_result_event", "Q_TTY": "q_tty_event",
    "Q_PTRACE": "q_ptrace_event", "Q_MODULE": "q_module_event",
}  # fmt: skip
KINDS = {
    value: RECORD_OF.get(name, "q_event")
    for name, value in LAYOUT.consts.items()
    if re.fullmatch(r"Q_[A-Z_]+", name)
    and LAYOUT.const("Q_FORK") <= value < 64
    and (name in RECORD_OF or name in ("Q_FORK", "Q_EXEC", "Q_EXIT",
                                       "Q_COMM", "Q_ID_CHANGE", "Q_GETPID"))
}  # fmt: skip


def _codes(rec: Record) -> list[tuple[str, int]]:
    """(struct code, byte count for 's') per value ``fmt.unpack`` gives."""
    out = []
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", rec.fmt.format):
        n = int(count or 1)
        if code == "x":
            continue
        if code == "s":
            out.append(("s", n))
        else:
            out.extend([(code, 0)] * n)
    assert len(out) == len(rec.names)
    return out


def _mutate(rng: random.Random, mode: int, data: bytearray) -> bytes:
    """Maybe cut ``data`` short (mode bit 4), and flip up to three of its
    bytes (bit 8)."""
    if mode & 8 and data:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if mode & 4:
        del data[rng.randint(0, len(data)) :]
    return bytes(data)


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """``parts`` lengths that add up to ``total``."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts))
    return [b - a for a, b in zip([0, *cuts], cuts, strict=False)]


# Hypothesis draws one number per example: its low 5 bits say what is cut
# or made to agree (the mode), and the whole seeds the rest. A draw per
# byte, or per choice, would make 10,000 examples take minutes.
SEEDS = st.integers(0, (1 << 64) - 1)
_KIND_LIST = sorted(KINDS)


def ebpf_record(seed: int, mode: int) -> bytes:
    """A record of a kind the decoder knows: members random; kind always,
    size (mode bit 2) and length fields (bit 1) set to agree with the
    variable tail; then maybe cut or flipped."""
    rng = random.Random(seed)
    kind = rng.choice(_KIND_LIST)
    rec = LAYOUT.record(KINDS[kind])
    body = rng.randbytes(rec.size)
    tail = rng.randbytes(rng.choice((0, 1, 7, 64, 300, 600)))
    values = list(rec.fmt.unpack(body))
    lens = [i for i, name in enumerate(rec.names) if "len" in name]
    if mode & 1 and lens:
        # length fields that add up to the tail, as the kernel writes them
        for i, n in zip(lens, _split(rng, len(tail), len(lens)), strict=True):
            values[i] = min(n, (1 << 8 * struct.calcsize(
                "<" + _codes(rec)[i][0])) - 1)  # fmt: skip
    values[rec.index("kind")] = kind
    data = bytearray(rec.fmt.pack(*values) + tail)
    if mode & 2:
        struct.pack_into("<I", data, rec.offsets["size"], len(data))
    return _mutate(rng, mode, data)


def test_the_generator_reaches_every_record_kind() -> None:
    """What the fuzz draws from: every kind the protocol has."""
    names = {n for n in LAYOUT.consts if n in RECORD_OF}
    assert names == set(RECORD_OF)
    assert {KINDS[LAYOUT.const(n)] for n in RECORD_OF} == set(
        RECORD_OF.values()
    )


_EBPF = EbpfDecoder(LAYOUT, quark.QQ.FILE | quark.QQ.SHM).decode
_EBPF_OUTCOMES: dict[str, int] = {}


@FUZZ
@given(SEEDS)
def test_the_ebpf_decoder_only_raises_decode_errors(seed: int) -> None:
    try:
        out = _EBPF(ebpf_record(seed, seed & 31))
        _EBPF_OUTCOMES[type(out).__name__] = 1
    except quark.DecodeError:
        _EBPF_OUTCOMES["DecodeError"] = 1


def test_the_ebpf_fuzz_decoded_records_too() -> None:
    """Not only refusals: the fuzz above reached the decoding (run after it
    in this module, or alone)."""
    if not _EBPF_OUTCOMES:
        test_the_ebpf_decoder_only_raises_decode_errors()
    assert "RawEvent" in _EBPF_OUTCOMES and "DecodeError" in _EBPF_OUTCOMES


# -- KPROBE: perf records ----------------------------------------------------

_FORMATS, _, _DEPTHS = _formats()
_TP = parse_format(EXEC_TP_FORMAT)
_TP.compile(("filename",))
_FORMATS[_TP.id] = ("sched_process_exec", _TP)
_PARTS = ("exec", "args0", "args1", "args2", "args3")
_EIDS = sorted(_FORMATS)
_RTYPES = [PERF_RECORD_SAMPLE] * 6 + [PERF_RECORD_LOST, PERF_RECORD_COMM]
_RTYPES += [0, 17]  # not ours


def _resolve(
    pid: int, which: str, mnt: int, names: list[bytes], alt: int | None
) -> str | None:
    return path_in_fs(names)


_INT_TYPES = {"s32": "i", "u32": "I", "u64": "Q"}


def perf_record(rng: random.Random, mode: int) -> tuple[int, int, bytes]:
    """A sample of one of the probes (random fields; its strings' data_locs
    pointing into the record with mode bit 1, else random), or a LOST,
    COMM or unknown record of random bytes; then maybe cut or flipped."""
    rtype = rng.choice(_RTYPES)
    misc = rng.choice((0, PERF_RECORD_MISC_COMM_EXEC, 0xFFFF))
    if rtype != PERF_RECORD_SAMPLE:
        return rtype, misc, _mutate(rng, mode, bytearray(rng.randbytes(40)))
    eid = rng.choice(_EIDS)
    fmt = _FORMATS[eid][1]
    fixed = max(f.offset + f.size for f in fmt.fields.values())
    raw = bytearray(rng.randbytes(fixed))
    tail = rng.randbytes(rng.choice((0, 5, 50, 200)))
    struct.pack_into("<H", raw, 0, eid)
    if mode & 1:
        strings = [f for f in fmt.fields.values() if f.kind == "str"]
        pos = fixed
        for f, n in zip(strings, _split(rng, len(tail), len(strings)),
                        strict=True):  # fmt: skip
            struct.pack_into("<I", raw, f.offset, (n << 16) | pos)
            pos += n
    if mode & 2:  # the probe's flags word: not a kernel thread
        for name in ("flags",):
            if name in fmt.fields:
                struct.pack_into("<I", raw, fmt.fields[name].offset, 0)
    pid, tid, time = struct.unpack("<IIQ", rng.randbytes(16))
    body = bytearray(_sample(bytes(raw + tail), pid, tid, time))
    return rtype, misc, _mutate(rng, mode, body)


_KPROBE_OUTCOMES: dict[str, int] = {}


@FUZZ
@given(SEEDS)
def test_the_perf_record_decoder_only_raises_decode_errors(seed: int) -> None:
    """One to three records in a row (an exec's parts pair up across
    records), threads' events asked for or not."""
    rng, mode = random.Random(seed), seed & 31
    dec = KprobeDecoder(
        _FORMATS, _DEPTHS, _resolve, thread_events=bool(mode & 16),
        max_env=64, exec_parts=_PARTS,
    )  # fmt: skip
    out: list[quark.raw.RawEvent] = []
    for _ in range(rng.randint(1, 3)):
        rtype, misc, body = perf_record(rng, mode)
        try:
            dec.record(rtype, misc, body, out)
        except quark.DecodeError:
            _KPROBE_OUTCOMES["DecodeError"] = 1
    dec.flush(out)
    if out:
        _KPROBE_OUTCOMES["RawEvent"] = 1


def test_the_perf_fuzz_decoded_records_too() -> None:
    if not _KPROBE_OUTCOMES:
        test_the_perf_record_decoder_only_raises_decode_errors()
    assert "RawEvent" in _KPROBE_OUTCOMES
    assert "DecodeError" in _KPROBE_OUTCOMES


# -- the rings themselves ----------------------------------------------------

PAGE = mmap.PAGESIZE
_CONS = mmap.mmap(-1, PAGE)
_PROD = mmap.mmap(-1, PAGE + 2 * PAGE)
_RING = RingReader.over(_CONS, _PROD, PAGE)
DISCARD = 1 << 30


RING_FUZZ = settings(
    max_examples=EXAMPLES // 10, deadline=None, derandomize=True,
    database=None, phases=[Phase.generate],
)  # fmt: skip


@RING_FUZZ
@given(SEEDS, st.integers(0, 1 << 40))
def test_the_bpf_ring_reader_never_raises_nor_overtakes(
    seed: int, cons: int
) -> None:
    """Garbage in the data pages, record headers included (lengths that
    pass the producer, or the ring; BUSY and DISCARD bits): the reader
    returns records no longer than the ring and leaves the consumer at or
    before the producer."""
    rng = random.Random(seed)
    page = bytearray(rng.randbytes(PAGE))
    for _ in range(rng.randint(0, 8)):
        word = rng.choice((rng.getrandbits(32), rng.randint(0, 64),
                           rng.randint(0, 64) | DISCARD))  # fmt: skip
        struct.pack_into("<I", page, 8 * rng.randrange(PAGE // 8), word)
    _PROD[PAGE : 2 * PAGE] = page
    _PROD[2 * PAGE : 3 * PAGE] = page  # mapped twice in a row
    prod = cons + rng.choice((0, 8, 64, PAGE // 2, PAGE))
    struct.pack_into("<Q", _CONS, 0, cons)
    struct.pack_into("<Q", _PROD, 0, prod)
    for _ in range(3):
        recs = _RING.read(1000)
        assert all(len(r) <= PAGE for r in recs)
        assert cons <= struct.unpack_from("<Q", _CONS, 0)[0] <= prod


@RING_FUZZ
@given(SEEDS, st.integers(0, 1 << 40))
def test_the_perf_ring_reader_never_raises_nor_overtakes(
    seed: int, tail: int
) -> None:
    rng = random.Random(seed)
    buf = bytearray(2 * PAGE)
    head = tail + rng.choice((0, 8, 64, PAGE // 2, PAGE))
    struct.pack_into("<QQ", buf, 1024, head, tail)  # data_head, data_tail
    data = bytearray(rng.randbytes(PAGE))
    for _ in range(rng.randint(0, 8)):
        size = rng.choice((rng.getrandbits(16), 8 * rng.randint(0, 16)))
        struct.pack_into("<IHH", data, 8 * rng.randrange(PAGE // 8),
                         rng.choice((9, 2, 3)), 0, size)  # fmt: skip
    buf[PAGE:] = data
    tails: list[int] = []
    ring = PerfRing(buf, page_size=PAGE, write_tail=tails.append)
    for _ in range(3):
        recs = ring.read(1000)
        assert all(len(body) < PAGE for _, _, body in recs)
        assert tails and tail <= tails[-1] <= head
        struct.pack_into("<Q", buf, 1032, tails[-1])
