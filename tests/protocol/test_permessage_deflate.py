"""permessage-deflate (corral.protocol.extensions.permessage_deflate), by RFC 7692 section.

- 7.1: negotiation, server side (accept / decline) and client side (offer / confirm);
- 7.2.1 / 7.2.2: the codec, one endpoint's extension compressing and the peer's inflating,
  for every window size and context takeover setting, however the payload is cut;
- 7.2.3: the RFC's own byte streams, decoded;
- 6: RSV1 only on the first frame of a message;
- limits: inflation stops at the message size limit, whatever the compression ratio;
- and the whole path through two ``Connection`` objects.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.exceptions import InvalidPayload, NegotiationError, PayloadTooBig, ProtocolError
from corral.protocol.connection import Connection, Side
from corral.protocol.events import Event, Failed, Fragment, Message
from corral.protocol.extensions import (
    DeflateSettings,
    Extension,
    PerMessageDeflate,
    PerMessageDeflateFactory,
)
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

Frame = tuple[int, int, bytes, bool]  # opcode, rsv, payload, fin


# -- helpers ------------------------------------------------------------------------------------


def sample(size: int, seed: int = 0) -> bytes:
    """Half compressible text, half random bytes: both kinds of DEFLATE block get used."""
    rng = random.Random(seed + size)
    words = [b"corral", b"websocket", b"deflate", b"window", b"frame", b" ", b"\n", b"7692"]
    text = bytearray()
    while len(text) < size - size // 2:
        text += rng.choice(words)
    return bytes(text[: size - size // 2]) + rng.randbytes(size // 2)


def pieces(payload: bytes, size: int | None, *, empty_first: bool = False) -> list[bytes]:
    """``payload`` cut as the frame reader may hand it out (a header alone comes first
    as an empty piece when the payload has not arrived yet)."""
    if size is None or not payload:
        cut = [payload]
    else:
        cut = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [b"", *cut] if empty_first and payload else cut


def encode(ext: Extension, data: bytes, parts: int = 1, *, opcode: int = BINARY) -> list[Frame]:
    """Send ``data`` as a message of ``parts`` frames through ``ext``."""
    step = -(-len(data) // parts) if data else 0
    chunks = [data[i * step : (i + 1) * step] for i in range(parts)]
    frames = []
    for i, chunk in enumerate(chunks):
        fin = i == parts - 1
        payload, rsv = ext.encode(opcode if i == 0 else CONT, chunk, fin=fin)
        frames.append((opcode if i == 0 else CONT, rsv, payload, fin))
    return frames


def decode(
    ext: Extension,
    frames: Sequence[Frame],
    *,
    max_size: int | None = None,
    piece: int | None = None,
    empty_first: bool = False,
    outputs: list[int] | None = None,
) -> bytes:
    """Receive one message's frames through ``ext`` the way the connection calls it:
    piece by piece, with ``max_size`` shrinking as the message grows."""
    out = []
    grown = 0
    for opcode, rsv, payload, fin in frames:
        cut = pieces(payload, piece, empty_first=empty_first)
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
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A sender and the peer receiving from it, agreeing on ``bits`` and takeover."""
    sender = PerMessageDeflate(
        True, local_max_window_bits=bits, local_no_context_takeover=not takeover,
        threshold=threshold,
    )
    receiver = PerMessageDeflate(
        False, remote_max_window_bits=bits, remote_no_context_takeover=not takeover,
        threshold=threshold,
    )
    return sender, receiver


def header_round_trip(offers: Sequence[ExtensionOffer]) -> list[ExtensionOffer]:
    return parse_extension_header([format_extension_header(offers)])


def offer(text: str) -> ExtensionOffer:
    (parsed,) = parse_extension_header([text])
    return parsed


def params(response: ExtensionOffer) -> dict[str, str | None]:
    return dict(response.params)


# -- DeflateSettings -------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = DeflateSettings()
    assert (s.level, s.mem_level, s.server_max_window_bits, s.client_max_window_bits) == (
        6, 5, 12, 12,
    )
    assert not s.server_no_context_takeover and not s.client_no_context_takeover
    assert s.threshold == 64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"level": 10},
        {"level": -2},
        {"mem_level": 0},
        {"mem_level": 10},
        {"threshold": -1},
    ],
)
def test_settings_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"level": -1}, {"level": 0}, {"level": 9}, {"mem_level": 9}])
def test_settings_edges_accepted(kwargs: dict[str, int]) -> None:
    DeflateSettings(**kwargs)  # type: ignore[arg-type]


def test_extension_validates_window_bits() -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(True, local_max_window_bits=16)
    with pytest.raises(ValueError):
        PerMessageDeflate(True, remote_max_window_bits=7)


# -- 7.1 negotiation, server side -------------------------------------------------------------


PMD = "permessage-deflate"
SNCT, CNCT = "server_no_context_takeover", "client_no_context_takeover"
SMWB, CMWB = "server_max_window_bits", "client_max_window_bits"

