"""corral: a WebSocket server and client for asyncio.

A sans-I/O RFC 6455 core under an asyncio server and client, with Cowboy-style handlers
(upgrade decision, then one callback per event) and the ``async for message in ws`` style.
"""

from .async_api import AsyncWebSocket
from .client import connect
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    CorralError,
    HandshakeError,
    InvalidPayload,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    PublishError,
    StartupError,
    UnsupportedVersion,
)
from .handler import (
    Accept,
    Binary,
    Close,
    CloseKind,
    CloseReason,
    Deflate,
    Fragment,
    Handler,
    Pause,
    Ping,
    Pong,
    Reject,
    Resume,
    SetOptions,
    Text,
)
from .options import COMPRESSION_PRESETS, DeflateSettings, Options
from .protocol.frames import CloseCode
from .pubsub import Broker, MemoryBroker, PublishFailed, Topics
from .reconnect import Reconnect, ReconnectingWebSocket
from .request import Request, Response
from .server import Router, RouteShadowedWarning, Server, StaticFiles, run, serve
from .server.stats import ServerStats
from .websocket import WebSocket

__version__ = "0.1.0"

__all__ = [
    "COMPRESSION_PRESETS",
    "Accept",
    "AsyncWebSocket",
    "Binary",
    "Broker",
    "Close",
    "CloseCode",
    "CloseKind",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "CorralError",
    "Deflate",
    "DeflateSettings",
    "Fragment",
    "Handler",
    "HandshakeError",
    "InvalidPayload",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidStatus",
    "InvalidURI",
    "MemoryBroker",
    "NegotiationError",
    "Options",
    "Pause",
    "PayloadTooBig",
    "Ping",
    "Pong",
    "ProtocolError",
    "PublishError",
    "PublishFailed",
    "Reconnect",
    "ReconnectingWebSocket",
    "Reject",
    "Request",
    "Response",
    "Resume",
    "RouteShadowedWarning",
    "Router",
    "Server",
    "ServerStats",
    "SetOptions",
    "StartupError",
    "StaticFiles",
    "Text",
    "Topics",
    "UnsupportedVersion",
    "WebSocket",
    "__version__",
    "connect",
    "run",
    "serve",
]
