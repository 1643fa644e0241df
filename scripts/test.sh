#!/usr/bin/env bash
# Run every test of quark: the shipped BPF object against its sources, unit
# tests, the host's system tests (root, the real kernel, EBPF). Run
# scripts/setup.sh first. Exits non-zero on any failure, including a run
# that collected no test (pytest's exit status 5).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py="$top/.venv/bin/python"
export PATH="$top/.venv/bin:$PATH"

echo "== the shipped BPF object is built from bpf/"
"$py" bpf/build.py --check

echo "== unit and host system tests"
"$py" -m pytest -n auto -p no:cacheprovider