# (settings, offer, response params, (local bits, remote bits, local nct, remote nct))
ACCEPTED = [
    # 7.1.2.1: the server may limit its own window unasked; 7.1.2.2: "If a received extension
    # negotiation offer doesn't have the client_max_window_bits extension parameter, the
    # corresponding extension negotiation response to the offer MUST NOT include" it.
    ({}, PMD, {SMWB: "12"}, (12, 15, False, False)),
    ({"client_max_window_bits": 9}, PMD, {SMWB: "12"}, (12, 15, False, False)),
    ({"server_max_window_bits": 15, "client_max_window_bits": 15}, PMD, {}, (15, 15, 0, 0)),
    # 7.1.1.1: an accepted server_no_context_takeover is answered; the server may add it.
    ({}, f"{PMD}; {SNCT}", {SNCT: None, SMWB: "12"}, (12, 15, True, False)),
    ({"server_no_context_takeover": True}, PMD, {SNCT: None, SMWB: "12"}, (12, 15, 1, 0)),
    # 7.1.1.2: the client's hint is echoed, so our inflater can go between messages.
    ({}, f"{PMD}; {CNCT}", {CNCT: None, SMWB: "12"}, (12, 15, False, True)),
    ({"client_no_context_takeover": True}, PMD, {CNCT: None, SMWB: "12"}, (12, 15, 0, 1)),
    # 7.1.2.1: "the same or smaller value as the offer", always answered when offered.
    ({}, f"{PMD}; {SMWB}=10", {SMWB: "10"}, (10, 15, False, False)),
    ({}, f"{PMD}; {SMWB}=14", {SMWB: "12"}, (12, 15, False, False)),
    ({"server_max_window_bits": 15}, f"{PMD}; {SMWB}=8", {SMWB: "8"}, (8, 15, 0, 0)),
    ({"server_max_window_bits": 15}, f"{PMD}; {SMWB}=15", {SMWB: "15"}, (15, 15, 0, 0)),
    # 7.1.2.2: our limit, no larger than the client's own value.
    ({}, f"{PMD}; {CMWB}", {SMWB: "12", CMWB: "12"}, (12, 12, False, False)),
    ({}, f"{PMD}; {CMWB}=10", {SMWB: "12", CMWB: "10"}, (12, 10, False, False)),
    ({}, f"{PMD}; {CMWB}=14", {SMWB: "12", CMWB: "12"}, (12, 12, False, False)),
    ({"client_max_window_bits": 15}, f"{PMD}; {CMWB}", {SMWB: "12"}, (12, 15, 0, 0)),
    ({"client_max_window_bits": 15}, f"{PMD}; {CMWB}=9", {SMWB: "12", CMWB: "9"}, (12, 9, 0, 0)),
    ({"client_max_window_bits": 8}, f"{PMD}; {CMWB}=8", {SMWB: "12", CMWB: "8"}, (12, 8, 0, 0)),
    # quoted-string values
    ({}, f'{PMD}; {CMWB}="10"; {SMWB}="9"', {SMWB: "9", CMWB: "10"}, (9, 10, False, False)),
    # every parameter at once
    (
        {},
        f"{PMD}; {SNCT}; {CNCT}; {SMWB}=11; {CMWB}=13",
        {SNCT: None, CNCT: None, SMWB: "11", CMWB: "12"},
        (11, 12, True, True),
    ),
]


@pytest.mark.parametrize(("settings_", "text", "answer", "agreed"), ACCEPTED)
def test_7_1_accept(
    settings_: dict[str, int], text: str, answer: dict[str, str | None],
    agreed: tuple[int, int, bool, bool],
) -> None:
    factory = PerMessageDeflateFactory(DeflateSettings(**settings_))  # type: ignore[arg-type]
    response, ext = factory.accept(offer(text)) or pytest.fail()
    assert response.name == PMD
    assert params(response) == answer
    assert len(response.params) == len(answer)
    assert ext.is_server
    assert (
        ext.local_max_window_bits, ext.remote_max_window_bits,
        ext.local_no_context_takeover, ext.remote_no_context_takeover,
    ) == agreed


def test_7_1_accept_uses_the_local_settings() -> None:
    factory = PerMessageDeflateFactory(DeflateSettings(level=1, mem_level=9, threshold=7))
    _, ext = factory.accept(offer(PMD)) or pytest.fail()
    assert ext.threshold == 7


BAD_OFFERS = [
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; max_window_bits=10",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=0",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits=+9",
    "permessage-deflate; server_max_window_bits=9.0",
    "permessage-deflate; server_max_window_bits=abc",
    'permessage-deflate; server_max_window_bits="16"',
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=09",
    "permessage-deflate; client_max_window_bits=x",
    'permessage-deflate; client_max_window_bits="7"',
    "permessage-deflate; Server_No_Context_Takeover",
]


@pytest.mark.parametrize("text", BAD_OFFERS)
def test_7_1_bad_offer_declined(text: str) -> None:
    # Section 7.1: "A server MUST decline an extension negotiation offer for this extension
    # if ... [an unknown parameter, an invalid value, a repeated parameter]".
    assert PerMessageDeflateFactory().accept(offer(text)) is None


def test_7_1_empty_value_declined() -> None:
    # The header parser refuses ="" (not a token); an offer built in code may still hold it.
    for name in ("server_no_context_takeover", "server_max_window_bits", "client_max_window_bits"):
        bad = ExtensionOffer("permessage-deflate", ((name, ""),))
        assert PerMessageDeflateFactory().accept(bad) is None


def test_7_1_other_extension_declined() -> None:
    assert PerMessageDeflateFactory().accept(offer("x-webkit-deflate-frame")) is None


def test_5_accept_first_takes_the_first_acceptable() -> None:
    offers = parse_extension_header(
        [
            "foo, permessage-deflate; server_max_window_bits=7, "
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=11",
        ]
    )
    response, ext = PerMessageDeflateFactory().accept_first(offers) or pytest.fail()
    assert params(response)["server_max_window_bits"] == "10"
    assert ext.local_max_window_bits == 10


