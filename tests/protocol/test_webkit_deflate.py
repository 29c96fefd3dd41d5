"""x-webkit-deflate-frame (corral.protocol.extensions.webkit_deflate).

The per-frame predecessor of RFC 7692 (draft-tyoshino-hybi-websocket-perframe-deflate): every
data frame, continuation frames included, is deflated on its own up to a sync flush, without
the trailing 00 00 ff ff, and carries RSV1; the window carries over between frames unless
context takeover is off. Parameters: ``max_window_bits`` and ``no_context_takeover``, each
limiting the compressor of the endpoint that receives it.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.exceptions import InvalidPayload, NegotiationError, PayloadTooBig
from corral.protocol.connection import Connection, Side
from corral.protocol.events import Failed, Message
from corral.protocol.extensions import DeflateSettings, WebkitDeflateFactory, WebkitDeflateFrame
from corral.protocol.frames import Opcode, serialize_frame
from corral.protocol.handshake import (
    ExtensionOffer,
    format_extension_header,
    parse_extension_header,
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT, BINARY, CONT = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CONTINUATION)
RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"
MiB = 1 << 20
NAME = "x-webkit-deflate-frame"
MWB, NCT = "max_window_bits", "no_context_takeover"

Frame = tuple[int, int, bytes, bool]  # opcode, rsv, payload, fin


def sample(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed + size)
    text = b"".join(rng.choice([b"webkit ", b"deflate ", b"frame\n"]) for _ in range(size // 6))
    return (text[: size - size // 2] + rng.randbytes(size // 2)).ljust(size, b"w")


def offer(text: str) -> ExtensionOffer:
    (parsed,) = parse_extension_header([text])
    return parsed


def round_trip(offers: Sequence[ExtensionOffer]) -> list[ExtensionOffer]:
    return parse_extension_header([format_extension_header(offers)])


def encode(ext: WebkitDeflateFrame, data: bytes, parts: int = 1) -> list[Frame]:
    step = -(-len(data) // parts) if data else 0
    frames = []
    for i in range(parts):
        fin = i == parts - 1
        opcode = BINARY if i == 0 else CONT
        payload, rsv = ext.encode(opcode, data[i * step : (i + 1) * step], fin=fin)
        frames.append((opcode, rsv, payload, fin))
    return frames


def decode(
    ext: WebkitDeflateFrame,
    frames: Sequence[Frame],
    *,
    max_size: int | None = None,
    piece: int | None = None,
    outputs: list[int] | None = None,
) -> bytes:
    """Receive one message's frames the way the connection calls the extension."""
    out = []
    grown = 0
    for opcode, rsv, payload, fin in frames:
        if piece is None or not payload:
            cut = [payload]
        else:
            cut = [payload[i : i + piece] for i in range(0, len(payload), piece)]
        for i, chunk in enumerate(cut):
            budget = None if max_size is None else max_size - grown
            result = ext.decode(
                opcode, rsv, chunk, frame_start=i == 0, frame_end=i == len(cut) - 1, fin=fin,
                max_size=budget,
            )
            grown += len(result)
            if outputs is not None:
                outputs.append(len(result))
            out.append(result)
    return b"".join(out)


def pair(
    bits: int = 15, *, takeover: bool = True, threshold: int = 0
) -> tuple[WebkitDeflateFrame, WebkitDeflateFrame]:
    sender = WebkitDeflateFrame(
        True, local_max_window_bits=bits, local_no_context_takeover=not takeover,
        threshold=threshold,
    )
    receiver = WebkitDeflateFrame(
        False, remote_max_window_bits=bits, remote_no_context_takeover=not takeover
    )
    return sender, receiver


def by_hand(parts: Sequence[tuple[bytes, bool]], *, takeover: bool = True) -> list[Frame]:
    """Frames built per the draft with zlib alone: each compressed frame is the sync-flushed
    DEFLATE output of its data minus 00 00 ff ff, with RSV1; others go as they are."""
    obj = zlib.compressobj(6, zlib.DEFLATED, -15)
    frames = []
    for i, (data, compressed) in enumerate(parts):
        opcode = TEXT if i == 0 else CONT
        fin = i == len(parts) - 1
        if compressed:
            out = obj.compress(data) + obj.flush(zlib.Z_SYNC_FLUSH)
            assert out.endswith(TAIL)
            frames.append((opcode, RSV1, out[:-4], fin))
            if not takeover:
                obj = zlib.compressobj(6, zlib.DEFLATED, -15)
        else:
            frames.append((opcode, 0, data, fin))
    return frames


