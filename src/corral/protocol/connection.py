"""The WebSocket connection state machine, after the handshake (RFC 6455 sections 5-8).

Sans-I/O: ``receive_data`` takes bytes and returns events; the ``send_*`` methods queue
frames that ``data_to_send`` hands out. An I/O layer that chooses where it reads may also ask
``payload_buffer`` where the rest of a large payload belongs, read it straight there and say
so with ``payload_received``. Timers, sockets and the event loop belong to the I/O layer.
Every error the peer can cause is turned into a close frame here, in one place (``_fail``):
1002 protocol error, 1007 invalid data, 1009 too big.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Hashable, Sequence

from ..accel import PayloadBuffer, build_frame, frame_header, parse_frames
from ..exceptions import (
    ConnectionClosed,
    InvalidPayload,
    PayloadTooBig,
    ProtocolError,
    closed_error,
)
from .events import CloseReceived, Event, Failed, Fragment, Message, Ping, Pong
from .extensions.base import Extension
from .frames import CloseCode, Opcode, parse_close, serialize_close
from .reader import FrameReader
from .utf8 import Utf8Decoder

__all__ = ["DIRECT_READ_MIN", "FRAME_CHARGE", "SPLIT_PAYLOAD", "Connection", "Side", "State"]

#: Every continuation frame counts at least this many bytes against ``max_message_size``.
#: A message's frames each cost the receiver work of their own (about 2 us here, compiled),
#: so the size limit also bounds the frames of one message: at most max_message_size / 16 + 1
#: (65,537 at the default 1 MiB, about 0.15 s of CPU), and an endless run of empty
#: continuations ends in 1009 after at most that many. Fragments of 16 bytes or more pass at
#: their real size, however many there are. Measured in bench/fragments.py.
FRAME_CHARGE = 16

#: ``payload_buffer`` offers the message's own buffer when at least this much of a frame's
#: payload is still to come. Below it, reading the rest into a shared buffer costs a copy of
#: less than this, but that read also takes whatever follows the frame; above it, the copy
#: costs more than the extra read that a view ending exactly at the frame's end implies.
DIRECT_READ_MIN = 64 * 1024
# A message's buffer of its full declared size is made only once this share of it (1/8) has
# arrived: a header alone must not make a connection allocate up to max_message_size, or
# many stalled peers would cost many times what they sent.
PAYLOAD_BUFFER_SHARE = 8
# An unmasked frame with a payload this large is queued as header and payload apart
# (``out_split``): a copy of the payload into one frame costs more than a second iovec.
SPLIT_PAYLOAD = 8 * 1024

# The key of the uncompressed frame among the frames of one publish (broadcast_frame).
_PLAIN_FRAME = ("plain",)


class Side(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """OPEN: messages flow. CLOSING: a close frame was sent or received, not both.
    CLOSED: the close handshake is done, or the connection failed or was lost."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


def _random_mask() -> bytes:
    return os.urandom(4)


