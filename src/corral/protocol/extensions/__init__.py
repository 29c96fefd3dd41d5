"""WebSocket extensions (RFC 6455 section 9): the negotiation and data-path hooks."""

from .base import Extension, ExtensionFactory

__all__ = ["Extension", "ExtensionFactory"]
