"""quark: Linux process telemetry.

A Python re-implementation of Elastic's quark.

See ``quark.errors`` for the exception tree and README.md for the API.
"""

from quark.container import Container
from quark.errors import (
    BackendError,
    BTFError,
    ConfigError,
    DecodeError,
    LibbpfError,
    NotSupportedError,
    PrivilegeError,
    ProtocolError,
    QuarkError,
    RuleError,
)
from quark.events import (
    ELT,
    EV,
    ID_CHANGE,
    QQ,
    Event,
    File,
    FileChange,
    FileOp,
    ModuleLoad,
    Packet,
    PacketDirection,
    Process,
    Ptrace,
    QueueAttr,
    Shm,
    ShmKind,
    SockAddr,
    Socket,
    SockOrigin,
    Stats,
    Tty,
)
from quark.queue import Queue
from quark.raw.types import RawKind

__version__ = "0.1.0"

__all__ = [
    "ELT",
    "EV",
    "ID_CHANGE",
    "QQ",
    "BTFError",
    "BackendError",
    "ConfigError",
    "Container",
    "DecodeError",
    "Event",
    "File",
    "FileChange",
    "FileOp",
    "LibbpfError",
    "ModuleLoad",
    "NotSupportedError",
    "Packet",
    "PacketDirection",
    "PrivilegeError",
    "Process",
    "ProtocolError",
    "Ptrace",
    "QuarkError",
    "Queue",
    "QueueAttr",
    "RawKind",
    "RuleError",
    "Shm",
    "ShmKind",
    "SockAddr",
    "SockOrigin",
    "Socket",
    "Stats",
    "Tty",
    "__version__",
]
