"""The FFI boundary: with ``quark/libbpf_ctypes.py``, the only place that
imports ctypes, mmap or fcntl (enforced by tests/unit/test_layering.py)."""
