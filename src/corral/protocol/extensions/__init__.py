"""WebSocket extensions (RFC 6455 section 9): the negotiation and data-path hooks, and the two
compression extensions, permessage-deflate (RFC 7692) and x-webkit-deflate-frame."""

from .base import Extension, ExtensionFactory
from .permessage_deflate import DeflateSettings, PerMessageDeflate, PerMessageDeflateFactory
from .webkit_deflate import WebkitDeflateFactory, WebkitDeflateFrame

__all__ = [
    "DeflateSettings",
    "Extension",
    "ExtensionFactory",
    "PerMessageDeflate",
    "PerMessageDeflateFactory",
    "WebkitDeflateFactory",
    "WebkitDeflateFrame",
]
