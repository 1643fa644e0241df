"""The FFI boundary: with ``quark/libbpf_ctypes.py``, the only place that
imports ctypes, mmap or fcntl (enforced by tests/unit/test_layering.py).

libc is loaded once, on first use, by :func:`quark.sys.libc.libc`; an errno
becomes an exception in :func:`quark.sys.libc.oserror` only."""