def test_5_accept_first_across_headers() -> None:
    offers = parse_extension_header(
        ["permessage-deflate; bogus", 'permessage-deflate; client_max_window_bits="9"']
    )
    response, ext = PerMessageDeflateFactory().accept_first(offers) or pytest.fail()
    assert params(response)["client_max_window_bits"] == "9"
    assert ext.remote_max_window_bits == 9


def test_5_accept_first_none_acceptable() -> None:
    offers = parse_extension_header(["permessage-deflate; x, foo, permessage-deflate; y=1"])
    assert PerMessageDeflateFactory().accept_first(offers) is None
    assert PerMessageDeflateFactory().accept_first([]) is None


# -- 7.1 negotiation, client side -------------------------------------------------------------


def test_7_1_default_offer() -> None:
    text = format_extension_header([PerMessageDeflateFactory().offer()])
    # 7.1.2.2: a bare client_max_window_bits, as browsers send it: any answer 8..15 is valid.
    assert text == "permessage-deflate; client_max_window_bits; server_max_window_bits=12"


def test_7_1_offer_full_windows() -> None:
    factory = PerMessageDeflateFactory(
        DeflateSettings(server_max_window_bits=15, client_max_window_bits=15)
    )
    assert format_extension_header([factory.offer()]) == (
        "permessage-deflate; client_max_window_bits"
    )


def test_7_1_offer_everything() -> None:
    factory = PerMessageDeflateFactory(
        DeflateSettings(
            server_max_window_bits=9, client_max_window_bits=10,
            server_no_context_takeover=True, client_no_context_takeover=True,
        )
    )
    assert format_extension_header([factory.offer()]) == (
        "permessage-deflate; client_max_window_bits; server_max_window_bits=9;"
        " server_no_context_takeover; client_no_context_takeover"
    )


# (settings, response, (local bits, remote bits, local nct, remote nct)), to our own offer
CONFIRMED = [
    ({"server_max_window_bits": 15, "client_max_window_bits": 15}, PMD, (15, 15, 0, 0)),
    ({}, f"{PMD}; {SMWB}=12", (12, 12, False, False)),
    ({}, f"{PMD}; {SMWB}=9", (12, 9, False, False)),  # 7.1.2.1: "same or smaller"
    ({}, f"{PMD}; {SMWB}=12; {CMWB}=10", (10, 12, False, False)),
    ({"server_max_window_bits": 15}, f"{PMD}; {SMWB}=11", (12, 11, 0, 0)),  # limits itself
    ({"server_max_window_bits": 15}, PMD, (12, 15, False, False)),
    ({"client_no_context_takeover": True}, f"{PMD}; {SMWB}=12", (12, 12, True, False)),
    ({}, f"{PMD}; {SMWB}=12; {CNCT}", (12, 12, True, False)),  # 7.1.1.2: MUST NOT take over
    ({}, f"{PMD}; {SMWB}=12; {SNCT}", (12, 12, False, True)),  # 7.1.1.1: may come unasked
    ({}, f'{PMD}; {SMWB}="8"; {CMWB}="9"', (9, 8, False, False)),
    ({}, f"{PMD}; {SNCT}; {CNCT}; {SMWB}=9; {CMWB}=10", (10, 9, True, True)),
    # The bare offer takes any client_max_window_bits (Autobahn 13.4, 13.6 answer 15); the
    # window we compress with stays the smaller of ours and the answer.
    ({}, f"{PMD}; {SMWB}=12; {CMWB}=15", (12, 12, False, False)),
    ({}, f"{PMD}; {SMWB}=12; {CMWB}=13", (12, 12, False, False)),
    ({}, f"{PMD}; {SMWB}=12; {CMWB}=8", (8, 12, False, False)),
    ({"client_max_window_bits": 9}, f"{PMD}; {SMWB}=12; {CMWB}=15", (9, 12, 0, 0)),
]


@pytest.mark.parametrize(("settings_", "text", "agreed"), CONFIRMED)
def test_7_1_confirm(
    settings_: dict[str, int], text: str, agreed: tuple[int, int, bool, bool]
) -> None:
    factory = PerMessageDeflateFactory(DeflateSettings(**settings_))  # type: ignore[arg-type]
    ext = factory.confirm(offer(text), [factory.offer()])
    assert not ext.is_server
    assert (
        ext.local_max_window_bits, ext.remote_max_window_bits,
        ext.local_no_context_takeover, ext.remote_no_context_takeover,
    ) == agreed


BAD_RESPONSES = [
    # Section 7.1: "The negotiation response contains an extension parameter not defined for
    # use in a response."
    ("permessage-deflate; server_max_window_bits=12; foo", None),
    ("permessage-deflate; server_max_window_bits=12; max_window_bits=9", None),
    # "... contains multiple extension parameters with the same name."
    ("permessage-deflate; server_max_window_bits=12; server_max_window_bits=12", None),
    (
        "permessage-deflate; server_max_window_bits=12; client_no_context_takeover;"
        " client_no_context_takeover",
        None,
    ),
    # "... contains an extension parameter with an invalid value."
    ("permessage-deflate; server_max_window_bits=12; server_no_context_takeover=1", None),
    ("permessage-deflate; server_max_window_bits=12; client_no_context_takeover=1", None),
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=7", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=012", None),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=7", None),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=16", None),
    # 7.1.2.1: "the same or smaller value as the offer"; and it must be there when asked.
    ("permessage-deflate; server_max_window_bits=13", None),
    ("permessage-deflate", None),
    ("permessage-deflate; client_max_window_bits=12", None),
    # 7.1.2.2: "a value equal to or smaller than the received value" (an offer with one).
    (
        "permessage-deflate; client_max_window_bits=13",
        "permessage-deflate; client_max_window_bits=12",
    ),
    # 7.1.2.2: client_max_window_bits when the offer did not have it.
    (
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate",
    ),
    # 7.1.1.1: server_no_context_takeover requested and not answered.
    (
        "permessage-deflate; client_max_window_bits=12",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits",
    ),
]


