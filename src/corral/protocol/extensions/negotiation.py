"""Which extensions a connection uses: the server's choice among the client's offers, and the
client's offer and its check of the answer (RFC 6455 section 9.1).

corral knows two extensions, both compression and both on RSV1, so at most one of them is
ever active on a connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...exceptions import NegotiationError
from ..handshake import ExtensionOffer, format_extension_header
from .base import Extension, ExtensionFactory
from .permessage_deflate import DeflateSettings, PerMessageDeflateFactory
from .webkit_deflate import WebkitDeflateFactory

__all__ = ["client_confirm", "client_offers", "server_accept"]


def _factories(settings: DeflateSettings) -> dict[str, ExtensionFactory]:
    return {
        "permessage-deflate": PerMessageDeflateFactory(settings),
        "x-webkit-deflate-frame": WebkitDeflateFactory(settings),
        "deflate-frame": WebkitDeflateFactory(settings, name="deflate-frame"),
    }


def server_accept(
    offers: Sequence[ExtensionOffer], settings: DeflateSettings | None
) -> tuple[list[Extension], str | None]:
    """Accept the first acceptable compression offer, in the client's order of preference
    (RFC 7692 5.1); offers that cannot be accepted are declined, not an error. Returns the
    extensions and the ``Sec-WebSocket-Extensions`` value (None when nothing is accepted)."""
    if settings is None or not offers:
        return [], None
    factories = _factories(settings)
    for offer in offers:
        factory = factories.get(offer.name)
        if factory is None:
            continue
        accepted = factory.accept(offer)
        if accepted is not None:
            response, extension = accepted
            return [extension], format_extension_header([response])
    return [], None


def client_offers(settings: DeflateSettings | None) -> list[ExtensionOffer]:
    """What a client offers: one permessage-deflate offer built from ``settings``
    (client_max_window_bits always; server_max_window_bits and the no_context_takeover
    flags only when the settings ask for them)."""
    if settings is None:
        return []
    return [PerMessageDeflateFactory(settings).offer()]


def client_confirm(
    response: Sequence[ExtensionOffer],
    offered: Sequence[ExtensionOffer],
    settings: DeflateSettings | None,
) -> list[Extension]:
    """Check the server's ``Sec-WebSocket-Extensions`` against the offer; NegotiationError
    when it names anything not offered (RFC 6455 4.1) or answers badly (RFC 7692 7.1)."""
    if not response:
        return []
    if settings is None or not offered:
        raise NegotiationError("server accepted an extension that was not offered")
    if len(response) > 1:
        raise NegotiationError("server accepted more than one compression extension")
    answer = response[0]
    offered_names = {offer.name for offer in offered}
    if answer.name not in offered_names:
        raise NegotiationError(f"server accepted {answer.name!r}, which was not offered")
    return [_factories(settings)[answer.name].confirm(answer, offered)]