# -- negotiation, server side ---------------------------------------------------------------------

# (settings, offer, response params, (local bits, remote bits, local nct, remote nct))
ACCEPTED = [
    # The server answers with what it asks of the client's compressor.
    ({}, NAME, {MWB: "12"}, (12, 12, False, False)),
    ({"server_max_window_bits": 15, "client_max_window_bits": 15}, NAME, {}, (15, 15, 0, 0)),
    ({"client_no_context_takeover": True}, NAME, {MWB: "12", NCT: None}, (12, 12, 0, 1)),
    # The offer limits the server's compressor, narrowed further by the settings.
    ({}, f"{NAME}; {MWB}=10", {MWB: "12"}, (10, 12, False, False)),
    ({}, f"{NAME}; {MWB}=14", {MWB: "12"}, (12, 12, False, False)),
    ({"server_max_window_bits": 15}, f"{NAME}; {MWB}=8", {MWB: "12"}, (8, 12, 0, 0)),
    ({}, f"{NAME}; {NCT}", {MWB: "12"}, (12, 12, True, False)),
    ({"server_no_context_takeover": True}, NAME, {MWB: "12"}, (12, 12, True, False)),
    ({}, f'{NAME}; {MWB}="9"; {NCT}', {MWB: "12"}, (9, 12, True, False)),
    (
        {"client_max_window_bits": 9, "client_no_context_takeover": True},
        f"{NAME}; {NCT}; {MWB}=11",
        {MWB: "9", NCT: None},
        (11, 9, True, True),
    ),
]


@pytest.mark.parametrize(("settings_", "text", "answer", "agreed"), ACCEPTED)
def test_accept(
    settings_: dict[str, int], text: str, answer: dict[str, str | None],
    agreed: tuple[int, int, bool, bool],
) -> None:
    factory = WebkitDeflateFactory(DeflateSettings(**settings_))  # type: ignore[arg-type]
    response, ext = factory.accept(offer(text)) or pytest.fail()
    assert response.name == NAME == ext.name
    assert dict(response.params) == answer and len(response.params) == len(answer)
    assert ext.is_server
    assert (
        ext.local_max_window_bits, ext.remote_max_window_bits,
        ext.local_no_context_takeover, ext.remote_no_context_takeover,
    ) == agreed


BAD_OFFERS = [
    f"{NAME}; foo",
    f"{NAME}; client_max_window_bits=10",
    f"{NAME}; server_no_context_takeover",
    f"{NAME}; {NCT}; {NCT}",
    f"{NAME}; {MWB}=10; {MWB}=11",
    f"{NAME}; {NCT}=1",
    f"{NAME}; {MWB}",
    f"{NAME}; {MWB}=7",
    f"{NAME}; {MWB}=16",
    f"{NAME}; {MWB}=08",
    f"{NAME}; {MWB}=x",
    f'{NAME}; {MWB}="16"',
]


@pytest.mark.parametrize("text", BAD_OFFERS)
def test_bad_offer_declined(text: str) -> None:
    assert WebkitDeflateFactory().accept(offer(text)) is None


def test_other_names() -> None:
    assert WebkitDeflateFactory().accept(offer("permessage-deflate")) is None
    assert WebkitDeflateFactory().accept(offer("deflate-frame")) is None
    factory = WebkitDeflateFactory(name="deflate-frame")
    response, ext = factory.accept(offer("deflate-frame")) or pytest.fail()
    assert response.name == ext.name == "deflate-frame"


def test_accept_first() -> None:
    offers = parse_extension_header(
        [f"permessage-deflate, {NAME}; {MWB}=99", f"{NAME}; {MWB}=10, {NAME}"]
    )
    _, ext = WebkitDeflateFactory().accept_first(offers) or pytest.fail()
    assert ext.local_max_window_bits == 10
    assert WebkitDeflateFactory().accept_first(offers[:2]) is None