@pytest.mark.parametrize(("response", "sent"), BAD_RESPONSES)
def test_7_1_bad_response_fails(response: str, sent: str | None) -> None:
    factory = PerMessageDeflateFactory()
    offered = [offer(sent)] if sent is not None else [factory.offer()]
    with pytest.raises(NegotiationError):
        factory.confirm(offer(response), offered)


def test_7_1_confirm_wrong_name_or_not_offered() -> None:
    factory = PerMessageDeflateFactory()
    with pytest.raises(NegotiationError):
        factory.confirm(offer("x-webkit-deflate-frame"), [factory.offer()])
    with pytest.raises(NegotiationError):
        factory.confirm(offer("permessage-deflate"), [offer("x-webkit-deflate-frame")])
    with pytest.raises(NegotiationError):
        factory.confirm(offer("permessage-deflate"), [])


def test_7_1_confirm_against_several_offers() -> None:
    # The response may answer any of our offers: here the second, which did not ask for a
    # server window limit.
    factory = PerMessageDeflateFactory()
    offered = [
        offer("permessage-deflate; server_max_window_bits=10; client_max_window_bits"),
        offer("permessage-deflate"),
    ]
    ext = factory.confirm(offer("permessage-deflate"), offered)
    assert ext.remote_max_window_bits == 15
    ext = factory.confirm(offer("permessage-deflate; server_max_window_bits=9"), offered)
    assert ext.remote_max_window_bits == 9
    with pytest.raises(NegotiationError):  # answers neither
        factory.confirm(offer("permessage-deflate; server_max_window_bits=11"), offered[:1])


window = st.integers(8, 15)
deflate_settings = st.builds(
    DeflateSettings,
    server_max_window_bits=window,
    client_max_window_bits=window,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
)


@st.composite
def client_offers(draw: st.DrawFn) -> ExtensionOffer:
    """Any valid permessage-deflate offer, parameters in any order."""
    chosen: list[tuple[str, str | None]] = []
    if draw(st.booleans()):
        chosen.append(("server_no_context_takeover", None))
    if draw(st.booleans()):
        chosen.append(("client_no_context_takeover", None))
    if draw(st.booleans()):
        chosen.append(("server_max_window_bits", str(draw(window))))
    if draw(st.booleans()):
        chosen.append(("client_max_window_bits", draw(st.none() | window.map(str))))
    return ExtensionOffer("permessage-deflate", tuple(draw(st.permutations(chosen))))


@FAST
@given(client_offers(), deflate_settings, deflate_settings)
def test_7_1_response_only_carries_what_the_offer_allows(
    sent: ExtensionOffer, server: DeflateSettings, client: DeflateSettings
) -> None:
    response, server_ext = PerMessageDeflateFactory(server).accept(sent) or pytest.fail()
    got = params(response)
    asked = dict(sent.params)
    assert set(got) <= {
        "server_no_context_takeover", "client_no_context_takeover",
        "server_max_window_bits", "client_max_window_bits",
    }
    if "client_max_window_bits" not in asked:
        assert "client_max_window_bits" not in got
    elif asked["client_max_window_bits"] is not None:
        assert int(got.get("client_max_window_bits") or 15) <= int(
            asked["client_max_window_bits"] or 15
        )
    if "server_max_window_bits" in asked:
        assert int(got["server_max_window_bits"] or 0) <= int(
            asked["server_max_window_bits"] or 0
        )
    if "server_no_context_takeover" in asked:
        assert "server_no_context_takeover" in got
    # The client that sent this offer accepts the answer, and both ends agree.
    client_ext = PerMessageDeflateFactory(client).confirm(
        header_round_trip([response])[0], header_round_trip([sent])
    )
    assert client_ext.remote_max_window_bits == server_ext.local_max_window_bits
    assert client_ext.local_max_window_bits <= server_ext.remote_max_window_bits
    assert client_ext.remote_no_context_takeover == server_ext.local_no_context_takeover
    if server_ext.remote_no_context_takeover:
        assert client_ext.local_no_context_takeover or "client_no_context_takeover" in asked


@FAST
@given(deflate_settings, deflate_settings)
def test_7_1_our_offer_and_answer_agree(server: DeflateSettings, client: DeflateSettings) -> None:
    client_factory = PerMessageDeflateFactory(client)
    offers = header_round_trip([client_factory.offer()])
    response, server_ext = PerMessageDeflateFactory(server).accept_first(offers) or pytest.fail()
    client_ext = client_factory.confirm(header_round_trip([response])[0], offers)
    assert client_ext.remote_max_window_bits == server_ext.local_max_window_bits
    # The offer is bare (7.1.2.2): the server answers its own limit, and the client may
    # compress with a smaller window than the server inflates with.
    assert client_ext.local_max_window_bits <= server_ext.remote_max_window_bits
    assert server_ext.remote_max_window_bits == server.client_max_window_bits
    assert client_ext.local_max_window_bits == min(
        client.client_max_window_bits, server.client_max_window_bits
    )
    assert server_ext.local_max_window_bits == min(
        client.server_max_window_bits, server.server_max_window_bits
    )
    assert client_ext.local_no_context_takeover == server_ext.remote_no_context_takeover
    assert client_ext.remote_no_context_takeover == server_ext.local_no_context_takeover


