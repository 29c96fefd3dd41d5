"""Incremental UTF-8 decoding that fails as soon as a sequence becomes impossible.

Section 8.1 only requires failing invalid text; Autobahn's section 6.4 also checks that the
failure happens in the frame (or the piece of a frame) where the error shows, not at the end
of the message. CPython's incremental decoder already rejects most impossible prefixes at
once; the one it keeps waiting on is a surrogate lead (ED A0..BF), checked here.
"""

from __future__ import annotations

import codecs

from ..exceptions import InvalidPayload

__all__ = ["Utf8Decoder"]

_Incremental = codecs.getincrementaldecoder("utf-8")


class Utf8Decoder:
    """Decode text pieces; raise :class:`InvalidPayload` at the first impossible byte."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _Incremental()

    def decode(self, data: bytes, final: bool = False) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise InvalidPayload("invalid UTF-8 in text message") from None
        if not final:
            pending = self._decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise InvalidPayload("invalid UTF-8 in text message (surrogate)")
        return text
