"""Per-connection options: one frozen dataclass, validated once, with documented defaults.

A server has one ``Options``; a route or an ``Accept`` from the upgrade decision may override
any field for its connections; a few fields (``RUNTIME_MUTABLE``) may also change while a
connection runs, through ``ws.set_options(...)`` or the ``SetOptions`` command.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .protocol.extensions.permessage_deflate import DeflateSettings

__all__ = ["COMPRESSION_PRESETS", "RUNTIME_MUTABLE", "DeflateSettings", "Options"]

MiB = 1 << 20
BACKPRESSURE_POLICIES = ("drop", "close")


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Options of a WebSocket connection. Sizes in bytes, times in seconds, None = no limit.

    - ``max_message_size`` (1 MiB): a larger message is refused with close 1009, checked on
      each frame's declared length before its payload is read. A message may come in any
      number of fragments: each continuation frame counts at least 16 bytes against this
      limit, so a flood of tiny or empty fragments ends in 1009 too (docs/limits.md).
    - ``max_frame_size`` (None: same as max_message_size): the largest single frame.
    - ``idle_timeout`` (60): close with 1001 when nothing is received for this long.
    - ``handshake_timeout`` (10): a client that has not finished its HTTP request by then
      is answered 408 and dropped (slow-loris protection).
    - ``close_timeout`` (10): how long to wait for the peer's side of the close handshake.
    - ``ping_interval`` (None: off): send a keepalive ping this often when set; its pong
      gives ``ws.latency``, the round trip time.
    - ``ping_timeout`` (20): with keepalive on, a peer that sends nothing for this long after a
      ping is considered dead: TCP is dropped and ``on_close`` gets kind ``timeout``, 1006.
    - ``allowed_origins`` (None): browsers' Origin must match the Host header; a list allows
      those origins instead ("*" allows any). Requests without Origin (non-browsers) pass.
      Checked before the handler's ``upgrade()``, so only server or route options set it.
    - ``receive_fragments`` (False): deliver messages piece by piece (``on_fragment``)
      instead of whole.
    - ``compression`` (None: off): :class:`DeflateSettings` to accept permessage-deflate or
      x-webkit-deflate-frame when a client offers it (Cowboy's ``compress``). Usually set
      per route or with ``Accept(compress=True)``. See ``COMPRESSION_PRESETS``.
    - ``max_queue`` (16): in the ``async for`` style, messages buffered before reading from
      the socket pauses (backpressure).
    - ``write_limit`` (65536): write buffer size above which ``drain()`` waits, reading from
      the peer pauses, and ``on_drain`` is called once it is down to a quarter of it.
    - ``max_backpressure`` (1 MiB): unsent bytes above which a data message (a send or a
      publish) is not queued for this peer; control frames still go. None: no limit.
    - ``backpressure_policy`` ("drop"): over ``max_backpressure``, "drop" the message,
      count it in ``ws.dropped_messages`` and call the handler's ``on_drop``; or "close"
      the connection with 1013 (try again later), for clients that reconnect and resume.
    - ``max_header_count`` (100), ``max_header_bytes`` (16384), ``max_request_line`` (8192):
      HTTP request limits, answered with 431 / 414.
    - ``forwarded_allow_ips`` (None: no proxy is trusted): the reverse proxies (addresses,
      networks such as ``"10.0.0.0/8"``, or ``"*"``) whose ``Forwarded`` /
      ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` headers are believed:
      ``request.remote_address``, ``request.scheme`` and the origin check then use the
      client's values. From anyone else those headers are ignored. A server-wide option.
    - ``proxy_protocol`` (False): every TCP connection starts with a PROXY protocol header
      (version 1 or 2, as HAProxy and AWS load balancers send it), which names the client;
      a connection without one is refused. Only for a listener that only the balancer can
      reach (or with ``forwarded_allow_ips`` naming it). Not with TLS terminated by corral.
      A server-wide option.
    - ``max_body`` (1 MiB): the largest request body (``request.body``) of a plain HTTP
      route, with ``Content-Length`` or chunked; a larger one is answered with 413 before it
      is read.
    """

    max_message_size: int | None = MiB
    max_frame_size: int | None = None
    idle_timeout: float | None = 60.0
    handshake_timeout: float | None = 10.0
    close_timeout: float = 10.0
    ping_interval: float | None = None
    ping_timeout: float | None = 20.0
    allowed_origins: tuple[str, ...] | None = None
    receive_fragments: bool = False
    compression: DeflateSettings | None = None
    max_queue: int = 16
    write_limit: int = 65536
    max_backpressure: int | None = MiB
    backpressure_policy: str = "drop"
    max_header_count: int = 100
    max_header_bytes: int = 16384
    max_request_line: int = 8192
    max_body: int = MiB
    forwarded_allow_ips: tuple[str, ...] | None = None
    proxy_protocol: bool = False

    def __post_init__(self) -> None:
        if self.compression is not None and not isinstance(self.compression, DeflateSettings):
            raise TypeError("compression is a DeflateSettings (or None)")
        if self.backpressure_policy not in BACKPRESSURE_POLICIES:
            raise ValueError(f"backpressure_policy is one of {', '.join(BACKPRESSURE_POLICIES)}"
                             f", not {self.backpressure_policy!r}")
        for name in ("max_message_size", "max_frame_size", "max_backpressure"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        for name in ("idle_timeout", "handshake_timeout", "ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        if not self.close_timeout > 0:
            raise ValueError("close_timeout must be positive")
        for name in ("max_queue", "write_limit", "max_header_count", "max_header_bytes",
                     "max_request_line"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_body < 0:
            raise ValueError("max_body must be 0 or more")
        proxies = self.forwarded_allow_ips
        if proxies is not None:
            if isinstance(proxies, str):
                proxies = tuple(part.strip() for part in proxies.split(",") if part.strip())
            from .server.forwarded import TrustedProxies

            TrustedProxies(proxies)  # each entry checked now, not at the first request
            object.__setattr__(self, "forwarded_allow_ips", tuple(proxies))
        origins = self.allowed_origins
        if origins is not None:
            if isinstance(origins, str):
                raise TypeError("allowed_origins is a list of origins, not one string")
            object.__setattr__(self, "allowed_origins", tuple(origins))

    @property
    def frame_limit(self) -> int | None:
        """The effective frame size limit."""
        return self.max_frame_size if self.max_frame_size is not None else self.max_message_size

    def replace(self, **changes: Any) -> Options:
        """A copy with some fields changed (validated like a new instance)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        removed = sorted(unknown & REMOVED.keys())
        if removed:
            raise TypeError(f"option {removed[0]} was removed: {REMOVED[removed[0]]}")
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def merge(cls, base: Options, overrides: Options | dict[str, Any] | None) -> Options:
        if overrides is None:
            return base
        if isinstance(overrides, Options):
            return overrides
        return base.replace(**overrides)


#: Options that existed once, with what replaced them: named in the error for a caller who
#: still passes one.
REMOVED = {
    "max_fragments": "any number of fragments is allowed now, each continuation frame "
                     "counting at least 16 bytes against max_message_size",
}

RUNTIME_MUTABLE = frozenset({"idle_timeout", "max_message_size", "max_frame_size",
                             "ping_interval", "ping_timeout", "max_backpressure",
                             "backpressure_policy"})


def check_runtime_changes(changes: dict[str, Any]) -> None:
    bad = set(changes) - RUNTIME_MUTABLE
    if bad:
        raise ValueError(
            f"option(s) {', '.join(sorted(bad))} cannot change on an open connection; "
            f"these can: {', '.join(sorted(RUNTIME_MUTABLE))}"
        )


# Memory per compressed connection is mostly zlib's: the compressor needs about
# 2**(window_bits + 2) + 2**(mem_level + 9) bytes, the decompressor 2**window_bits, each plus
# a few KiB (measured in bench/compression.py). Without context takeover the compressor is
# dropped after every message, so an idle connection holds none.
COMPRESSION_PRESETS: dict[str, DeflateSettings] = {
    # Many idle connections (chat, notifications): ~23 KiB of zlib state while idle.
    "low-memory": DeflateSettings(level=6, mem_level=3, server_max_window_bits=10,
                                  client_max_window_bits=10),
    # The default: good ratio on JSON-like messages, ~51 KiB per connection.
    "balanced": DeflateSettings(),
    # Few connections with large, repetitive messages: zlib's defaults (~265 KiB).
    "max-compression": DeflateSettings(level=6, mem_level=8, server_max_window_bits=15,
                                       client_max_window_bits=15),
}
"""Named compression settings (``--compression PRESET``): ``low-memory`` (~23 KiB of zlib
state per idle connection), ``balanced`` (the default ``DeflateSettings()``, ~51 KiB) and
``max-compression`` (zlib's defaults, ~265 KiB)."""