# -- 7.2 the codec ------------------------------------------------------------------------------

SIZES = [0, 1, 125, 126, 65536, MiB]


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no_takeover"])
@pytest.mark.parametrize("bits", range(8, 16))
def test_7_2_round_trip(bits: int, takeover: bool) -> None:
    sender, receiver = pair(bits, takeover=takeover)
    for size in SIZES:
        data = sample(size)
        for _ in range(2):  # the second time, with the first in the window (or not)
            frames = encode(sender, data)
            assert frames[0][1] == RSV1
            assert decode(receiver, frames) == data


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no_takeover"])
@pytest.mark.parametrize("bits", [8, 12, 15])
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_7_2_fragmented_round_trip(bits: int, takeover: bool, parts: int) -> None:
    sender, receiver = pair(bits, takeover=takeover)
    for size in [0, 1, 126, 65536]:
        data = sample(size, seed=parts)
        frames = encode(sender, data, parts, opcode=TEXT)
        # Section 6: RSV1 on the first frame of the message only.
        assert [rsv for _, rsv, _, _ in frames] == [RSV1] + [0] * (parts - 1)
        assert [op for op, _, _, _ in frames] == [TEXT] + [CONT] * (parts - 1)
        # 7.2.1: non-final fragments keep their sync-flush tail; only the message ends
        # without it.
        assert all(payload.endswith(TAIL) for _, _, payload, _ in frames[:-1])
        assert decode(receiver, frames) == data


def test_7_2_1_empty_final_fragment_is_a_single_zero() -> None:
    sender, receiver = pair()
    frames = encode(sender, b"Hello", 1)
    p1, rsv1 = sender.encode(BINARY, b"Hello", fin=False)
    p2, rsv2 = sender.encode(CONT, b"", fin=True)
    assert (rsv1, rsv2) == (RSV1, 0)
    assert p2 == b"\x00"  # 7.2.3.6
    assert decode(receiver, frames) == b"Hello"
    assert decode(receiver, [(BINARY, rsv1, p1, False), (CONT, rsv2, p2, True)]) == b"Hello"


def test_7_2_1_empty_message() -> None:
    sender, receiver = pair()
    for _ in range(3):
        ((_, rsv, payload, _),) = encode(sender, b"")
        assert (rsv, payload) == (RSV1, b"\x00")
        assert decode(receiver, [(BINARY, rsv, payload, True)]) == b""


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64, 1000])
def test_7_2_2_any_cut_gives_the_same_output(piece: int) -> None:
    sender, receiver = pair(10)
    messages = [sample(5000, seed=1), sample(3000, seed=2), b"", sample(5000, seed=1)]
    for data in messages:
        frames = encode(sender, data, 3)
        assert decode(receiver, frames, piece=piece, empty_first=True) == data


@FAST
@given(
    st.lists(st.binary(max_size=600) | st.sampled_from([b"", b"a" * 700, b"ab" * 400]),
             min_size=1, max_size=4),
    st.integers(1, 50),
    st.integers(1, 4),
    st.sampled_from([8, 9, 12, 15]),
    st.booleans(),
)
def test_7_2_2_chunking_property(
    messages: list[bytes], piece: int, parts: int, bits: int, takeover: bool
) -> None:
    sender, receiver = pair(bits, takeover=takeover)
    for data in messages:
        frames = encode(sender, data, parts)
        assert decode(receiver, frames, piece=piece) == data


def test_7_2_context_takeover_shrinks_a_repeated_message() -> None:
    data = sample(2000)
    sender, _ = pair(15, takeover=True)
    first, second = encode(sender, data)[0][2], encode(sender, data)[0][2]
    assert len(second) < len(first) // 4
    sender, _ = pair(15, takeover=False)
    assert encode(sender, data)[0][2] == encode(sender, data)[0][2]


def test_7_1_1_no_context_takeover_messages_stand_alone() -> None:
    sender, _ = pair(12, takeover=False)
    data = sample(3000)
    encode(sender, data)
    frames = encode(sender, data)
    _, fresh = pair(12, takeover=False)  # a receiver that never saw the first message
    assert decode(fresh, frames) == data
    # With takeover the second message refers back to the first: a fresh receiver fails.
    sender, _ = pair(12, takeover=True)
    encode(sender, data)
    frames = encode(sender, data)
    _, fresh = pair(12, takeover=True)
    with pytest.raises(InvalidPayload):
        decode(fresh, frames)


def repeats_at(distance: int, seed: int = 8) -> bytes:
    """Random bytes whose only long matches lie ``distance`` bytes back."""
    block = random.Random(seed).randbytes(distance)
    return block * 3


def test_7_1_2_window_8_output_is_valid_for_an_8_bit_inflater() -> None:
    # zlib cannot deflate with a raw 8-bit window, so 9 is used; zlib keeps its distances
    # within 512 - 262 = 250 bytes then, so a strict 8-bit inflater still reads it.
    sender = PerMessageDeflate(True, local_max_window_bits=8, threshold=0)
    inflater = zlib.decompressobj(-8)
    for data in (repeats_at(100), repeats_at(250), repeats_at(300), sample(20_000)):
        ((_, _, payload, _),) = encode(sender, data)
        assert inflater.decompress(payload + TAIL) == data


