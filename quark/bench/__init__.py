"""Benchmarks: ``python -m quark.bench NAME [--json] [options]``.

Each benchmark is a module ``quark.bench.NAME`` with ``main(argv) -> int``
that prints its figures, or one JSON object with ``--json``. Targets live
here, never in timed tests: the machine is noisy, so compare ratios measured
in one run.
"""
