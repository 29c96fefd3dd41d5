"""x-webkit-deflate-frame: the per-FRAME DEFLATE extension older Safari and Chrome used.

It predates RFC 7692 (draft-tyoshino-hybi-websocket-perframe-deflate, "deflate-frame"; the
browsers sent it with the ``x-webkit-`` prefix). Each data frame, continuation frames
included, is compressed on its own: DEFLATE up to a sync flush, minus the trailing
00 00 ff ff, with RSV1 set on every compressed frame; the receiver appends 00 00 ff ff to
each such frame and inflates it. Control frames are never compressed. The LZ77 window
carries over from frame to frame unless context takeover is off.

Parameters, both optional, as this module reads the draft: each one limits the COMPRESSOR
OF THE ENDPOINT THAT RECEIVES IT.

- ``max_window_bits=N`` (8..15): in the client's offer, the window the server compresses
  with; in the server's response, the window the client compresses with.
- ``no_context_takeover`` (no value): in the offer, the server resets its compressor after
  every frame; in the response, the client does.

That is also how the draft's reference server (pywebsocket) applied them. Mapping from
:class:`~.permessage_deflate.DeflateSettings`, identical on both sides:
``server_max_window_bits`` / ``server_no_context_takeover`` govern what the server
compresses (the client offers them; the server also applies its own values to itself),
``client_max_window_bits`` / ``client_no_context_takeover`` govern what the client
compresses (the server answers with them; the client also applies its own values to
itself). ``level``, ``mem_level`` and ``threshold`` are local; the threshold applies to each
frame, since each frame is compressed or not on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...exceptions import NegotiationError
from ..handshake import ExtensionOffer
from .permessage_deflate import (
    RSV1,
    DeflateExtension,
    DeflateFactory,
    DeflateSettings,
    flag,
    parse_params,
    window_bits,
)

__all__ = ["WebkitDeflateFactory", "WebkitDeflateFrame"]

WEBKIT_DEFLATE_FRAME = "x-webkit-deflate-frame"
MAX_WINDOW_BITS = "max_window_bits"
NO_CONTEXT_TAKEOVER = "no_context_takeover"
_PARAMS = (MAX_WINDOW_BITS, NO_CONTEXT_TAKEOVER)
_CONTROL = 0x8


def _parse(offer: ExtensionOffer) -> tuple[int, bool]:
    """(window bits, no context takeover) an offer or a response asks of the peer's
    compressor; ValueError on an unknown, repeated or invalid parameter."""
    found = parse_params(offer, _PARAMS)
    bits = 15
    if MAX_WINDOW_BITS in found:
        bits = window_bits(MAX_WINDOW_BITS, found[MAX_WINDOW_BITS])
    return bits, flag(found, NO_CONTEXT_TAKEOVER)


class WebkitDeflateFrame(DeflateExtension):
    """deflate-frame on one connection: every frame is compressed or not on its own.
    ``name`` may be the prefixed or the unprefixed draft name."""

    def __init__(
        self, is_server: bool, *, name: str = WEBKIT_DEFLATE_FRAME, **negotiated: Any
    ) -> None:
        super().__init__(is_server, **negotiated)
        self.name = name

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
        if frame_start:
            # Every frame says for itself, continuation frames included.
            self._inflating = bool(rsv & RSV1)
        if not self._inflating:
            return data
        out = self._inflater.inflate(data, max_size, end=frame_end)
        if frame_end:
            self._inflating = False
            if self.remote_no_context_takeover:
                self._inflater.reset()
        return out

    def encode(
        self, opcode: int, data: bytes, *, fin: bool, compress: bool = True
    ) -> tuple[bytes, int]:
        if opcode >= _CONTROL or not (compress and self.enabled and len(data) >= self.threshold):
            return data, 0
        payload = self._deflater.compress(data, end=True)
        if self.local_no_context_takeover:
            self._deflater.reset()
        return payload, RSV1


class WebkitDeflateFactory(DeflateFactory[WebkitDeflateFrame]):
    """Negotiates deflate-frame from :class:`DeflateSettings` (mapping in the module
    docstring). ``name`` may be ``"deflate-frame"`` for the unprefixed draft name."""

    extension_type = WebkitDeflateFrame

    def __init__(
        self, settings: DeflateSettings | None = None, *, name: str = WEBKIT_DEFLATE_FRAME
    ) -> None:
        super().__init__(settings)
        self.name = name

    # -- server side --

    def accept(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, WebkitDeflateFrame] | None:
        """Answer one client offer, or None to decline one with an unknown, repeated or
        invalid parameter."""
        if offer.name != self.name:
            return None
        try:
            asked_bits, asked_nct = _parse(offer)
        except ValueError:
            return None
        s = self.settings
        # What the client asks of our compressor, narrowed further by our own settings.
        local_bits = min(s.server_max_window_bits, asked_bits)
        local_nct = s.server_no_context_takeover or asked_nct
        # What we ask of the client's compressor, and inflate with.
        response: list[tuple[str, str | None]] = []
        if s.client_max_window_bits < 15:
            response.append((MAX_WINDOW_BITS, str(s.client_max_window_bits)))
        if s.client_no_context_takeover:
            response.append((NO_CONTEXT_TAKEOVER, None))
        extension = self._extension(
            True, local_bits, s.client_max_window_bits, local_nct, s.client_no_context_takeover
        )
        return ExtensionOffer(self.name, tuple(response)), extension

    # -- client side --

    def offer(self) -> ExtensionOffer:
        """What we ask of the server's compressor: ``max_window_bits`` when below 15,
        ``no_context_takeover`` when the settings say so."""
        s = self.settings
        params: list[tuple[str, str | None]] = []
        if s.server_max_window_bits < 15:
            params.append((MAX_WINDOW_BITS, str(s.server_max_window_bits)))
        if s.server_no_context_takeover:
            params.append((NO_CONTEXT_TAKEOVER, None))
        return ExtensionOffer(self.name, tuple(params))

    def confirm(
        self, response: ExtensionOffer, offered: Sequence[ExtensionOffer]
    ) -> WebkitDeflateFrame:
        """Check the server's answer; NegotiationError if it is not this extension, was not
        offered, or has an unknown, repeated or invalid parameter. Offers of ours that do not
        parse (corral makes none) count as declined, not as a reason to refuse."""
        if response.name != self.name:
            raise NegotiationError(f"not a {self.name} response: {response.name!r}")
        ours = [offer for offer in offered if offer.name == self.name]
        if not ours:
            raise NegotiationError(f"the server accepted {self.name}, which was not offered")
        try:
            asked_bits, asked_nct = _parse(response)
        except ValueError as exc:
            raise NegotiationError(f"invalid {self.name} parameters: {exc}") from None
        # A server declines an offer it cannot read and may accept another (as permessage-
        # deflate's confirm does, such an offer is no reason to refuse an answer).
        requests: list[tuple[int, bool]] = []
        error: ValueError | None = None
        for offer in ours:
            try:
                requests.append(_parse(offer))
            except ValueError as exc:
                error = exc
        if not requests:
            raise NegotiationError(f"invalid {self.name} offer: {error}")
        s = self.settings
        # The answer does not say which offer it accepts: inflate with the largest window
        # any of them allowed, and drop the window only if every offer forbade takeover.
        remote_bits = max(bits for bits, _ in requests)
        remote_nct = all(nct for _, nct in requests)
        local_bits = min(s.client_max_window_bits, asked_bits)
        local_nct = s.client_no_context_takeover or asked_nct
        return self._extension(False, local_bits, remote_bits, local_nct, remote_nct)
