"""Raw events: the backends' output and the engine's input (pure, no I/O)."""

from quark.raw.types import RAW_NUM_TYPES, RawEvent, RawKind, RawTask, Seed

__all__ = ["RAW_NUM_TYPES", "RawEvent", "RawKind", "RawTask", "Seed"]
