"""The two hooks an extension plugs into: negotiation and the frame data path.

Negotiation happens once per connection on the server (``ExtensionFactory.accept``) or the
client (``ExtensionFactory.offer`` / ``ExtensionFactory.confirm``); the result is an
:class:`Extension` object that the connection calls for every data frame. Control frames never
go through extensions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..handshake import ExtensionOffer

__all__ = ["Extension", "ExtensionFactory"]


class Extension:
    """A negotiated extension on one connection.

    ``rsv_bits`` are the RSV bits (as in the first header byte: 0x40, 0x20, 0x10) the
    extension gives a meaning to; a frame with any other RSV bit set fails the connection
    with 1002 (section 5.2).
    """

    name: str = ""
    rsv_bits: int = 0

    def decode(
        self,
        opcode: int,
        rsv: int,
        data: bytes,
        *,
        frame_start: bool,
        frame_end: bool,
        fin: bool,
        max_size: int | None,
    ) -> bytes:
        """Transform a received piece of a data frame.

        ``opcode`` is the frame's (CONTINUATION for later frames of a message), ``rsv`` its
        RSV bits; ``fin and frame_end`` marks the end of the message. ``max_size`` is how
        many more bytes the message may grow by: an extension that expands data must stop
        there and raise :class:`corral.exceptions.PayloadTooBig`.
        """
        return data

    def encode(
        self, opcode: int, data: bytes, *, fin: bool, compress: bool = True
    ) -> tuple[bytes, int]:
        """Transform an outgoing data frame; return the payload and the RSV bits to set.

        ``opcode`` is CONTINUATION for later frames of a message; ``fin`` marks its last
        frame. ``compress`` False asks a compression extension to send this message as it is
        (the connection passes the same value for every frame of one message); extensions
        that do not compress ignore it.
        """
        return data, 0

    def shared_key(self) -> Hashable | None:
        """For one message sent to many connections (a publish): a key equal between
        connections whose encoding of a whole message is the same bytes, so it is encoded
        once for all of them with :meth:`encode_alone`; None when this connection's
        encoding depends on its own state (a compression context kept between messages)."""
        return None

    def encode_alone(self, opcode: int, data: bytes) -> tuple[bytes, int]:
        """Encode a whole message as :meth:`encode` would for a connection with this
        :meth:`shared_key`, touching no state of this connection."""
        raise NotImplementedError


class ExtensionFactory:
    """Negotiates one extension by name (the ``Sec-WebSocket-Extensions`` header)."""

    name: str = ""

    def accept(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        """Server side: answer a client offer, or None to decline it (not an error)."""
        return None

    def accept_first(
        self, offers: Sequence[ExtensionOffer]
    ) -> tuple[ExtensionOffer, Extension] | None:
        """Server side: the first acceptable offer among ``offers``, in the client's order
        of preference (RFC 7692 section 5), or None."""
        for offer in offers:
            accepted = self.accept(offer)
            if accepted is not None:
                return accepted
        return None

    def offer(self) -> ExtensionOffer:
        """Client side: what to offer."""
        from ..handshake import ExtensionOffer

        return ExtensionOffer(self.name, ())

    def confirm(self, response: ExtensionOffer, offered: Sequence[ExtensionOffer]) -> Extension:
        """Client side: check the server's answer to our offer; raise NegotiationError."""
        from ...exceptions import NegotiationError

        raise NegotiationError(f"extension {response.name!r} cannot be confirmed")
