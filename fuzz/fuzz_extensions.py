"""Fuzz target ``extensions``: Sec-WebSocket-Extensions and the two deflate extensions
(RFC 6455 section 9.1, RFC 7692, x-webkit-deflate-frame).

Checks, for every input (header text, settings for each side, a payload and its framing):

- ``parse_extension_header`` raises nothing but ValueError, and what it parses formats back
  (``format_extension_header``) to text that parses to the same offers;
- ``server_accept`` takes any offers without raising; the answer it writes is confirmed by
  ``client_confirm`` of a client that made those offers, and the two extensions then agree:
  what either side compresses (whole messages and fragmented ones, with back references
  as far as 32 KiB) the other inflates to the same bytes, over several messages;
- ``client_confirm`` of any answer to corral's own offer raises nothing but
  NegotiationError; so does the deflate-frame factory's ``confirm``;
- the decoders fed arbitrary data, in arbitrary frames and pieces, never return more than
  the ``max_size`` they are given (a decompression bomb ends in PayloadTooBig after at most
  that much) and raise nothing but InvalidPayload, PayloadTooBig or ProtocolError.

Why: the header is the peer's text, the negotiated window sizes decide whether the two
ends can read each other at all, and inflation is where a few bytes can become gigabytes.
"""

from __future__ import annotations

import contextlib

import atheris
from _harness import INSTRUMENTED, Input, check, cut, main, use_sanitized_speedups

use_sanitized_speedups()
with atheris.instrument_imports(include=INSTRUMENTED):
    from corral.exceptions import InvalidPayload, NegotiationError, PayloadTooBig, ProtocolError
    from corral.protocol.extensions import (
        DeflateSettings,
        PerMessageDeflate,
        WebkitDeflateFactory,
        WebkitDeflateFrame,
    )
    from corral.protocol.extensions.base import Extension
    from corral.protocol.extensions.negotiation import client_confirm, client_offers, server_accept
    from corral.protocol.handshake import (
        ExtensionOffer,
        format_extension_header,
        parse_extension_header,
    )

_SIZES = (None, 0, 1, 10, 100, 1000, 65536)
_OPCODES = (0, 1, 2)


def _settings(inp: Input) -> DeflateSettings:
    flags = inp.byte()
    return DeflateSettings(
        server_max_window_bits=8 + (flags & 7),
        client_max_window_bits=8 + (flags >> 3 & 7),
        server_no_context_takeover=bool(inp.byte() & 1),
        client_no_context_takeover=bool(inp.byte() & 1),
        threshold=inp.byte() % 4 * 8,
    )


def _roundtrip(sender: Extension, receiver: Extension, message: bytes, pieces: int) -> None:
    """``message`` sent by one side in ``pieces`` fragments comes out whole on the other."""
    step = max(1, -(-len(message) // pieces))
    parts = [message[i : i + step] for i in range(0, len(message), step)] or [b""]
    got = []
    for i, part in enumerate(parts):
        opcode = 2 if i == 0 else 0
        fin = i == len(parts) - 1
        payload, rsv = sender.encode(opcode, part, fin=fin)
        got.append(receiver.decode(opcode, rsv, payload, frame_start=True, frame_end=True,
                                   fin=fin, max_size=None))
    check(b"".join(got) == message, "a message did not survive its compression",
          sender, receiver, len(message))


def _negotiate(values: list[str], offers: list[ExtensionOffer], server: DeflateSettings,
               client: DeflateSettings, message: bytes, pieces: int) -> None:
    accepted, answer = server_accept(offers, server)
    if answer is None:
        check(not accepted, "extensions without an answer", accepted)
        return
    response = parse_extension_header([answer])
    try:
        confirmed = client_confirm(response, offers, client)
    except NegotiationError as exc:
        check(False, "the client refused the server's answer", values, answer, str(exc))
        return
    (server_ext,) = accepted
    (client_ext,) = confirmed
    for _ in range(2):  # the second message uses the windows the first one left
        _roundtrip(server_ext, client_ext, message, pieces)
        _roundtrip(client_ext, server_ext, message[::-1], pieces)


def _confirm_any(offers: list[ExtensionOffer], client: DeflateSettings) -> None:
    with contextlib.suppress(NegotiationError):
        client_confirm(offers, client_offers(client), client)
    webkit = WebkitDeflateFactory(client)
    for offer in offers:
        with contextlib.suppress(NegotiationError):
            webkit.confirm(offer, [webkit.offer()])


def _decode(inp: Input, data: bytes, bits: int) -> None:
    """Arbitrary data through a receiving deflate extension, as the connection feeds it."""
    config = inp.byte()
    limit = _SIZES[config % len(_SIZES)]
    if config & 8:
        ext: Extension = WebkitDeflateFrame(bool(config & 16), remote_max_window_bits=bits,
                                            remote_no_context_takeover=bool(config & 32))
    else:
        ext = PerMessageDeflate(bool(config & 16), remote_max_window_bits=bits,
                                remote_no_context_takeover=bool(config & 32))
    frames = list(cut(data, inp.cuts()))
    rsv_bits = inp.byte() | inp.byte() << 8
    produced = 0
    try:
        for i, frame in enumerate(frames):
            opcode = _OPCODES[rsv_bits >> 14 & 1] + 1 if i == 0 else 0
            rsv = 0x40 if rsv_bits >> (i % 14) & 1 else 0
            fin = i == len(frames) - 1 or bool(config & 64 and i % 3 == 2)
            half = len(frame) // 2 if config & 128 else len(frame)
            for start, piece in ((True, frame[:half]), (False, frame[half:])):
                if not start and not piece:
                    continue
                budget = None if limit is None else limit - produced
                out = ext.decode(opcode, rsv, piece, frame_start=start,
                                 frame_end=not start or half == len(frame), fin=fin,
                                 max_size=budget)
                produced += len(out)
                if budget is None or len(out) <= budget:
                    continue
                # Data passed through as it came is the connection's to count (it fails the
                # message then); what an extension inflated must stay within the budget.
                check(out is piece, "inflated past max_size", len(out), budget)
                return
            if fin:
                produced = 0
    except (InvalidPayload, PayloadTooBig, ProtocolError):
        pass


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    config = inp.byte()
    server = _settings(inp)
    client = _settings(inp)
    header = inp.take(inp.byte()).decode("latin-1")
    spread = inp.u16() % 33000
    rest = inp.rest()
    values = header.split("\n")
    try:
        offers = parse_extension_header(values)
    except ValueError:
        offers = None
    if offers is not None:
        again = parse_extension_header([format_extension_header(offers)])
        check(again == offers, "format/parse changed the offers", offers, again)
        message = rest[:64] + bytes(spread) + rest[:64]
        _negotiate(values, offers, server, client, message, 1 + config % 4)
        _confirm_any(offers, client)
    _decode(Input(bytes((config,)) + rest[:40]), rest[40:], 8 + config % 8)


if __name__ == "__main__":
    main(test_one_input)
