"""quark: Linux process telemetry.

A Python re-implementation of Elastic's quark.

See ``quark.errors`` for the exception tree and README.md for the API.
"""

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
    Packet,
    PacketDirection,
    Process,
    QueueAttr,
    SockAddr,
    Socket,
    SockOrigin,
    Stats,
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
    "DecodeError",
    "Event",
    "LibbpfError",
    "NotSupportedError",
    "Packet",
    "PacketDirection",
    "PrivilegeError",
    "Process",
    "ProtocolError",
    "QuarkError",
    "Queue",
    "QueueAttr",
    "RawKind",
    "RuleError",
    "SockAddr",
    "SockOrigin",
    "Socket",
    "Stats",
    "__version__",
]