class Connection:
    """One WebSocket connection's protocol state, shared by server and client."""

    __slots__ = (
        "_decoder",
        "_ext_rsv",
        "_extensions",
        "_msg_buf",
        "_msg_filled",
        "_msg_first",
        "_msg_opcode",
        "_msg_overhead",
        "_msg_payload",
        "_msg_size",
        "_out",
        "_out_opcode",
        "_owed_close",
        "_plain",
        "_reader",
        "_receive_fragments",
        "close_received",
        "close_sent",
        "failure",
        "mask_key",
        "max_message_size",
        "out_split",
        "payload_pending",
        "side",
        "state",
    )

    def __init__(
        self,
        side: Side,
        *,
        max_message_size: int | None = 1 << 20,
        max_frame_size: int | None = None,
        receive_fragments: bool = False,
        extensions: Sequence[Extension] = (),
        mask_key: Callable[[], bytes] = _random_mask,
    ) -> None:
        self.side = side
        self.state = State.OPEN
        self.max_message_size = max_message_size
        self._receive_fragments = receive_fragments
        self.mask_key = mask_key
        self._reader = FrameReader(
            require_mask=side is Side.SERVER, max_frame_size=max_frame_size
        )
        self._extensions = tuple(extensions)
        self._plain = not self._extensions and not receive_fragments  # the fast path applies
        ext_rsv = 0
        for ext in self._extensions:
            if ext_rsv & ext.rsv_bits:
                raise ValueError("two extensions claim the same RSV bit")
            ext_rsv |= ext.rsv_bits
        self._ext_rsv = ext_rsv
        self._out: list[bytes] = []
        # Some payload in _out is apart from its header: write the list with writelines.
        self.out_split = False
        self._msg_opcode = -1  # opcode of the message being received, -1 between messages
        # The message being received: its first piece as it came, then (from the second
        # piece on) one growing buffer, so many tiny fragments cost no more than their bytes.
        self._msg_first: bytes | None = None
        self._msg_buf: bytearray | None = None
        # The last frame of a message, arriving in pieces: the message's own buffer, of its
        # final size, and how much of it is filled. Pieces are copied into it, or read
        # straight into it (payload_buffer); it becomes the message's bytes without a copy.
        self._msg_payload: PayloadBuffer | None = None
        self._msg_filled = 0
        # Read-only for others: True while that buffer exists. When False, payload_buffer
        # returns None, so an I/O layer asking before every read can skip the call.
        self.payload_pending = False
        self._msg_size = 0
        # What the message's short continuation frames are charged beyond their payload
        # (FRAME_CHARGE): counted against max_message_size with _msg_size, but not a byte of it.
        self._msg_overhead = 0
        self._decoder: Utf8Decoder | None = None
        self._out_opcode = -1  # opcode of a fragmented message being sent
        # A close frame this side owes the peer (an echo, or a failure's code). It goes out at
        # the next data_to_send(), after whatever the application queued in answer to the
        # events of the same data: messages before a bad frame still get their replies
        # (Autobahn 3.2, 5.15, 7.1.6).
        self._owed_close: int | None = None
        self.close_received: tuple[int, str] | None = None
        self.close_sent: tuple[int, str] | None = None
        self.failure: ProtocolError | None = None

    # -- limits that may change at run time -------------------------------------------------

    @property
    def receive_fragments(self) -> bool:
        return self._receive_fragments

    @receive_fragments.setter
    def receive_fragments(self, value: bool) -> None:
        self._receive_fragments = value
        self._plain = not self._extensions and not value

    @property
    def max_frame_size(self) -> int | None:
        return self._reader.max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int | None) -> None:
        self._reader.max_frame_size = value

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the network; return the events they complete.

        Nothing keeps a reference to ``data``: the caller may reuse its buffer at once."""
        if self.state is State.CLOSED or self.close_received is not None or self.failure:
            return []  # 5.5.1: nothing is processed after a close frame, 7.1.7: or a failure
        reader = self._reader
        events: list[Event] = []
        try:
            if reader.idle:
                # The common case: whole frames, parsed in one call (compiled when built).
                # Whatever follows them goes to the reader with the parser's findings.
                limit = reader.max_frame_size
                frames, pos, code, reason, header = parse_frames(
                    data, 0, reader.require_mask, -1 if limit is None else limit
                )
                for opcode, fin, rsv, payload in frames:
                    if self._frame_piece(opcode, fin, rsv, payload, True, True, len(payload),
                                         events):
                        return events  # a close frame: nothing after it is processed
                if pos == len(data) and not code:
                    return events
                chunks = reader.rest(data, pos, code, reason, header)
            else:
                chunks = reader.feed(data)
            for opcode, fin, rsv, piece, first, last, length in chunks:
                if self._frame_piece(opcode, fin, rsv, piece, first, last, length, events):
                    return events
            if reader.error is not None:
                raise reader.error
        except ProtocolError as exc:
            self._fail(exc, events)
        return events

    def payload_buffer(self) -> memoryview | None:
        """Where the next bytes of the stream belong when they are the rest of a large
        payload: a writable view of exactly that rest (``DIRECT_READ_MIN`` bytes or more),
        inside the message's own buffer. Read into it, then call ``payload_received``. None
        when the next bytes go to ``receive_data`` instead: between frames, for a small
        rest, and for messages that extensions transform, that are streamed as fragments or
        that no ``max_message_size`` bounds.
        """
        payload = self._msg_payload
        if payload is None:
            return None
        size = len(payload)
        if size - self._msg_filled < DIRECT_READ_MIN or self.state is State.CLOSED:
            return None
        return payload.view(self._msg_filled, size)

    def payload_received(self, n: int) -> list[Event]:
        """``n`` bytes were read into the start of the view ``payload_buffer`` returned:
        unmask them where they are; return the events they complete (the message, when it
        is whole)."""
        if self.state is State.CLOSED or self.close_received is not None or self.failure:
            return []  # as receive_data: nothing is processed after a close or a failure
        payload = self._msg_payload
        start = self._msg_filled
        if payload is None or not 0 <= n <= len(payload) - start:
            raise ValueError("payload_received without a view from payload_buffer to fill")
        self._msg_filled = start + n
        piece = payload.view(start, start + n)
        events: list[Event] = []
        try:
            # The payload buffer holds a frame with FIN set: its end is the message's.
            last = self._reader.feed_in_place(piece)
            # The text decoder takes bytes (and copies what it is given anyway).
            text = piece.tobytes() if self._msg_opcode == Opcode.TEXT else b""
            self._piece_in_place(text, last, events)
        except ProtocolError as exc:
            self._fail(exc, events)
        return events

    def _frame_piece(self, opcode: int, fin: bool, rsv: int, data: bytes, first: bool,
                     last: bool, length: int, events: list[Event]) -> bool:
        """Handle one piece of a frame (a whole frame is one piece, first and last): the one
        step that checks a frame against the connection's policy and assembles messages.
        True when it was a close frame."""
        if rsv & ~self._ext_rsv:
            # 5.2: "MUST be 0 unless an extension is negotiated that defines meanings"
            raise ProtocolError("reserved bits set")
        if opcode >= 8:
            if rsv:
                raise ProtocolError("reserved bits set on a control frame")
            self._control(opcode, data, events)
            return self.close_received is not None
        if first:
            if last and fin and opcode and self._msg_opcode < 0 and self._plain:
                # A whole message in one frame, none in progress, no extension, not
                # streamed: handed out as it is.
                limit = self.max_message_size
                if limit is not None and length > limit:
                    raise PayloadTooBig(length, limit)
                if opcode == Opcode.TEXT:
                    try:
                        events.append(Message(data.decode()))
                    except UnicodeDecodeError:
                        raise InvalidPayload("invalid UTF-8 in text message") from None
                else:
                    events.append(Message(data))
                return False
            self._frame_start(opcode, length)
        if (not last and fin and self._msg_payload is None and self._plain
                and self.max_message_size is not None
                and (self._collected() + len(data)) * PAYLOAD_BUFFER_SHARE >= self._msg_size):
            self._start_payload_buffer()
        if self._extensions:
            data = self._decode_extensions(opcode, rsv, data, first, last, fin)
            self._check_size(len(data))
        self._add_payload(data, last and fin, events)
        return False

    def _frame_start(self, opcode: int, length: int) -> None:
        if opcode == Opcode.CONTINUATION:
            if self._msg_opcode < 0:
                raise ProtocolError("continuation frame without a message to continue")
            if length < FRAME_CHARGE:
                # Each frame costs work of its own: a short one counts as FRAME_CHARGE bytes,
                # so a flood of tiny or empty fragments meets the size limit (1009).
                self._msg_overhead += FRAME_CHARGE - length
        else:
            if self._msg_opcode >= 0:
                # 5.4: fragments of one message may not be interleaved with another message.
                raise ProtocolError("new data frame while a fragmented message is in progress")
            self._msg_opcode = opcode
        # Without extensions the declared length is the payload's; with them only the
        # charge is known before the frame is inflated.
        self._check_size(0 if self._extensions else length)

    def _check_size(self, length: int) -> None:
        limit = self.max_message_size
        charged = self._msg_size + self._msg_overhead + length
        if limit is not None and charged > limit:
            if self._msg_overhead:
                raise PayloadTooBig(charged, limit, f"bytes (fragments under {FRAME_CHARGE}"
                                                    f" count as {FRAME_CHARGE})")
            raise PayloadTooBig(charged, limit)
        self._msg_size += length

    def _decode_extensions(
        self, opcode: int, rsv: int, data: bytes, first: bool, last: bool, fin: bool
    ) -> bytes:
        limit = self.max_message_size
        for ext in reversed(self._extensions):
            budget = None if limit is None else limit - self._msg_size - self._msg_overhead
            try:
                data = ext.decode(opcode, rsv, data, frame_start=first, frame_end=last,
                                  fin=fin, max_size=budget)
            except PayloadTooBig as exc:
                if limit is None or exc.max_size != budget:
                    raise
                # Report whole-message sizes, not the remaining budget the extension saw.
                raise PayloadTooBig(self._msg_size + self._msg_overhead + exc.size,
                                    limit) from None
        return data

    def _collected(self) -> int:
        """Bytes of the current message collected so far (outside a payload buffer)."""
        if self._msg_buf is not None:
            return len(self._msg_buf)
        return len(self._msg_first) if self._msg_first is not None else 0

    def _start_payload_buffer(self) -> None:
        """The last frame of a plain message arrives in pieces, and an eighth of the message
        is here: collect it in one buffer of its final size, which the rest of the frame may
        be read straight into.

        That size was checked against ``max_message_size`` on the declared lengths; without
        that limit nothing bounds what a header may declare, and pieces are collected as
        they come instead (see ``receive_data``)."""
        payload = PayloadBuffer(self._msg_size)
        earlier = self._msg_buf if self._msg_buf is not None else self._msg_first
        filled = 0
        if earlier:
            filled = len(earlier)
            payload.view(0, filled)[:] = earlier
        self._msg_first = self._msg_buf = None
        self._msg_payload = payload
        self._msg_filled = filled
        self.payload_pending = True

    def _piece_in_place(self, piece: bytes, message_end: bool, events: list[Event]) -> None:
        """A piece of the message is in its payload buffer: check it (a text message's),
        and at the end hand the message out."""
        text = self._msg_opcode == Opcode.TEXT
        if text:
            # 8.1 fail fast: each piece is checked as it comes, the last one as an end.
            if self._decoder is None:
                self._decoder = Utf8Decoder()
            self._decoder.decode(piece, message_end)
        if message_end:
            assert self._msg_payload is not None
            payload = self._msg_payload.take()
            events.append(Message(payload.decode() if text else payload))
            self._end_message()

    def _add_payload(self, data: bytes, message_end: bool, events: list[Event]) -> None:
        text = self._msg_opcode == Opcode.TEXT
        if self._msg_payload is not None:
            start = self._msg_filled
            if data:
                self._msg_filled = start + len(data)
                self._msg_payload.view(start, self._msg_filled)[:] = data
            self._piece_in_place(data, message_end, events)
            return
        if self.receive_fragments:
            piece: str | bytes = data
            if text:
                if self._decoder is None:
                    self._decoder = Utf8Decoder()
                piece = self._decoder.decode(data, message_end)
            if piece or message_end:
                events.append(Fragment(piece, message_end))
        elif not message_end:
            if text:
                # 8.1 fail fast: validate each piece as it comes (the text is decoded once,
                # at the end, from the bytes).
                if self._decoder is None:
                    self._decoder = Utf8Decoder()
                self._decoder.decode(data)
            if not data:
                return
            if self._msg_first is None and self._msg_buf is None:
                self._msg_first = data
            else:
                if self._msg_buf is None:
                    self._msg_buf = bytearray(self._msg_first or b"")
                    self._msg_first = None
                self._msg_buf += data
            return
        else:
            payload: bytes | bytearray = data
            if self._msg_buf is not None:
                self._msg_buf += data
                payload = self._msg_buf
            elif self._msg_first is not None:
                payload = self._msg_first + data
            if not text:
                events.append(Message(bytes(payload)))
            elif self._decoder is None:
                try:
                    events.append(Message(payload.decode()))
                except UnicodeDecodeError:
                    raise InvalidPayload("invalid UTF-8 in text message") from None
            else:
                self._decoder.decode(data, True)
                events.append(Message(payload.decode()))
        if message_end:
            self._end_message()

    def _end_message(self) -> None:
        self._msg_opcode = -1
        self._msg_first = None
        self._msg_buf = None
        self._msg_payload = None
        self._msg_filled = 0
        self.payload_pending = False
        self._msg_size = 0
        self._msg_overhead = 0
        self._decoder = None

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == Opcode.PING:
            # 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
            # response, unless it already received a Close frame." Having sent one is no
            # excuse: a pong is a control frame, still allowed after our close (5.5.1).
            if self.close_received is None:
                self._queue(Opcode.PONG, payload)
            events.append(Ping(payload))
        elif opcode == Opcode.PONG:
            events.append(Pong(payload))
        else:
            code, reason = parse_close(payload)
            self.close_received = (code, reason)
            events.append(CloseReceived(code, reason))
            if self.close_sent is None:
                # 5.5.1: "the endpoint MUST send a Close frame in response", typically
                # echoing the status code received.
                self._owed_close = code
            else:
                self.state = State.CLOSED

    def _fail(self, exc: ProtocolError, events: list[Event]) -> None:
        """7.1.7 _Fail the WebSocket Connection_: send a close frame with the error's code.

        Messages completed before the error in the same data are valid and may still be
        answered (Autobahn 3.2, 4.1.3, 5.15): the close then waits for ``data_to_send``.
        """
        # Kept without its traceback and chained errors: their frames hold the data given
        # to receive_data, which the caller may reuse once the call returns.
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        self.failure = exc
        self._msg_payload = None  # nothing more is read into it
        self.payload_pending = False
        events.append(Failed(exc.close_code, str(exc)))
        if self.close_sent is None:
            self._owed_close = exc.close_code
        else:
            self.state = State.CLOSED

    def _settle_close(self) -> None:
        code = self._owed_close
        self._owed_close = None
        if code is not None and self.close_sent is None:
            echo = None if code == CloseCode.NO_STATUS else code
            self._queue(Opcode.CLOSE, serialize_close(echo, ""))
            self.close_sent = (code, "")
        self.state = State.CLOSED

    def receive_eof(self) -> None:
        """The peer closed TCP. Without a close handshake that is an abnormal closure."""
        self.state = State.CLOSED

    # -- sending ------------------------------------------------------------------------------

    def _queue(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> None:
        if self.side is Side.CLIENT:
            self._out.append(build_frame(opcode, payload, fin, rsv, self.mask_key()))
        elif len(payload) < SPLIT_PAYLOAD:
            self._out.append(build_frame(opcode, payload, fin, rsv, None))
        else:
            # Header and payload apart, to be written together (writev) without copying
            # the payload into a frame first.
            self._out.append(frame_header(opcode, len(payload), fin, rsv))
            self._out.append(payload if type(payload) is bytes else bytes(payload))
            self.out_split = True

    def _check_open(self) -> None:
        if self.state is not State.OPEN or self.close_sent is not None:
            code, reason = self.close_received or self.close_sent or (CloseCode.ABNORMAL, "")
            raise closed_error(code, reason)

    def _send_data(self, opcode: int, payload: bytes, fin: bool, compress: bool) -> None:
        rsv = 0
        for ext in self._extensions:
            payload, bits = ext.encode(opcode, payload, fin=fin, compress=compress)
            rsv |= bits
        self._queue(opcode, payload, fin, rsv)

    def send_message(
        self, data: str | bytes | bytearray | memoryview, compress: bool = True
    ) -> None:
        """Queue a whole message: text for ``str``, binary for bytes-like. ``compress=False``
        sends it uncompressed even when a compression extension is active."""
        if self.state is not State.OPEN or self.close_sent is not None:
            self._check_open()
        if self._out_opcode >= 0:
            raise RuntimeError("a fragmented message is being sent; finish it first")
        if isinstance(data, str):
            opcode, payload = Opcode.TEXT, data.encode()
        elif isinstance(data, bytes):
            opcode, payload = Opcode.BINARY, data
        elif isinstance(data, (bytearray, memoryview)):
            opcode, payload = Opcode.BINARY, bytes(data)
        else:
            raise TypeError(f"a message is str or bytes-like, not {type(data).__name__}")
        if self._extensions:
            self._send_data(opcode, payload, True, compress)
        else:
            self._queue(opcode, payload)

    def queue_frame(self, frame: bytes) -> None:
        """Queue a whole data frame built elsewhere (a published message, framed once for
        every subscriber). Unmasked, so server side only; not inside a fragmented message
        (5.4: its fragments must not be interleaved with another message's)."""
        self._check_open()
        if self.side is Side.CLIENT:
            raise RuntimeError("a client must mask its frames (5.3): no prebuilt frames")
        if self._out_opcode >= 0:
            raise RuntimeError("a fragmented message is being sent; finish it first")
        self._out.append(frame)

    def broadcast_frame(
        self, opcode: int, payload: bytes, shared: dict[Hashable, bytes]
    ) -> bytes | None:
        """The frame of a message published to many connections, for ``queue_frame``: taken
        from ``shared`` (one dict per publish) when another connection needs the same bytes,
        built and put there otherwise. None when this connection must encode the message
        itself (``send_message``): a client (its frames are masked) or a compression context
        kept between messages, which is its own."""
        if self.side is Side.CLIENT:
            return None
        extensions = self._extensions
        if not extensions:
            key: Hashable = _PLAIN_FRAME
            rsv = 0
        elif len(extensions) == 1:
            shared_key = extensions[0].shared_key()
            if shared_key is None:
                return None
            key = shared_key
        else:
            return None
        frame = shared.get(key)
        if frame is None:
            if extensions:
                # No context takeover: the same parameters give the same bytes.
                payload, rsv = extensions[0].encode_alone(opcode, payload)
            frame = shared[key] = build_frame(opcode, payload, True, rsv, None)
        return frame

    def set_compression(self, enabled: bool) -> None:
        """Compress the following messages or not (no effect without a compression
        extension)."""
        for ext in self._extensions:
            if hasattr(ext, "enabled"):
                ext.enabled = enabled

    @property
    def sending_fragmented(self) -> bool:
        """A fragmented message is being sent: no other message may go out before its end."""
        return self._out_opcode >= 0

    def send_fragment(
        self, data: str | bytes | bytearray | memoryview, last: bool, compress: bool = True
    ) -> None:
        """Queue one fragment of a message; the first fragment's type (and ``compress``)
        sets the message's."""
        self._check_open()
        if isinstance(data, str):
            payload = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError(f"a fragment is str or bytes-like, not {type(data).__name__}")
        if self._out_opcode < 0:
            opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
            self._out_opcode = opcode
        else:
            if (self._out_opcode == Opcode.TEXT) != isinstance(data, str):
                raise TypeError("all fragments of a message must be of the same type")
            opcode = Opcode.CONTINUATION
        self._send_data(opcode, payload, last, compress)
        if last:
            self._out_opcode = -1

    def send_ping(self, payload: bytes = b"") -> None:
        self._check_open()
        if len(payload) > 125:
            raise ValueError("ping payload is limited to 125 bytes")
        self._queue(Opcode.PING, bytes(payload))

    def send_pong(self, payload: bytes = b"") -> None:
        self._check_open()
        if len(payload) > 125:
            raise ValueError("pong payload is limited to 125 bytes")
        self._queue(Opcode.PONG, bytes(payload))

    def send_close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2), or answer the peer's close with this
        code. A no-op once a close was sent, or when the connection failed (its close code
        must win)."""
        if self.close_sent is not None or self.state is State.CLOSED or self.failure:
            return
        self._queue(Opcode.CLOSE, serialize_close(code, reason))
        self.close_sent = (code if code is not None else CloseCode.NO_STATUS, reason)
        self._owed_close = None
        self.state = State.CLOSED if self.close_received is not None else State.CLOSING

    def data_to_send(self, *, hold_close: bool = False) -> list[bytes]:
        """Frames queued since the last call, in order, ending with a close frame owed to the
        peer. ``hold_close`` keeps that close back while the application is still answering
        the events that came before it."""
        if self._owed_close is not None and not hold_close:
            self._settle_close()
        out = self._out
        if out:
            self._out = []
            self.out_split = False
        return out

    @property
    def extensions(self) -> tuple[Extension, ...]:
        return self._extensions

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out) or self._owed_close is not None

    @property
    def close_owed(self) -> bool:
        """A close frame waits for ``data_to_send`` (see ``_owed_close``)."""
        return self._owed_close is not None

    # -- closing -----------------------------------------------------------------------------

    @property
    def close_code(self) -> int:
        """The code the connection closed with, as the application sees it (7.1.5):
        the peer's close code, 1005 if it sent none, 1006 without a close frame."""
        if self.close_received is not None:
            return self.close_received[0]
        if self.failure is not None:
            return self.failure.close_code
        return CloseCode.ABNORMAL

    @property
    def close_reason(self) -> str:
        return self.close_received[1] if self.close_received is not None else ""

    def closed_exception(self) -> ConnectionClosed:
        """The exception a closed connection's send or receive raises."""
        return closed_error(self.close_code, self.close_reason)