# -- negotiation, client side ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "text"),
    [
        ({}, f"{NAME}; {MWB}=12"),
        ({"server_max_window_bits": 15}, NAME),
        (
            {"server_max_window_bits": 9, "server_no_context_takeover": True},
            f"{NAME}; {MWB}=9; {NCT}",
        ),
        ({"client_max_window_bits": 8, "client_no_context_takeover": True}, f"{NAME}; {MWB}=12"),
    ],
)
def test_offer(settings_: dict[str, int], text: str) -> None:
    factory = WebkitDeflateFactory(DeflateSettings(**settings_))  # type: ignore[arg-type]
    assert format_extension_header([factory.offer()]) == text


# (settings, response, (local bits, remote bits, local nct, remote nct)), to our own offer
CONFIRMED = [
    ({}, NAME, (12, 12, False, False)),
    ({}, f"{NAME}; {MWB}=9", (9, 12, False, False)),
    ({}, f"{NAME}; {MWB}=14", (12, 12, False, False)),
    ({}, f"{NAME}; {NCT}", (12, 12, True, False)),
    ({"client_no_context_takeover": True}, NAME, (12, 12, True, False)),
    ({"server_no_context_takeover": True, "server_max_window_bits": 15}, NAME, (12, 15, 0, 1)),
    ({}, f'{NAME}; {MWB}="8"; {NCT}', (8, 12, True, False)),
]


@pytest.mark.parametrize(("settings_", "text", "agreed"), CONFIRMED)
def test_confirm(settings_: dict[str, int], text: str, agreed: tuple[int, int, bool, bool]) -> None:
    factory = WebkitDeflateFactory(DeflateSettings(**settings_))  # type: ignore[arg-type]
    ext = factory.confirm(offer(text), [factory.offer()])
    assert not ext.is_server
    assert (
        ext.local_max_window_bits, ext.remote_max_window_bits,
        ext.local_no_context_takeover, ext.remote_no_context_takeover,
    ) == agreed


@pytest.mark.parametrize(
    "text",
    [f"{NAME}; foo", f"{NAME}; {NCT}; {NCT}", f"{NAME}; {NCT}=x", f"{NAME}; {MWB}",
     f"{NAME}; {MWB}=16", f"{NAME}; {MWB}=7", "permessage-deflate"],
)
def test_bad_response_fails(text: str) -> None:
    factory = WebkitDeflateFactory()
    with pytest.raises(NegotiationError):
        factory.confirm(offer(text), [factory.offer()])


def test_response_to_no_offer_fails() -> None:
    with pytest.raises(NegotiationError):
        WebkitDeflateFactory().confirm(offer(NAME), [offer("permessage-deflate")])


def test_confirm_against_several_offers() -> None:
    # Which offer was accepted is unknown: inflate with the largest window any allowed, and
    # keep the window unless every offer forbade takeover.
    offered = [offer(f"{NAME}; {MWB}=9; {NCT}"), offer(f"{NAME}; {MWB}=11")]
    ext = WebkitDeflateFactory().confirm(offer(NAME), offered)
    assert (ext.remote_max_window_bits, ext.remote_no_context_takeover) == (11, False)


window = st.integers(8, 15)
deflate_settings = st.builds(
    DeflateSettings,
    server_max_window_bits=window,
    client_max_window_bits=window,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
)


@FAST
@given(deflate_settings, deflate_settings)
def test_both_ends_agree(server: DeflateSettings, client: DeflateSettings) -> None:
    client_factory = WebkitDeflateFactory(client)
    offers = round_trip([client_factory.offer()])
    response, server_ext = WebkitDeflateFactory(server).accept_first(offers) or pytest.fail()
    client_ext = client_factory.confirm(round_trip([response])[0], offers)
    # What each end compresses with fits what the other inflates with.
    assert server_ext.local_max_window_bits <= client_ext.remote_max_window_bits
    assert client_ext.local_max_window_bits <= server_ext.remote_max_window_bits
    assert server_ext.local_max_window_bits == min(
        server.server_max_window_bits, client.server_max_window_bits
    )
    assert client_ext.local_max_window_bits == min(
        server.client_max_window_bits, client.client_max_window_bits
    )
    # A window is dropped by the receiver only if the sender drops it too.
    assert server_ext.local_no_context_takeover or not client_ext.remote_no_context_takeover
    assert client_ext.local_no_context_takeover or not server_ext.remote_no_context_takeover


