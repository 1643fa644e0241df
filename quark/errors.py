"""The exception tree of quark.

Every error the library raises on purpose is a :class:`QuarkError`, which is an
:class:`OSError`, so ``errno`` is set where the failure has one::

    QuarkError(OSError)
    ├── NotSupportedError      the kernel or system lacks a needed feature
    │                          (no BTF, no ring buffer, no kprobe_events, no
    │                          libbpf, no offset table entry for this kernel)
    ├── PrivilegeError         not allowed: not root, no CAP_BPF/CAP_PERFMON
    ├── ConfigError            invalid queue attributes or arguments (EINVAL)
    ├── BackendError           a backend failed to open or to run; for
    │                          ``backend="auto"`` it lists every attempt
    ├── BTFError               malformed or unusable BTF, ELF or vmlinuz input
    ├── DecodeError            a malformed ring record, perf record or replay
    │                          line; it names where
    ├── LibbpfError            a libbpf call failed; names the call
    ├── ProtocolError          the BPF object and this library disagree on
    │                          the wire format (a mixed installation)
    └── RuleError              a rules DSL parse error; names line and column

Each message says what is missing or wrong, in words a user can act on.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "BTFError",
    "BackendError",
    "ConfigError",
    "DecodeError",
    "LibbpfError",
    "NotSupportedError",
    "PrivilegeError",
    "ProtocolError",
    "QuarkError",
    "RuleError",
]


class QuarkError(OSError):
    """Base class of every error quark raises on purpose.

    ``QuarkError("message", errno=errno.ENOENT)`` sets ``.errno`` and
    ``.strerror``; ``str(err)`` is always the message alone.
    """

    default_errno: int | None = None

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        code = errno if errno is not None else self.default_errno
        if code is not None:
            super().__init__(code, message)
        else:
            super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other keyword arguments: rebuild through the base
        # initializer, then restore their attributes from __dict__.
        return (
            _rebuild,
            (type(self), self.message, self.errno),
            self.__dict__,
        )


def _rebuild(
    cls: type[QuarkError], message: str, code: int | None
) -> QuarkError:
    err = cls.__new__(cls)
    QuarkError.__init__(err, message, errno=code)
    return err


class NotSupportedError(QuarkError):
    """The running kernel or system lacks something quark needs."""

    default_errno = _errno.EOPNOTSUPP


class PrivilegeError(QuarkError):
    """The caller lacks the privilege for the operation."""

    default_errno = _errno.EPERM


class ConfigError(QuarkError, ValueError):
    """Invalid queue attributes or arguments."""

    default_errno = _errno.EINVAL


class BackendError(QuarkError):
    """A backend failed to open or to run."""


class BTFError(QuarkError):
    """Malformed or unusable BTF, ELF or vmlinuz input."""

    default_errno = _errno.EINVAL


class DecodeError(QuarkError):
    """A malformed kernel record or replay line; the message names where."""

    default_errno = _errno.EBADMSG


class LibbpfError(QuarkError):
    """A libbpf call failed. ``call`` names the C function."""

    def __init__(
        self, message: str, *, errno: int | None = None, call: str = ""
    ) -> None:
        super().__init__(message, errno=errno)
        self.call = call


class ProtocolError(QuarkError):
    """The BPF object speaks another wire protocol than this library: its
    ``Q_PROTO_VERSION`` or a record's layout is not what the decoder
    needs. The message names both sides."""

    default_errno = _errno.EPROTO


class RuleError(QuarkError, ValueError):
    """A rules DSL error. ``line`` and ``column`` are 1-based."""

    default_errno = _errno.EINVAL

    def __init__(
        self, message: str, *, line: int = 0, column: int = 0
    ) -> None:
        where = f" at line {line} column {column}" if line else ""
        super().__init__(message + where)
        self.line = line
        self.column = column