def test_7_1_2_window_8_inflates_what_a_9_bit_deflater_sends() -> None:
    # A peer that substitutes 9 for 8 with another deflater may reach 512 bytes back: the
    # receiver inflates with at least 9 bits, so that still decodes.
    data = repeats_at(300)
    obj = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (obj.compress(data) + obj.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(payload) < 2 * 300  # the match 300 bytes back was used
    ext = PerMessageDeflate(False, remote_max_window_bits=8)
    assert decode(ext, [(BINARY, RSV1, payload, True)]) == data


def test_7_2_3_our_encoder_matches_the_rfc_bytes() -> None:
    ext = PerMessageDeflate(True, local_max_window_bits=15, threshold=0)
    assert ext.encode(TEXT, b"Hello", fin=True) == (bytes.fromhex("f248cdc9c90700"), RSV1)
    # 7.2.3.2: the same message again, referring to the first.
    assert ext.encode(TEXT, b"Hello", fin=True) == (bytes.fromhex("f200110000"), RSV1)


# -- 7.2.3 the RFC's examples, decoded ---------------------------------------------------------


def receiver(takeover: bool = True) -> PerMessageDeflate:
    return PerMessageDeflate(False, remote_no_context_takeover=not takeover)


def test_7_2_3_1_one_compressed_block() -> None:
    # "0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00": the payload is f2 48 cd c9 c9 07 00.
    # (Not c2 48 ...: that is not this DEFLATE stream.)
    payload = bytes.fromhex("f248cdc9c90700")
    assert decode(receiver(), [(TEXT, RSV1, payload, True)]) == b"Hello"
    with pytest.raises(InvalidPayload):
        decode(receiver(), [(TEXT, RSV1, bytes.fromhex("c248cdc9c90700"), True)])


def test_7_2_3_1_fragmented() -> None:
    # "0x41 0x03 0xf2 0x48 0xcd" then "0x80 0x04 0xc9 0xc9 0x07 0x00"
    frames = [
        (TEXT, RSV1, bytes.fromhex("f248cd"), False),
        (CONT, 0, bytes.fromhex("c9c90700"), True),
    ]
    assert decode(receiver(), frames) == b"Hello"


def test_7_2_3_2_sharing_the_window() -> None:
    ext = receiver()
    assert decode(ext, [(TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), True)]) == b"Hello"
    assert decode(ext, [(TEXT, RSV1, bytes.fromhex("f200110000"), True)]) == b"Hello"


def test_7_2_3_2_without_the_window_fails() -> None:
    ext = receiver(takeover=False)
    assert decode(ext, [(TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), True)]) == b"Hello"
    with pytest.raises(InvalidPayload):
        decode(ext, [(TEXT, RSV1, bytes.fromhex("f200110000"), True)])


def test_7_2_3_3_block_with_no_compression() -> None:
    payload = bytes.fromhex("000500faff48656c6c6f00")
    assert decode(receiver(), [(TEXT, RSV1, payload, True)]) == b"Hello"


def test_7_2_3_4_block_with_bfinal_set() -> None:
    ext = receiver()
    payload = bytes.fromhex("f348cdc9c90700")
    # Twice: after a final block the next message starts a new stream.
    assert decode(ext, [(TEXT, RSV1, payload, True)]) == b"Hello"
    assert decode(ext, [(TEXT, RSV1, payload, True)], piece=1) == b"Hello"
    assert decode(ext, [(TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), True)]) == b"Hello"


def test_7_2_3_5_two_blocks_in_one_message() -> None:
    payload = bytes.fromhex("f24805000000ffffcac9c90700")
    assert decode(receiver(), [(TEXT, RSV1, payload, True)]) == b"Hello"
    # and as the RFC splits it into two frames
    frames = [
        (TEXT, RSV1, bytes.fromhex("f24805000000ffff"), False),
        (CONT, 0, bytes.fromhex("cac9c90700"), True),
    ]
    assert decode(receiver(), frames) == b"Hello"


def test_7_2_3_6_empty_final_fragment() -> None:
    frames = [
        (TEXT, RSV1, bytes.fromhex("f248cdc9c90700") + TAIL, False),
        (CONT, 0, b"\x00", True),
    ]
    assert decode(receiver(), frames) == b"Hello"
    assert decode(receiver(), [(TEXT, RSV1, b"\x00", True)]) == b""


def test_6_uncompressed_message_passes_through() -> None:
    ext = receiver()
    frames = [(TEXT, 0, b"Hel", False), (CONT, 0, b"lo", True)]
    assert decode(ext, frames) == b"Hello"
    # and the window is untouched: a compressed message after it still decodes
    assert decode(ext, [(TEXT, RSV1, bytes.fromhex("f248cdc9c90700"), True)]) == b"Hello"


# -- 6 RSV1, errors, limits ---------------------------------------------------------------------


@pytest.mark.parametrize("first_rsv", [RSV1, 0])
def test_6_rsv1_on_a_continuation_frame(first_rsv: int) -> None:
    # "An endpoint receiving such a frame MUST _Fail the WebSocket Connection_."
    first = bytes.fromhex("f248cd") if first_rsv else b"Hel"
    frames = [(TEXT, first_rsv, first, False), (CONT, RSV1, bytes.fromhex("c9c90700"), True)]
    with pytest.raises(ProtocolError) as caught:
        decode(receiver(), frames)
    assert caught.value.close_code == 1002


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # BTYPE 11: reserved
        bytes.fromhex("0005000000") + b"Hello",  # stored block whose NLEN is not ~LEN
        bytes.fromhex("f348cdc9c90700") + b"junk",  # data after the final block
        bytes.fromhex("f200110000"),  # a distance back into an empty window
    ],
    ids=["reserved-btype", "bad-nlen", "after-bfinal", "too-far-back"],
)
def test_corrupt_data_is_1007(payload: bytes) -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode(receiver(), [(BINARY, RSV1, payload, True)])
    assert caught.value.close_code == 1007