# -- the codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no_takeover"])
@pytest.mark.parametrize("bits", range(8, 16))
def test_round_trip(bits: int, takeover: bool) -> None:
    sender, receiver = pair(bits, takeover=takeover)
    for size in [0, 1, 125, 126, 65536, MiB]:
        data = sample(size)
        for parts in (1, 3):
            frames = encode(sender, data, parts)
            # every frame compressed on its own, with RSV1, continuation frames too
            assert [rsv for _, rsv, _, _ in frames] == [RSV1] * parts
            assert decode(receiver, frames) == data


@FAST
@given(
    st.lists(st.binary(max_size=500) | st.sampled_from([b"", b"z" * 900]), min_size=1, max_size=4),
    st.integers(1, 40),
    st.integers(1, 4),
    st.sampled_from([8, 11, 15]),
    st.booleans(),
)
def test_any_cut_gives_the_same_output(
    messages: list[bytes], piece: int, parts: int, bits: int, takeover: bool
) -> None:
    sender, receiver = pair(bits, takeover=takeover)
    for data in messages:
        assert decode(receiver, encode(sender, data, parts), piece=piece) == data


def test_hello_frame() -> None:
    # A single frame c1 07 f2 48 cd c9 c9 07 00: RSV1, the DEFLATE data of "Hello".
    _, receiver = pair()
    assert decode(receiver, [(TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), True)]) == b"Hello"
    # The next frame (a continuation here) refers back to the first through the window.
    frames = [
        (TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), False),
        (CONT, RSV1, bytes.fromhex("f200110000"), True),
    ]
    _, receiver = pair()
    assert decode(receiver, frames) == b"HelloHello"
    _, receiver = pair(takeover=False)
    with pytest.raises(InvalidPayload):
        decode(receiver, frames)


@pytest.mark.parametrize("takeover", [True, False])
def test_hand_built_frames(takeover: bool) -> None:
    parts = [(sample(700, 1), True), (b"plain", False), (sample(700, 1), True), (b"", True)]
    frames = by_hand(parts, takeover=takeover)
    _, receiver = pair(takeover=takeover)
    expected = b"".join(data for data, _ in parts)
    assert decode(receiver, frames) == expected
    assert decode(receiver, frames, piece=3) == expected


def test_our_frames_match_the_hand_built_ones() -> None:
    sender = WebkitDeflateFrame(True, local_max_window_bits=15, mem_level=8, threshold=0)
    data = [sample(300, 2), sample(300, 2), b"Hello"]
    ours = [sender.encode(TEXT if i == 0 else CONT, d, fin=i == 2) for i, d in enumerate(data)]
    theirs = by_hand([(d, True) for d in data])
    assert [(p, r) for p, r in ours] == [(p, r) for _, r, p, _ in theirs]


def test_window_8() -> None:
    sender, receiver = pair(8)
    data = sample(50_000)
    frames = encode(sender, data, 4)
    inflater = zlib.decompressobj(-8)  # zlib deflates with 9 bits but stays within 250 back
    assert b"".join(inflater.decompress(p + TAIL) for _, _, p, _ in frames) == data
    assert decode(receiver, frames) == data


def test_no_context_takeover_frames_stand_alone() -> None:
    sender, _ = pair(12, takeover=False)
    data = sample(2000)
    frames = encode(sender, data + data, 2)
    assert frames[0][2] == frames[1][2]
    for frame in frames:
        _, fresh = pair(12, takeover=False)
        assert decode(fresh, [(BINARY, frame[1], frame[2], True)]) == data


def test_corrupt_frame_is_1007() -> None:
    _, receiver = pair()
    with pytest.raises(InvalidPayload) as caught:
        decode(receiver, [(BINARY, RSV1, b"\xff\xff\xff", True)])
    assert caught.value.close_code == 1007


