"""quark.raw.types.memo: the decoders' memory of the strings they decoded."""

from __future__ import annotations

from quark.raw.types import memo


def test_a_value_is_decoded_once_and_shared() -> None:
    calls: list[bytes] = []

    def decode(b: bytes) -> tuple[str, ...]:
        calls.append(b)
        return tuple(b.decode().split("\0"))

    get = memo(decode, 1 << 20)
    env = b"HOME=/root\0PATH=/usr/bin"
    first = get(env)
    # a different bytes object with the same contents, as each record has
    again = get(bytes(bytearray(env)))
    assert again == ("HOME=/root", "PATH=/usr/bin")
    assert again is first
    assert calls == [env]


def test_it_forgets_everything_past_its_budget_and_stays_right() -> None:
    calls = 0

    def decode(b: bytes) -> str:
        nonlocal calls
        calls += 1
        return b.decode()

    get = memo(decode, 1000)
    values = [f"/srv/{i:04}".encode() * 10 for i in range(100)]
    for v in values:
        assert get(v) == v.decode()
    assert calls == 100
    # the latest value is remembered; the first ones were forgotten once
    # ~1000 bytes of arguments were held, and are decoded again, right
    assert get(values[-1]) == values[-1].decode()
    assert calls == 100
    assert get(values[0]) == values[0].decode()
    assert calls == 101
