"""The decoders' fast constructors make the same objects as the classes'
own ``__init__``: every member set, to the same value."""

from __future__ import annotations

from quark.backends.ebpf import object_path
from quark.backends.ebpf_layout import object_layout
from quark.backends.ebpf_proto import _task_builder
from quark.raw.types import RawEvent, RawKind, RawTask, task_event


def _members(obj: object, names: tuple[str, ...]) -> dict[str, object]:
    return {n: getattr(obj, n) for n in names}  # AttributeError if unset


def test_task_event_sets_every_member_as_init_does() -> None:
    task = RawTask(uid=1000, comm="true")
    fast = task_event(RawKind.EXEC, 123, 40, 41, task)
    slow = RawEvent(RawKind.EXEC, 123, 40, 41, task=task)
    assert _members(fast, RawEvent.__slots__) == _members(
        slow, RawEvent.__slots__
    )


def test_the_task_builder_sets_every_member() -> None:
    layout = object_layout(object_path())
    rec = layout.record("q_event")
    values = rec.fmt.unpack_from(bytes(range(256)) * 4)
    task = _task_builder(layout)(values)
    got = _members(task, RawTask.FIELDS)
    # what the record carries, and None for the rest (comm and exit_code
    # are the decoder's, by kind)
    assert got["uid"] == values[rec.index("uid")]
    assert got["comm"] is None and got["exit_code"] is None
    assert got == _members(RawTask(**got), RawTask.FIELDS)
