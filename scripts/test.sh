#!/usr/bin/env bash
# Run every test of quark: unit tests, the host's system tests (root, real
# kernel, EBPF), and the kernel matrix (every backend in qemu guests).
# Run scripts/setup.sh first. Exits non-zero on any failure, including a run
# that collected no test.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py="$top/.venv/bin/python"
export PATH="$top/.venv/bin:$PATH"

echo "== unit and host system tests"
"$py" -m pytest -n auto -p no:cacheprovider
