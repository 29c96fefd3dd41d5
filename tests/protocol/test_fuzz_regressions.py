"""What the fuzz targets (fuzz/, scripts/fuzz.sh) found, one test per finding.

Each test names the target that found it and keeps the input it found (minimized where that
reads better), so the bug stays fixed in the ordinary test run, in both accel modes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral import _pure
from corral.exceptions import InvalidRequest, NegotiationError
from corral.protocol.connection import Connection, Side
from corral.protocol.extensions import DeflateSettings, WebkitDeflateFactory, WebkitDeflateFrame
from corral.protocol.extensions.negotiation import client_confirm, server_accept
from corral.protocol.handshake import parse_extension_header
from corral.protocol.http11 import RequestParser
from corral.protocol.reader import FrameReader
from helpers import twins

_speedups, needs_compiled, _ = twins(_pure, "corral._speedups")


def resizable(buffer: bytearray) -> bool:
    """Whether nothing holds a view of ``buffer`` any more (a held view forbids a resize)."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    del buffer[-1]
    return True


# -- frames: _pure and _speedups refused non-contiguous buffers differently ---------------------


@needs_compiled
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("parse_frames", lambda buf: (buf, 0, False, -1)),
        ("apply_mask", lambda buf: (buf, b"1234")),
        ("build_frame", lambda buf: (1, buf)),
        ("build_frame", lambda buf: (99, buf)),  # the buffer is refused before the opcode
    ],
)
def test_5_2_non_contiguous_buffer_refused_alike(
    name: str, args: Callable[[memoryview], tuple[object, ...]]
) -> None:
    """fuzz target frames: the pure module raised TypeError (or, building a frame, accepted
    the view) where the compiled one raised BufferError."""
    assert _speedups is not None
    view = memoryview(b"\x81\x00\x81\x00")[::2]
    errors = []
    for module in (_pure, _speedups):
        with pytest.raises(BufferError) as info:
            getattr(module, name)(*args(view))
        errors.append(str(info.value))
    assert errors[0] == errors[1] == "memoryview: underlying buffer is not C-contiguous"


def test_5_2_unusual_but_contiguous_buffers_still_parse() -> None:
    two_byte_items = memoryview(b"\x82\x02ab").cast("H")
    assert _pure.parse_frames(two_byte_items, 0, False, -1) == (
        [(2, True, 0, b"ab")], 4, 0, "", None
    )


# -- frames: a failed reader held the caller's buffer ---------------------------------------


def test_7_1_7_failed_reader_keeps_no_reference_to_the_read_buffer() -> None:
    """fuzz target connection: the error kept in ``FrameReader.error`` carried its
    traceback, whose frames held ``data``, so the caller's read buffer stayed exported
    (a resize raised BufferError) for as long as the reader lived."""
    scratch = bytearray(b"\x01\x3fa")  # an unmasked frame on a server
    reader = FrameReader(require_mask=True)
    assert reader.feed(memoryview(scratch)) == []
    assert reader.error is not None and reader.error.__traceback__ is None
    assert resizable(scratch)


def test_7_1_7_failed_connection_keeps_no_reference_to_the_read_buffer() -> None:
    """fuzz target connection, input ``\\x14\\xa3\\x02a\\x01?a\\x00`` (raw stream 01 3f 61
    on a server): ``Connection.failure`` kept its traceback, whose ``receive_data`` frame
    held the caller's buffer. After the failure that buffer must be free again, as the
    docstring promises ("the caller may reuse its buffer at once")."""
    scratch = bytearray(b"\x01\x3fa")
    conn = Connection(Side.SERVER)
    events = conn.receive_data(memoryview(scratch))
    assert conn.failure is not None and events
    assert resizable(scratch)


# -- http: empty lines in one read were never counted -------------------------------------------


def test_rfc7230_3_5_flood_of_empty_lines_in_one_read_is_refused() -> None:
    """fuzz target http (whole read and byte-wise reads disagreed): the fast path for a head
    that arrives whole took leading empty lines (which llhttp skips) for a complete head and
    counted none of them, so ``\\r\\n`` repeated in one read was accepted forever, past the
    limit that stops the same flood arriving line by line."""
    with pytest.raises(InvalidRequest) as info:
        RequestParser().feed(b"\r\n" * 10_000)
    assert info.value.status == 431
    parser = RequestParser()
    with pytest.raises(InvalidRequest):
        for _ in range(10_000):
            parser.feed(b"\r\n")


def test_rfc7230_3_5_empty_lines_count_the_same_in_one_read_or_many() -> None:
    """The input the fuzzer found: limits of 0 header fields, a few empty lines and CRs."""
    data = b"\r\n\r\n\n\r\r\r\r\r\r\r\n\r\n\n\r\r"
    limits = {"max_request_line": 1, "max_header_count": 0, "max_header_bytes": 968,
              "max_body": 40}
    with pytest.raises(InvalidRequest) as whole:
        RequestParser(**limits).feed(data)
    parser = RequestParser(**limits)
    with pytest.raises(InvalidRequest) as pieces:
        for read in (b"", b"\r", b"\n\r\n\n\r\r\r\r\r\r", b"\r\n\r\n\n\r\r"):
            parser.feed(read)
    assert whole.value.status == pieces.value.status == 431


def test_rfc7230_3_5_a_few_empty_lines_before_a_request_are_still_skipped() -> None:
    request = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    (parsed,) = RequestParser().feed(request)
    assert parsed.target == "/" and parsed.headers.get("Host") == "x"




# -- extensions: one unreadable offer made deflate-frame's confirm refuse any answer -----------


def test_9_1_answer_to_a_valid_offer_beside_an_unreadable_one_is_confirmed() -> None:
    """fuzz target extensions: the server declined the unreadable x-webkit-deflate-frame
    offer and accepted the other one, but the client's confirm parsed every offer of that
    name and refused the answer over the one the server had declined (permessage-deflate's
    confirm already passed over such offers)."""
    offers = parse_extension_header(
        ["x-webkit-deflate-frame  ", "x-webkit-deflate-frame ; no_context_tpermessage-defla"]
    )
    settings = DeflateSettings()
    accepted, answer = server_accept(offers, settings)
    assert answer is not None and accepted
    (extension,) = client_confirm(parse_extension_header([answer]), offers, settings)
    assert isinstance(extension, WebkitDeflateFrame)


def test_9_1_deflate_frame_answer_to_only_unreadable_offers_is_refused() -> None:
    factory = WebkitDeflateFactory(DeflateSettings())
    (bad,) = parse_extension_header(["x-webkit-deflate-frame; max_window_bits=99"])
    (answer,) = parse_extension_header(["x-webkit-deflate-frame"])
    with pytest.raises(NegotiationError, match="invalid x-webkit-deflate-frame offer"):
        factory.confirm(answer, [bad])
