#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for quark: the system packages it uses
# (libbpf, the BPF toolchain, qemu and the guest's tools, pahole for the BTF
# cross-check) and a virtual environment in .venv with the project and its
# test dependencies. Idempotent; run as root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (apt-get install)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
packages=(
    libbpf1 libbpf-dev bpftool clang llvm  # EBPF backend and its build
    dwarves                                # pahole: independent BTF check
    qemu-system-x86 busybox-static kmod cpio  # the kernel matrix
    qemu-system-arm mmdebstrap arch-test   # its arm64 guest and userland
    tmux                                   # quark-mon terminal test
    python3 python3-venv python3-pip
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
py=${PYTHON:-python3}
if [ ! -x "$top/.venv/bin/python" ]; then
    "$py" -m venv "$top/.venv"
fi
"$top/.venv/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$top[test,dev]"
# Bytecode for the sources, written now: the qemu guests read this tree
# read-only and would otherwise compile every module at each boot.
"$top/.venv/bin/python" -m compileall -q -j 0 "$top/quark" >/dev/null
echo "setup.sh: ready ($("$top/.venv/bin/python" --version), .venv)"
