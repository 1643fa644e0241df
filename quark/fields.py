"""How a process field is declared: once, on :class:`quark.Process`.

Each member of :class:`quark.Process` is one annotated line of its class
body::

    uid: Annotated[int | None, F(Src.TASK, dump=Dump(3), ecs=("real_user",
                                                           "user"))]

The annotation is the member's type for users and for mypy; its :class:`F`
says where the value comes from and how the tools show it. Everything else
derives from that table (:func:`table`):

- the snapshot's accessors and slot order (``quark.events``);
- :class:`quark.raw.RawTask`, whose members are the fields a kernel record
  or the /proc scrape carries (the ``TASK*``, ``CWD``, ``ENV`` and
  ``EXIT_STATUS`` sources);
- the process cache's slots and what it copies, inherits or computes
  (``quark.engine.cache``);
- the recorded stream's type checks (``quark.raw.record``);
- quark-mon's dump lines (``quark.dump``) and the ECS document
  (``quark.ecs``).

Adding a field is one line here plus the code that fills it (a backend, the
scraper); nothing else lists the names.

A member computed from another one alone is a property of
:class:`quark.Process`, not a row: ``container`` is read from ``cgroup``
(:mod:`quark.container`), so the cache keeps one fact and the two can never
disagree; quark-mon's dump (its ``CONT`` line), the ECS document
(``container``, ``orchestrator``) and the rules (``container.*``) ask the
property.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

__all__ = ["Dump", "F", "Field", "Src", "table"]


class Src(enum.Enum):
    """Where a field's value comes from."""

    #: the process id, the cache's key
    PID = "pid"
    #: carried by every kernel task record: copied whenever known
    TASK = "task"
    #: carried by some task records only: copied whenever known
    TASK_OPT = "task_opt"
    #: ``RawTask.start_time``: the first one known stays (and gives
    #: ``entity_id``)
    START = "start"
    #: ``RawTask.cwd``: ``""`` is a cwd seen but unknown; an exit's is not
    #: taken (the kernel has released it)
    CWD = "cwd"
    #: ``RawTask.env``, cut to ``max_env``
    ENV = "env"
    #: the exec event itself (``RawEvent.exe``, ``RawEvent.args``)
    EXEC = "exec"
    #: ``RawTask.exit_code``, the raw wait status, decoded at the exit
    EXIT_STATUS = "exit_status"
    #: the exit's time
    EXIT_TIME = "exit_time"
    #: computed by the engine (entity ids, entry leaders, rules)
    ENGINE = "engine"


#: The sources whose values :class:`quark.raw.RawTask` carries.
TASK_SOURCES = frozenset(
    {Src.TASK, Src.TASK_OPT, Src.START, Src.CWD, Src.ENV, Src.EXIT_STATUS}
)


@dataclass(frozen=True)
class Dump:
    """Where quark-mon's dump (upstream's format) prints a field.

    ``line`` orders the lines, each ``  TAG\tlabel=value label=value``,
    its fields in table order; ``label`` defaults to the field's name and
    ``fmt`` names a formatting rule of ``quark.dump``. The lines of a tag
    print only when its ``gate`` field is known.
    """

    line: int
    tag: str
    label: str | None = None
    fmt: str | None = None
    gate: bool = False


@dataclass(frozen=True)
class F:
    """A field's declaration, in its ``Annotated`` type.

    - ``inherit``: a child takes it from its parent at fork (true of the
      child at that instant: same image, argv, environment, cwd);
    - ``dump``: its place in quark-mon's dump, or ``None``;
    - ``ecs``: ``(key, rule)`` under ``process`` in the ECS document, the
      rule named in ``quark.ecs`` (``"copy"`` for the value as it is), or
      ``None``.
    """

    src: Src
    inherit: bool = False
    dump: Dump | None = None
    ecs: tuple[str, str] | None = None


@dataclass(frozen=True)
class Field:
    """One row of the table: a field's name, type and declaration."""

    name: str
    index: int
    type: Any
    decl: F

    @property
    def src(self) -> Src:
        return self.decl.src

    @property
    def listy(self) -> bool:
        """A list for users, kept as a tuple (so snapshots stay fixed)."""
        return _is(self.type, list)

    @property
    def text(self) -> bool:
        return _is(self.type, str)

    @property
    def in_task(self) -> bool:
        return self.decl.src in TASK_SOURCES


def _is(hint: Any, kind: type) -> bool:
    """``hint`` is ``kind``, ``kind[...]`` or one of those ``| None``."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return any(_is(a, kind) for a in typing.get_args(hint))
    return hint is kind or typing.get_origin(hint) is kind


def table(cls: type) -> tuple[Field, ...]:
    """The fields declared on ``cls`` by ``Annotated[type, F(...)]``, in
    declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[Field] = []
    for name in inspect.get_annotations(cls):
        hint = hints[name]
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base, *extras = typing.get_args(hint)
        decls = [x for x in extras if isinstance(x, F)]
        if len(decls) != 1:
            raise TypeError(f"{cls.__name__}.{name}: needs exactly one F()")
        out.append(Field(name, len(out), base, decls[0]))
    return tuple(out)