@pytest.mark.parametrize("piece", [None, 4096])
def test_decompression_bomb(piece: int | None) -> None:
    obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = (obj.compress(bytes(10_000_000)) + obj.flush(zlib.Z_SYNC_FLUSH))[:-4]
    _, receiver = pair()
    outputs: list[int] = []
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig):
            decode(receiver, [(BINARY, RSV1, payload, True)], max_size=MiB, piece=piece,
                   outputs=outputs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(outputs) <= MiB
    assert peak < 3 * MiB


def test_limit_across_frames() -> None:
    sender, _ = pair()
    frames = encode(sender, sample(3000), 3)
    _, receiver = pair()
    assert len(decode(receiver, frames, max_size=3000)) == 3000
    _, receiver = pair()
    with pytest.raises(PayloadTooBig):
        decode(receiver, frames, max_size=2999)


def test_sending_policy() -> None:
    sender, receiver = pair(threshold=100)
    # the threshold applies to each frame
    small, big = b"s" * 99, b"b" * 100
    assert sender.encode(TEXT, small, fin=False) == (small, 0)
    payload, rsv = sender.encode(CONT, big, fin=True)
    assert rsv == RSV1 and payload != big
    assert decode(receiver, [(TEXT, 0, small, False), (CONT, rsv, payload, True)]) == small + big
    # control frames never; compress=False and enabled=False send frames as they are
    assert sender.encode(int(Opcode.PONG), big, fin=True) == (big, 0)
    assert sender.encode(BINARY, big, fin=True, compress=False) == (big, 0)
    sender.enabled = False
    assert sender.encode(BINARY, big, fin=True) == (big, 0)
    sender.enabled = True
    payload, rsv = sender.encode(BINARY, big, fin=True)
    assert decode(receiver, [(BINARY, rsv, payload, True)]) == big


# -- through two Connection objects ---------------------------------------------------------------


def connections(
    server: DeflateSettings | None = None, client: DeflateSettings | None = None, **kw: object
) -> tuple[Connection, Connection]:
    client_factory = WebkitDeflateFactory(client)
    offers = round_trip([client_factory.offer()])
    response, server_ext = WebkitDeflateFactory(server).accept_first(offers) or pytest.fail()
    client_ext = client_factory.confirm(round_trip([response])[0], offers)
    return (
        Connection(Side.SERVER, extensions=[server_ext], **kw),  # type: ignore[arg-type]
        Connection(Side.CLIENT, extensions=[client_ext], **kw),  # type: ignore[arg-type]
    )


def test_connection_messages_and_fragments() -> None:
    server, client = connections()
    text = "deflate-frame ✓ " * 300
    client.send_message(text)
    wire = client.data_to_send()
    assert wire[0][0] & RSV1
    assert [e for chunk in wire for e in server.receive_data(chunk)] == [Message(text)]
    for i, part in enumerate([b"a" * 500, b"b" * 500, b"c" * 500]):
        server.send_fragment(part, last=i == 2)
    wire = server.data_to_send()
    assert [bool(frame[0] & RSV1) for frame in wire] == [True, True, True]
    events = [e for chunk in wire for byte in range(len(chunk))
              for e in client.receive_data(chunk[byte : byte + 1])]
    assert events == [Message(b"a" * 500 + b"b" * 500 + b"c" * 500)]


def test_connection_hand_built_frames() -> None:
    _, client = connections(DeflateSettings(server_max_window_bits=15))
    frames = by_hand([(b"Hello " * 20, True), (b"plain", False), (b"Hello " * 20, True)])
    wire = b"".join(
        serialize_frame(opcode, payload, fin=fin, rsv1=bool(rsv))
        for opcode, rsv, payload, fin in frames
    )
    assert client.receive_data(wire) == [Message("Hello " * 20 + "plain" + "Hello " * 20)]


def test_connection_bomb_and_corruption() -> None:
    _, client = connections(max_message_size=MiB)
    obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (obj.compress(bytes(5 * MiB)) + obj.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = client.receive_data(serialize_frame(BINARY, bomb, rsv1=True))
    assert [(type(e), e.code) for e in events] == [(Failed, 1009)]  # type: ignore[union-attr]
    _, client = connections()
    events = client.receive_data(serialize_frame(BINARY, b"\xff\xff", rsv1=True))
    assert [(type(e), e.code) for e in events] == [(Failed, 1007)]  # type: ignore[union-attr]
