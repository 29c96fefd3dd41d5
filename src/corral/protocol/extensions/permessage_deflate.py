"""permessage-deflate (RFC 7692): negotiation and the per-message DEFLATE codec.

Sans-I/O: :class:`PerMessageDeflateFactory` turns ``Sec-WebSocket-Extensions`` offers and
answers into a :class:`PerMessageDeflate`, which the connection calls for every data frame.
Inflation is bounded: a message never grows past the size the connection allows, however
small its compressed form (a "zip bomb" fails with 1009 after at most that many bytes).

The small building blocks at the top (:class:`Deflater`, :class:`Inflater`, the parameter
checks) are shared with the older per-frame extension in :mod:`.webkit_deflate`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ...exceptions import InvalidPayload, NegotiationError, PayloadTooBig, ProtocolError
from ..frames import Opcode
from ..handshake import ExtensionOffer
from .base import Extension, ExtensionFactory

__all__ = ["DeflateSettings", "PerMessageDeflate", "PerMessageDeflateFactory"]

RSV1 = 0x40  # the "Per-Message Compressed" bit, as in the first header byte (section 6)
TAIL = b"\x00\x00\xff\xff"  # the end of an empty non-compressed block (sections 7.2.1, 7.2.2)
_CONTINUATION = int(Opcode.CONTINUATION)
_CONTROL = 0x8  # opcodes from here on are control frames, never compressed
# "a decimal integer value without leading zeroes between 8 to 15, inclusive" (7.1.2.1)
_WINDOW_BITS = re.compile(r"8|9|1[0-5]")

SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"
_PARAMS = (
    SERVER_NO_CONTEXT_TAKEOVER,
    CLIENT_NO_CONTEXT_TAKEOVER,
    SERVER_MAX_WINDOW_BITS,
    CLIENT_MAX_WINDOW_BITS,
)


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """What an endpoint wants from compression; negotiation may only narrow it.

    - level (6): zlib compression level, 0..9, or -1 for zlib's default.
    - mem_level (5): zlib memLevel, 1..9; lower uses less memory per connection.
    - server_max_window_bits (12), client_max_window_bits (12): base-2 log of the LZ77
      window, 8..15, that the server / the client compresses with. Each side uses its own
      value as a limit on itself and asks it of the peer.
    - server_no_context_takeover (False), client_no_context_takeover (False): the server /
      the client starts every message with an empty window (less memory, less compression).
    - threshold (64): messages shorter than this many bytes are sent uncompressed.
    """

    level: int = 6
    mem_level: int = 5
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    threshold: int = 64

    def __post_init__(self) -> None:
        check_settings(
            level=self.level,
            mem_level=self.mem_level,
            window_bits=(self.server_max_window_bits, self.client_max_window_bits),
            threshold=self.threshold,
        )


def check_settings(
    *, level: int, mem_level: int, window_bits: Sequence[int], threshold: int
) -> None:
    """ValueError unless every value is in the range zlib and RFC 7692 allow."""
    if not (level == -1 or 0 <= level <= 9):
        raise ValueError(f"compression level must be -1 or 0..9, not {level}")
    if not 1 <= mem_level <= 9:
        raise ValueError(f"mem_level must be 1..9, not {mem_level}")
    for bits in window_bits:
        if not 8 <= bits <= 15:
            raise ValueError(f"window bits must be 8..15, not {bits}")
    if threshold < 0:
        raise ValueError(f"threshold must not be negative, not {threshold}")


# -- the codec's two halves ---------------------------------------------------------------------


class Deflater:
    """A raw DEFLATE compressor, created on first use and dropped by :meth:`reset`.

    zlib refuses a raw deflate window of 8 bits (deflateInit2 returns Z_STREAM_ERROR since
    zlib 1.2.9), so 9 is used when 8 was negotiated, as other servers do. Strictly the peer
    may then see distances beyond 256 bytes; every zlib-based inflater accepts them, and
    ours inflates with at least 9 bits for the same reason (see :class:`Inflater`).
    """

    __slots__ = ("_level", "_mem_level", "_obj", "_wbits")

    def __init__(self, level: int, mem_level: int, window_bits: int) -> None:
        self._level = level
        self._mem_level = mem_level
        self._wbits = -max(window_bits, 9)
        self._obj: zlib._Compress | None = None

    def compress(self, data: bytes, *, end: bool) -> bytes:
        """Deflate ``data`` up to a byte boundary (Z_SYNC_FLUSH).

        With ``end`` the 4 octets 00 00 ff ff that end the sync flush's empty stored block are
        removed (RFC 7692 7.2.1 step 3). Without it the output is kept whole: a fragment of a
        message, or a frame whose compressed data the next frame continues, may end anywhere
        in the compressed stream (7.2.1), and the tail is only stripped once, at the end.
        """
        obj = self._obj
        if obj is None:
            obj = self._obj = zlib.compressobj(
                self._level, zlib.DEFLATED, self._wbits, self._mem_level
            )
        out = obj.compress(data) + obj.flush(zlib.Z_SYNC_FLUSH)
        if end:
            if out.endswith(TAIL):
                out = out[:-4]
            else:
                # Nothing new since the last flush (zlib returns nothing for a repeated
                # sync flush): 7.2.1 step 2 appends an empty stored block 00 00 00 ff ff,
                # step 3 removes 4 octets, leaving 0x00 (7.2.3.6).
                out += b"\x00"
        return out

    def reset(self) -> None:
        """Forget the window (no context takeover); the next compress starts afresh."""
        self._obj = None

    @property
    def level(self) -> int:
        return self._level

    @property
    def mem_level(self) -> int:
        return self._mem_level

    @property
    def window_bits(self) -> int:
        return -self._wbits


class Inflater:
    """A raw DEFLATE decompressor whose output per call is bounded; created on first use.

    The window is at least 9 bits even when 8 was negotiated: a zlib-based peer compresses
    with 9 then (zlib cannot do 8, see :class:`Deflater`), and a larger inflate window
    accepts everything a smaller one does.
    """

    __slots__ = ("_obj", "_wbits")

    def __init__(self, window_bits: int) -> None:
        self._wbits = -max(window_bits, 9)
        self._obj: zlib._Decompress | None = None

    def inflate(self, data: bytes, max_size: int | None, *, end: bool) -> bytes:
        """Inflate one piece of compressed data; ``end`` appends 00 00 ff ff (7.2.2).

        ``max_size`` is how many bytes the output may hold (None: no limit). zlib is asked
        for at most one byte more than that, so even a decompression bomb yields at most
        ``max_size + 1`` bytes before :class:`PayloadTooBig`. A corrupt stream raises
        :class:`InvalidPayload`, close code 1007: the frames are well formed (so not 1002)
        but the data inside the message is not consistent with its type, a DEFLATE stream
        (RFC 6455 7.4.1: "data within a message that was not consistent with the type of
        the message"). RFC 7692 names no code for it.
        """
        obj = self._obj
        if obj is None:
            obj = self._obj = zlib.decompressobj(self._wbits)
        try:
            out = _bounded(obj, data, max_size)
            if obj.unused_data:
                # A block with BFINAL set ended the stream (7.2.3.4); nothing may follow it.
                raise InvalidPayload("data after the final DEFLATE block")
            if end:
                if not obj.eof:
                    left = None if max_size is None else max_size - len(out)
                    rest = _bounded(obj, TAIL, left)
                    if rest:
                        out += rest
                if obj.eof:
                    self._obj = None  # a finished stream cannot go on: the next one is new
        except zlib.error as exc:
            raise InvalidPayload(f"invalid compressed data: {exc}") from None
        return out

    def reset(self) -> None:
        """Forget the window (the peer uses no context takeover)."""
        self._obj = None


def _bounded(obj: zlib._Decompress, data: bytes, max_size: int | None) -> bytes:
    if max_size is None:
        return obj.decompress(data)
    max_size = max(max_size, 0)
    out = obj.decompress(data, max_size + 1)  # max_length 0 would mean "no limit"
    if len(out) > max_size or obj.unconsumed_tail:
        # Sizes are relative to what the message could still grow by.
        raise PayloadTooBig(len(out), max_size)
    return out


# -- extension parameters ------------------------------------------------------------------------


def parse_params(offer: ExtensionOffer, names: Collection[str]) -> dict[str, str | None]:
    """The parameters of ``offer`` by name; ValueError on an unknown or a repeated one.

    RFC 7692 section 7 (and the deflate-frame draft alike): an offer or a response with "an
    extension parameter not defined for use" or "multiple extension parameters with the same
    name" is declined or fails the connection.
    """
    found: dict[str, str | None] = {}
    for name, value in offer.params:
        if name not in names:
            raise ValueError(f"unknown parameter {name!r}")
        if name in found:
            raise ValueError(f"parameter {name!r} is repeated")
        found[name] = value
    return found


def flag(found: dict[str, str | None], name: str) -> bool:
    """Whether a valueless parameter is present; ValueError if it carries a value."""
    if name not in found:
        return False
    if found[name] is not None:
        raise ValueError(f"parameter {name!r} takes no value")
    return True


def window_bits(name: str, value: str | None) -> int:
    """A window-bits value: 8..15 in decimal without leading zeroes; ValueError otherwise.

    A quoted-string value arrives here already unquoted by the header parser.
    """
    if value is None or not _WINDOW_BITS.fullmatch(value):
        raise ValueError(f"invalid value for {name!r}: {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class _Params:
    """One permessage-deflate element, checked. ``client_max_window_bits`` is None when
    absent and 15 when offered without a value ("no hint")."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int | None
    client_max_window_bits: int | None


def _parse(offer: ExtensionOffer, *, response: bool) -> _Params:
    """Check an offer's or a response's parameters (section 7.1); ValueError if invalid."""
    found = parse_params(offer, _PARAMS)
    server_bits = None
    if SERVER_MAX_WINDOW_BITS in found:
        # 7.1.2.1: a value is required, in the offer and in the response.
        server_bits = window_bits(SERVER_MAX_WINDOW_BITS, found[SERVER_MAX_WINDOW_BITS])
    client_bits = None
    if CLIENT_MAX_WINDOW_BITS in found:
        value = found[CLIENT_MAX_WINDOW_BITS]
        # 7.1.2.2: in an offer, "no value or a decimal integer value ... between 8 to 15";
        # a response limits the client, so it must say to what.
        if value is None and not response:
            client_bits = 15
        else:
            client_bits = window_bits(CLIENT_MAX_WINDOW_BITS, value)
    return _Params(
        # 7.1.1.1, 7.1.1.2: both flags have no value.
        server_no_context_takeover=flag(found, SERVER_NO_CONTEXT_TAKEOVER),
        client_no_context_takeover=flag(found, CLIENT_NO_CONTEXT_TAKEOVER),
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


# -- the extension -------------------------------------------------------------------------------


class DeflateExtension(Extension):
    """What both deflate extensions hold for one connection: the negotiated values and
    the lazily created zlib objects. ``local_*`` apply to what this endpoint compresses,
    ``remote_*`` to what it inflates; ``enabled`` toggles compression of what is sent after
    the change (Cowboy's ``{deflate, false}``); what arrives is always inflated."""

    rsv_bits = RSV1

    def __init__(
        self,
        is_server: bool,
        *,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        level: int = 6,
        mem_level: int = 5,
        threshold: int = 64,
    ) -> None:
        check_settings(
            level=level,
            mem_level=mem_level,
            window_bits=(local_max_window_bits, remote_max_window_bits),
            threshold=threshold,
        )
        self.is_server = is_server
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.threshold = threshold
        self.enabled = True
        self._deflater = Deflater(level, mem_level, local_max_window_bits)
        self._inflater = Inflater(remote_max_window_bits)
        self._inflating = False  # what is being received is compressed

    def __repr__(self) -> str:
        side = "server" if self.is_server else "client"
        return (
            f"<{type(self).__name__} {side} {self.name}"
            f" local_max_window_bits={self.local_max_window_bits}"
            f" remote_max_window_bits={self.remote_max_window_bits}"
            f" local_no_context_takeover={self.local_no_context_takeover}"
            f" remote_no_context_takeover={self.remote_no_context_takeover}>"
        )


_E = TypeVar("_E", bound="DeflateExtension")


class PerMessageDeflate(DeflateExtension):
    """permessage-deflate on one connection (RFC 7692): a message is compressed or not
    as a whole, decided on its first frame."""

    name = "permessage-deflate"

    def __init__(self, is_server: bool, **negotiated: Any) -> None:
        super().__init__(is_server, **negotiated)
        self._compressing = False  # the message being sent is compressed

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
            if opcode == _CONTINUATION:
                if rsv & RSV1:
                    # Section 6: "An endpoint MUST NOT set the "Per-Message Compressed" bit
                    # of control frames and non-first fragments of a data message. An
                    # endpoint receiving such a frame MUST _Fail the WebSocket Connection_."
                    raise ProtocolError("RSV1 set on a continuation frame")
            else:
                # Section 6: the bit on the first frame says whether the message is compressed.
                self._inflating = bool(rsv & RSV1)
        if not self._inflating:
            return data
        end = fin and frame_end
        out = self._inflater.inflate(data, max_size, end=end)
        if end:
            self._inflating = False
            if self.remote_no_context_takeover:
                self._inflater.reset()
        return out

    def encode(
        self, opcode: int, data: bytes, *, fin: bool, compress: bool = True
    ) -> tuple[bytes, int]:
        if opcode >= _CONTROL:
            return data, 0
        first = opcode != _CONTINUATION
        if first:
            # Decided once per message: the first fragment's choice holds to the end.
            self._compressing = compress and self.enabled and len(data) >= self.threshold
        if not self._compressing:
            return data, 0
        payload = self._deflater.compress(data, end=fin)
        if fin:
            self._compressing = False
            if self.local_no_context_takeover:
                self._deflater.reset()
        # Section 6: RSV1 on the first frame only.
        return payload, RSV1 if first else 0

    def shared_key(self) -> Hashable | None:
        # Without context takeover every message is compressed afresh: connections with the
        # same parameters produce the same bytes for it (a publish compresses it once).
        if not self.local_no_context_takeover or self._compressing:
            return None
        if not self.enabled:
            return (self.name, False)
        deflater = self._deflater
        return (self.name, deflater.level, deflater.mem_level, deflater.window_bits,
                self.threshold)

    def encode_alone(self, opcode: int, data: bytes) -> tuple[bytes, int]:
        if not self.enabled or len(data) < self.threshold:
            return data, 0
        deflater = self._deflater
        fresh = Deflater(deflater.level, deflater.mem_level, deflater.window_bits)
        return fresh.compress(data, end=True), RSV1


# -- negotiation ---------------------------------------------------------------------------------


class DeflateFactory(ExtensionFactory, Generic[_E]):
    """What the two deflate factories share: the settings, and building the extension
    from the negotiated values."""

    extension_type: type[_E]

    def __init__(self, settings: DeflateSettings | None = None) -> None:
        self.settings = settings if settings is not None else DeflateSettings()

    def _extension(
        self, is_server: bool, local_bits: int, remote_bits: int, local_nct: bool, remote_nct: bool
    ) -> _E:
        s = self.settings
        extension = self.extension_type(
            is_server,
            local_max_window_bits=local_bits,
            remote_max_window_bits=remote_bits,
            local_no_context_takeover=local_nct,
            remote_no_context_takeover=remote_nct,
            level=s.level,
            mem_level=s.mem_level,
            threshold=s.threshold,
        )
        extension.name = self.name
        return extension


class PerMessageDeflateFactory(DeflateFactory[PerMessageDeflate]):
    """Negotiates permessage-deflate from :class:`DeflateSettings`, on either side."""

    name = "permessage-deflate"
    extension_type = PerMessageDeflate

    # -- server side --

    def accept(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, PerMessageDeflate] | None:
        """Answer one client offer, or None to decline it (section 7.1).

        "A server MUST decline an extension negotiation offer for this extension if any of
        the following conditions are met: the negotiation offer contains an extension
        parameter not defined for use in an offer; ... an extension parameter with an
        invalid value; ... multiple extension parameters with the same name."
        """
        if offer.name != self.name:
            return None
        try:
            offered = _parse(offer, response=False)
        except ValueError:
            return None
        s = self.settings
        response: list[tuple[str, str | None]] = []
        # 7.1.1.1: a server accepting an offer with server_no_context_takeover MUST include
        # it in the response, and MAY include it even if the offer did not.
        local_nct = s.server_no_context_takeover or offered.server_no_context_takeover
        if local_nct:
            response.append((SERVER_NO_CONTEXT_TAKEOVER, None))
        # 7.1.1.2: the server MAY include client_no_context_takeover; an offer carrying it
        # is the client's hint that it will not need the window, so it is echoed and our
        # inflater can be dropped between messages.
        remote_nct = s.client_no_context_takeover or offered.client_no_context_takeover
        if remote_nct:
            response.append((CLIENT_NO_CONTEXT_TAKEOVER, None))
        # 7.1.2.1: accepting server_max_window_bits means answering with "the same or
        # smaller value"; a server MAY send it unasked, to limit itself.
        local_bits = s.server_max_window_bits
        if offered.server_max_window_bits is not None:
            local_bits = min(local_bits, offered.server_max_window_bits)
        if offered.server_max_window_bits is not None or local_bits < 15:
            response.append((SERVER_MAX_WINDOW_BITS, str(local_bits)))
        # 7.1.2.2: "If a received extension negotiation offer doesn't have the
        # client_max_window_bits extension parameter, the corresponding extension
        # negotiation response to the offer MUST NOT include" it: the client may then use
        # a 15-bit window and we inflate with one. Otherwise our limit, no larger than the
        # client's own value ("equal to or smaller than the received value").
        remote_bits = 15
        if offered.client_max_window_bits is not None:
            remote_bits = min(s.client_max_window_bits, offered.client_max_window_bits)
            if remote_bits < 15:
                response.append((CLIENT_MAX_WINDOW_BITS, str(remote_bits)))
        extension = self._extension(True, local_bits, remote_bits, local_nct, remote_nct)
        return ExtensionOffer(self.name, tuple(response)), extension

    # -- client side --

    def offer(self) -> ExtensionOffer:
        """``permessage-deflate; client_max_window_bits`` and what the settings ask of the
        server.

        client_max_window_bits goes out bare, as browsers send it (7.1.2.2: it only says that
        the client supports the parameter), so any answer from 8 to 15 is valid. With a value,
        a server that wants a larger window than that must refuse (Node's ws answers 400) or
        answer out of bounds (Autobahn 13.4, 13.6). The window we compress with stays our
        choice: the smaller of the settings' and the answer's (``_confirm_one``)."""
        s = self.settings
        params: list[tuple[str, str | None]] = [(CLIENT_MAX_WINDOW_BITS, None)]
        if s.server_max_window_bits < 15:
            params.append((SERVER_MAX_WINDOW_BITS, str(s.server_max_window_bits)))
        if s.server_no_context_takeover:
            params.append((SERVER_NO_CONTEXT_TAKEOVER, None))
        if s.client_no_context_takeover:
            params.append((CLIENT_NO_CONTEXT_TAKEOVER, None))
        return ExtensionOffer(self.name, tuple(params))

    def confirm(
        self, response: ExtensionOffer, offered: Sequence[ExtensionOffer]
    ) -> PerMessageDeflate:
        """Check the server's answer against what we offered; NegotiationError if it fails.

        The answer does not say which of several offers it accepts, so it must be a valid
        answer to at least one of them.
        """
        if response.name != self.name:
            raise NegotiationError(f"not a {self.name} response: {response.name!r}")
        ours = [offer for offer in offered if offer.name == self.name]
        if not ours:
            raise NegotiationError(f"the server accepted {self.name}, which was not offered")
        try:
            answer = _parse(response, response=True)
        except ValueError as exc:
            # Section 7.1: a response with a parameter "not defined for use in a response",
            # "with an invalid value" or repeated fails the connection.
            raise NegotiationError(f"invalid {self.name} response: {exc}") from None
        error: NegotiationError | None = None
        for offer in ours:
            try:
                return self._confirm_one(answer, _parse(offer, response=False))
            except NegotiationError as exc:
                error = error or exc
            except ValueError as exc:  # an offer we could not have made
                error = error or NegotiationError(f"invalid {self.name} offer: {exc}")
        assert error is not None
        raise error

    def _confirm_one(self, answer: _Params, offer: _Params) -> PerMessageDeflate:
        # 7.1.1.1: a server that accepts an offer with server_no_context_takeover includes it.
        if offer.server_no_context_takeover and not answer.server_no_context_takeover:
            raise NegotiationError("server_no_context_takeover was requested but not accepted")
        # 7.1.2.1: accepting server_max_window_bits means answering with "the same or
        # smaller value as the offer"; unasked, the server may still limit itself.
        remote_bits = 15
        if answer.server_max_window_bits is not None:
            remote_bits = answer.server_max_window_bits
        if offer.server_max_window_bits is not None:
            if answer.server_max_window_bits is None:
                raise NegotiationError("server_max_window_bits was requested but not accepted")
            if answer.server_max_window_bits > offer.server_max_window_bits:
                raise NegotiationError(
                    f"server_max_window_bits={answer.server_max_window_bits} is larger than"
                    f" the {offer.server_max_window_bits} requested"
                )
        # 7.1.2.2: the response MUST NOT include client_max_window_bits unless the offer did,
        # and then with "a value equal to or smaller than" the offered one.
        local_bits = self.settings.client_max_window_bits
        if answer.client_max_window_bits is not None:
            if offer.client_max_window_bits is None:
                raise NegotiationError("client_max_window_bits in the response was not offered")
            if answer.client_max_window_bits > offer.client_max_window_bits:
                raise NegotiationError(
                    f"client_max_window_bits={answer.client_max_window_bits} is larger than"
                    f" the {offer.client_max_window_bits} offered"
                )
            local_bits = min(local_bits, answer.client_max_window_bits)
        # 7.1.1.2: with client_no_context_takeover in the response "the client MUST NOT use
        # context takeover"; without it the client may still choose not to.
        local_nct = self.settings.client_no_context_takeover or answer.client_no_context_takeover
        # 7.1.1.1: the server may announce server_no_context_takeover unasked.
        remote_nct = answer.server_no_context_takeover
        return self._extension(False, local_bits, remote_bits, local_nct, remote_nct)