def test_data_after_bfinal_fails_at_once() -> None:
    # Nothing after a final block is buffered: the next piece fails the message.
    ext = receiver()
    head = bytes.fromhex("f348cdc9c90700")
    assert ext.decode(TEXT, RSV1, head, frame_start=True, frame_end=False, fin=False,
                      max_size=None) == b"Hello"
    with pytest.raises(InvalidPayload):
        ext.decode(TEXT, RSV1, b"x" * 1000, frame_start=False, frame_end=False, fin=False,
                   max_size=None)


def bomb(size: int = 10 * 1000 * 1000) -> bytes:
    obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (obj.compress(bytes(size)) + obj.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_limit_exact_size_passes_one_more_fails() -> None:
    sender, _ = pair()
    data = sample(5000)
    frames = encode(sender, data)
    _, ext = pair()
    assert decode(ext, frames, max_size=5000) == data
    _, ext = pair()
    with pytest.raises(PayloadTooBig):
        decode(ext, frames, max_size=4999)


@pytest.mark.parametrize("piece", [None, 1024], ids=["whole", "1KiB-pieces"])
def test_decompression_bomb_stops_at_the_limit(piece: int | None) -> None:
    payload = bomb()
    assert len(payload) < 20_000  # 10 MB of zeros
    ext = receiver()
    outputs: list[int] = []
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig) as caught:
            decode(ext, [(BINARY, RSV1, payload, True)], max_size=MiB, piece=piece,
                   outputs=outputs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.close_code == 1009
    assert sum(outputs) <= MiB  # what was handed on never exceeded the limit
    assert peak < 3 * MiB  # ~1 MiB of output (zlib's buffer doubles it at most), never 10 MB


def test_unlimited_when_max_size_is_none() -> None:
    assert decode(receiver(), [(BINARY, RSV1, bomb(2 * MiB), True)]) == bytes(2 * MiB)


def test_max_size_zero() -> None:
    sender, _ = pair()
    ((_, rsv, payload, _),) = encode(sender, b"")
    assert decode(receiver(), [(BINARY, rsv, payload, True)], max_size=0) == b""
    ((_, rsv, payload, _),) = encode(sender, b"x")
    with pytest.raises(PayloadTooBig):
        decode(receiver(), [(BINARY, rsv, payload, True)], max_size=0)


# -- sending policy: threshold, enabled, compress ------------------------------------------------


def test_threshold_skips_small_messages() -> None:
    sender, receiver_ = pair(threshold=100)
    small, big = b"x" * 99, b"x" * 100
    assert sender.encode(TEXT, small, fin=True) == (small, 0)
    payload, rsv = sender.encode(TEXT, big, fin=True)
    assert rsv == RSV1 and len(payload) < 100
    assert decode(receiver_, [(TEXT, rsv, payload, True)]) == big


def test_threshold_decided_on_the_first_fragment() -> None:
    sender, receiver_ = pair(threshold=100)
    # A short first fragment: the whole message goes uncompressed.
    p1, r1 = sender.encode(TEXT, b"ab", fin=False)
    p2, r2 = sender.encode(CONT, b"x" * 1000, fin=True)
    assert (p1, r1, p2, r2) == (b"ab", 0, b"x" * 1000, 0)
    assert decode(receiver_, [(TEXT, r1, p1, False), (CONT, r2, p2, True)]) == b"ab" + p2
    # A long first fragment: the whole message is compressed, even a short last fragment.
    p1, r1 = sender.encode(TEXT, b"y" * 200, fin=False)
    p2, r2 = sender.encode(CONT, b"z", fin=True)
    assert (r1, r2) == (RSV1, 0)
    assert p1.endswith(TAIL)
    assert decode(receiver_, [(TEXT, r1, p1, False), (CONT, r2, p2, True)]) == b"y" * 200 + b"z"


def test_enabled_toggles_following_messages() -> None:
    sender, receiver_ = pair()
    data = sample(1000)
    sender.enabled = False
    ((_, rsv, payload, _),) = encode(sender, data)
    assert (rsv, payload) == (0, data)
    assert decode(receiver_, [(BINARY, rsv, payload, True)]) == data
    # Switched off in the middle of a compressed message: that message stays compressed.
    sender.enabled = True
    p1, r1 = sender.encode(BINARY, data, fin=False)
    sender.enabled = False
    p2, r2 = sender.encode(CONT, data, fin=True)
    assert (r1, r2) == (RSV1, 0) and p2 != data
    assert decode(receiver_, [(BINARY, r1, p1, False), (CONT, r2, p2, True)]) == data + data
    assert sender.encode(BINARY, data, fin=True) == (data, 0)
    sender.enabled = True
    ((_, rsv, payload, _),) = encode(sender, data)
    assert rsv == RSV1
    assert decode(receiver_, [(BINARY, rsv, payload, True)]) == data


def test_compress_false_sends_one_message_as_is() -> None:
    sender, receiver_ = pair()
    data = sample(1000)
    assert sender.encode(BINARY, data, fin=True, compress=False) == (data, 0)
    payload, rsv = sender.encode(BINARY, data, fin=True)
    assert rsv == RSV1
    assert decode(receiver_, [(BINARY, rsv, payload, True)]) == data


def test_control_frames_are_never_compressed() -> None:
    sender, _ = pair()
    assert sender.encode(int(Opcode.PING), b"p" * 100, fin=True) == (b"p" * 100, 0)


def test_idle_extensions_are_small() -> None:
    # The zlib objects are made on first use: an idle connection costs next to nothing.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [PerMessageDeflate(True, local_max_window_bits=15) for _ in range(1000)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 1000
    assert used < 1000 * 2048


# -- through two Connection objects -------------------------------------------------------------


def negotiate(
    server: DeflateSettings | None = None, client: DeflateSettings | None = None
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    client_factory = PerMessageDeflateFactory(client)
    offers = header_round_trip([client_factory.offer()])
    response, server_ext = PerMessageDeflateFactory(server).accept_first(offers) or pytest.fail()
    client_ext = client_factory.confirm(header_round_trip([response])[0], offers)
    return server_ext, client_ext


def connections(
    server: DeflateSettings | None = None,
    client: DeflateSettings | None = None,
    **options: object,
) -> tuple[Connection, Connection]:
    server_ext, client_ext = negotiate(server, client)
    return (
        Connection(Side.SERVER, extensions=[server_ext], **options),  # type: ignore[arg-type]
        Connection(Side.CLIENT, extensions=[client_ext], **options),  # type: ignore[arg-type]
    )


def pipe(src: Connection, dst: Connection, *, piece: int | None = None) -> tuple[
    list[bytes], list[Event]
]:
    wire = src.data_to_send()
    events: list[Event] = []
    for chunk in wire:
        for cut in pieces(chunk, piece):
            events += dst.receive_data(cut)
    return wire, events


def test_connection_messages_both_ways() -> None:
    server, client = connections()
    text = "héllo wörld ✓ " * 200
    client.send_message(text)
    wire, events = pipe(client, server)
    assert wire[0][0] & RSV1 and len(wire[0]) < len(text)
    assert events == [Message(text)]
    data = sample(100_000)
    server.send_message(data)
    wire, events = pipe(server, client, piece=777)
    assert wire[0][0] & RSV1
    assert events == [Message(data)]


def test_connection_small_messages_uncompressed() -> None:
    server, client = connections()
    client.send_message("hi")
    wire, events = pipe(client, server)
    assert not wire[0][0] & RSV1
    assert events == [Message("hi")]


@pytest.mark.parametrize("receive_fragments", [False, True])
def test_connection_fragmented_send(receive_fragments: bool) -> None:
    server, client = connections(receive_fragments=receive_fragments)
    parts = ["é" * 100, "日本" * 150, "", "✓" * 50]
    for i, part in enumerate(parts):
        client.send_fragment(part, last=i == len(parts) - 1)
        if i == 1:
            client.send_ping(b"between")
    wire, events = pipe(client, server, piece=5)
    data_frames = [frame for frame in wire if frame[0] & 0x0F in (TEXT, CONT)]
    assert [bool(frame[0] & RSV1) for frame in data_frames] == [True, False, False, False]
    got = [e for e in events if isinstance(e, (Message, Fragment))]
    if receive_fragments:
        assert "".join(str(e.data) for e in got) == "".join(parts)
        assert isinstance(got[-1], Fragment) and got[-1].last
    else:
        assert got == [Message("".join(parts))]


@pytest.mark.parametrize(
    "settings_",
    [
        DeflateSettings(server_max_window_bits=8, client_max_window_bits=8, threshold=0),
        DeflateSettings(server_no_context_takeover=True, client_no_context_takeover=True),
        DeflateSettings(server_max_window_bits=15, client_max_window_bits=15, level=9),
    ],
    ids=["window-8", "no-takeover", "window-15"],
)
def test_connection_many_messages(settings_: DeflateSettings) -> None:
    server, client = connections(settings_, settings_)
    for i in range(20):
        data = sample(50 * i, seed=i)
        server.send_message(data)
        client.send_message(data)
        assert pipe(server, client)[1] == [Message(data)]
        assert pipe(client, server)[1] == [Message(data)]


def test_connection_bomb_fails_with_1009() -> None:
    _, client = connections(max_message_size=MiB)
    frame = serialize_frame(BINARY, bomb(), rsv1=True)
    events = client.receive_data(frame)
    assert [type(e) for e in events] == [Failed]
    assert events[0].code == 1009  # type: ignore[union-attr]


def test_connection_corrupt_data_fails_with_1007() -> None:
    _, client = connections()
    events = client.receive_data(serialize_frame(BINARY, b"\xff\xff\xff", rsv1=True))
    assert events == [Failed(1007, events[0].reason)]  # type: ignore[union-attr]


def test_connection_rsv1_on_continuation_fails_with_1002() -> None:
    _, client = connections()
    wire = serialize_frame(TEXT, b"Hel", fin=False) + serialize_frame(CONT, b"lo", rsv1=True)
    events = client.receive_data(wire)
    assert [type(e) for e in events] == [Failed]
    assert events[0].code == 1002  # type: ignore[union-attr]


def test_connection_rfc_example_frame() -> None:
    _, client = connections()
    assert client.receive_data(bytes.fromhex("c107f248cdc9c90700")) == [Message("Hello")]
