"""Dispatch ``python -m quark.bench NAME ...`` to ``quark.bench.NAME``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import quark.bench


def _names() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(quark.bench.__path__)
        if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = _names()
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m quark.bench NAME [--json] [options]")
        print("benchmarks: " + ", ".join(names))
        return 0 if args else 2
    name = args[0]
    if name not in names:
        print(
            f"quark.bench: unknown benchmark {name!r}; "
            f"known: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"quark.bench.{name}")
    rc: int = module.main(args[1:])
    return rc


if __name__ == "__main__":
    sys.exit(main())
