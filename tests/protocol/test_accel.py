"""corral._speedups (C) against corral._pure (the source of truth), named after RFC 6455 sections.

- the two agree on every input: masking (5.3), building (5.2) and parsing (5.2), results and
  errors alike, on valid frames, garbage and streams cut at random positions;
- both match the examples of section 5.7 byte for byte;
- every rule parse_frames enforces fails with the same close code and text in both;
- corral.accel picks the compiled module unless CORRAL_PURE=1.

The compiled half is skipped when the extension is not built (pure install).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corral import _pure, accel
from helpers import twins

_speedups, needs_compiled, IMPLS = twins(_pure, "corral._speedups")

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MASK = bytes((0x37, 0xFA, 0x21, 0x3D))  # the masking key of the 5.7 examples
BOUNDARY_SIZES = [0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 125, 126, 127, 65535, 65536, 70000]

masks = st.binary(min_size=4, max_size=4)
sizes = st.one_of(
    st.integers(min_value=0, max_value=300),
    st.sampled_from(BOUNDARY_SIZES),
    st.integers(min_value=0, max_value=70_000),
)
buffer_kinds = st.sampled_from([bytes, bytearray, memoryview])


def compiled() -> ModuleType:
    assert _speedups is not None
    return _speedups


def payload_of(size: int, seed: int) -> bytes:
    """A cheap, non-repeating-looking payload of ``size`` bytes."""
    return bytes((i * 31 + seed) & 0xFF for i in range(size))


def naive_mask(data: bytes, mask: bytes, offset: int) -> bytes:
    """5.3, word for word: octet i is XORed with octet (i + offset) modulo 4 of the key."""
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length + 1)."""
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(bounds)]


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """The result of a call, or the type and text of what it raised."""
    try:
        return "ok", fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


# -- 5.3 masking ----------------------------------------------------------------------------------


@FAST
@needs_compiled
@given(
    size=sizes,
    seed=st.integers(0, 255),
    mask=masks,
    offset=st.integers(min_value=-9, max_value=1 << 40),
    skip=st.integers(0, 7),
    kind=buffer_kinds,
)
@example(size=65536, seed=1, mask=MASK, offset=3, skip=5, kind=memoryview)
def test_5_3_apply_mask_compiled_equals_pure(
    size: int, seed: int, mask: bytes, offset: int, skip: int, kind: type
) -> None:
    # A memoryview that skips ``skip`` bytes is misaligned in memory.
    raw = payload_of(size + skip, seed)
    view = memoryview(raw)[skip:]
    data = view if kind is memoryview else kind(view)
    want = _pure.apply_mask(data, mask, offset)
    got = compiled().apply_mask(data, mask, offset)
    assert type(got) is bytes
    assert got == want
    if size <= 300:
        assert want == naive_mask(raw[skip:], mask, offset)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
@pytest.mark.parametrize("offset", range(8))
def test_5_3_apply_mask_matches_the_rfc_formula(impl: ModuleType, size: int, offset: int) -> None:
    data = payload_of(size, size)
    assert impl.apply_mask(data, MASK, offset) == naive_mask(data, MASK, offset)


@FAST
@pytest.mark.parametrize("impl", IMPLS)
@given(data=st.binary(max_size=2000), mask=masks, points=st.lists(st.integers(0), max_size=8))
def test_5_3_masking_piece_by_piece_with_offsets(
    impl: ModuleType, data: bytes, mask: bytes, points: list[int]
) -> None:
    pieces, done = [], 0
    for piece in cut(data, points):
        pieces.append(impl.apply_mask(piece, mask, done))
        done += len(piece)
    assert b"".join(pieces) == impl.apply_mask(data, mask) == naive_mask(data, mask, 0)
    assert impl.apply_mask(impl.apply_mask(data, mask), mask) == data  # an involution


@pytest.mark.parametrize("impl", IMPLS)
def test_apply_mask_bad_arguments(impl: ModuleType) -> None:
    for bad in (b"", b"abc", b"abcde"):
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            impl.apply_mask(b"data", bad)
    with pytest.raises(TypeError):
        impl.apply_mask("text", MASK)
    with pytest.raises(TypeError):
        impl.apply_mask(b"data", None)
    assert impl.apply_mask(b"", MASK, 3) == b""
    assert impl.apply_mask(b"ab", bytearray(MASK), -1) == naive_mask(b"ab", MASK, 3)


# -- 5.2 building ---------------------------------------------------------------------------------


@FAST
@needs_compiled
@given(
    opcode=st.integers(0, 15),
    size=sizes,
    seed=st.integers(0, 255),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70]),
    mask=st.one_of(st.none(), masks),
    kind=buffer_kinds,
)
def test_5_2_build_frame_compiled_equals_pure(
    opcode: int, size: int, seed: int, fin: bool, rsv: int, mask: bytes | None, kind: type
) -> None:
    payload = kind(payload_of(size, seed))
    want = _pure.build_frame(opcode, payload, fin, rsv, mask)
    assert compiled().build_frame(opcode, payload, fin, rsv, mask) == want
    assert compiled().build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask) == want


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_5_2_build_frame_parses_back(impl: ModuleType, size: int, masked: bool) -> None:
    payload = payload_of(size, 7)
    mask = MASK if masked else None
    wire = impl.build_frame(2, payload, False, 0x40, mask)
    # 5.2: the minimal length encoding: 7 bits to 125, 16 bits to 65535, then 64 bits.
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + (4 if masked else 0)
    assert len(wire) == header + size
    assert impl.parse_frames(wire, 0, masked, -1) == (
        [(2, False, 0x40, payload)], len(wire), 0, "", None
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_build_frame_bad_arguments(impl: ModuleType) -> None:
    for opcode in (-1, 16, 1 << 70):
        with pytest.raises(ValueError, match="opcode"):
            impl.build_frame(opcode, b"")
    for rsv in (1, 0x80, 0x0F, -1, 1 << 70):
        with pytest.raises(ValueError, match="rsv"):
            impl.build_frame(1, b"", True, rsv)
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        impl.build_frame(1, b"x", True, 0, b"abc")
    with pytest.raises(TypeError):
        impl.build_frame(1, "text")


@FAST
@needs_compiled
@given(
    opcode=st.integers(-2, 17),
    length=st.one_of(st.integers(-2, 70000), st.integers(-(1 << 64), 1 << 64)),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0x10, 0x40, 0x70, 1, 0x80]),
)
def test_5_2_frame_header_compiled_equals_pure(
    opcode: int, length: int, fin: bool, rsv: int
) -> None:
    want = outcome(_pure.frame_header, opcode, length, fin, rsv)
    assert outcome(compiled().frame_header, opcode, length, fin, rsv) == want


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_5_2_frame_header_is_build_frames_header(impl: ModuleType, size: int) -> None:
    """One header writer: the header of a payload sent apart is the one build_frame
    writes before that payload."""
    payload = payload_of(size, 3)
    header = impl.frame_header(2, size, False, 0x40)
    assert header + payload == impl.build_frame(2, payload, False, 0x40)


@pytest.mark.parametrize("impl", IMPLS)
def test_frame_header_bad_arguments(impl: ModuleType) -> None:
    for length in (-1, 1 << 63, 1 << 80):
        with pytest.raises(ValueError, match="length out of range"):
            impl.frame_header(2, length)
    with pytest.raises(ValueError, match="opcode"):
        impl.frame_header(16, 0)
    with pytest.raises(ValueError, match="rsv"):
        impl.frame_header(1, 0, True, 0x80)
    with pytest.raises(TypeError, match="length must be an int"):
        impl.frame_header(1, 1.5)


# -- 5.7 examples ---------------------------------------------------------------------------------

EXAMPLES_5_7 = [
    # (wire, require_mask, frames)
    (bytes.fromhex("810548656c6c6f"), False, [(1, True, 0, b"Hello")]),
    (bytes.fromhex("818537fa213d7f9f4d5158"), True, [(1, True, 0, b"Hello")]),
    (bytes.fromhex("010348656c80026c6f"), False, [(1, False, 0, b"Hel"), (0, True, 0, b"lo")]),
    (bytes.fromhex("890548656c6c6f"), False, [(9, True, 0, b"Hello")]),
    (bytes.fromhex("8a8537fa213d7f9f4d5158"), True, [(10, True, 0, b"Hello")]),
    (bytes.fromhex("827e0100") + bytes(256), False, [(2, True, 0, bytes(256))]),
    (bytes.fromhex("827f0000000000010000") + bytes(65536), False, [(2, True, 0, bytes(65536))]),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("wire", "require_mask", "frames"), EXAMPLES_5_7, ids=[
    "unmasked-text", "masked-text", "fragmented", "ping", "masked-pong", "256-bytes", "64-KiB"
])
def test_5_7_examples(
    impl: ModuleType, wire: bytes, require_mask: bool, frames: list[tuple[int, bool, int, bytes]]
) -> None:
    assert impl.parse_frames(wire, 0, require_mask, -1) == (frames, len(wire), 0, "", None)
    mask = MASK if require_mask else None
    built = b"".join(impl.build_frame(op, data, fin, rsv, mask) for op, fin, rsv, data in frames)
    assert built == wire
    # A cut stream gives the whole frames before the cut and stops where the cut one starts.
    for end in {*range(min(len(wire), 40)), len(wire) // 2, len(wire) - 1}:
        parsed, pos, code, _, head = impl.parse_frames(wire[:end], 0, require_mask, -1)
        assert code == 0
        assert parsed == frames[: len(parsed)]
        assert pos == sum(len(impl.build_frame(op, d, f, r, mask)) for op, f, r, d in parsed)
        assert pos <= end
        if len(parsed) < len(frames):
            # The cut frame: reported once its header is whole, its payload left for later.
            opcode, fin, rsv, data = frames[len(parsed)]
            size = len(impl.build_frame(opcode, data, fin, rsv, mask)) - len(data)
            if end - pos < size:
                assert head is None
            else:
                assert head == (opcode, fin, rsv, len(data), mask, size)
                assert end < pos + size + len(data)
        else:
            assert head is None


@pytest.mark.parametrize("impl", IMPLS)
def test_5_7_masked_hello_unmasks(impl: ModuleType) -> None:
    assert impl.apply_mask(bytes.fromhex("7f9f4d5158"), MASK) == b"Hello"


# -- 5.2 parsing: every error case ----------------------------------------------------------------


def header(b0: int, length: int, mask: bytes | None = None, form: int = 0) -> bytes:
    """A raw header; ``form`` forces the 16-bit (126) or 64-bit (127) length encoding."""
    mbit = 0x80 if mask is not None else 0
    if form == 127 or (not form and length >= 1 << 16):
        out = bytes((b0, mbit | 127)) + length.to_bytes(8, "big")
    elif form == 126 or (not form and length >= 126):
        out = bytes((b0, mbit | 126)) + length.to_bytes(2, "big")
    else:
        out = bytes((b0, mbit | length))
    return out + (mask or b"")


ERRORS = [
    # 5.2: unknown opcodes
    *[(header(0x80 | op, 0), False, -1, 1002, f"reserved opcode {op:#x}") for op in
      (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    # 5.5: control frames: at most 125 bytes, never fragmented
    (header(0x89, 126, form=126), False, -1, 1002, "control frame too long"),
    (header(0x8A, 200, form=127), False, -1, 1002, "control frame too long"),
    (header(0x88, 5, MASK, form=126), True, -1, 1002, "control frame too long"),
    (header(0x09, 0), False, -1, 1002, "fragmented control frame"),
    (header(0x08, 2, MASK), True, -1, 1002, "fragmented control frame"),
    # 5.2: the 64-bit length has its most significant bit clear
    (header(0x82, 1 << 63, form=127), False, -1, 1002,
     "64-bit payload length with the high bit set"),
    (header(0x82, (1 << 64) - 1, MASK, form=127), True, 10, 1002,
     "64-bit payload length with the high bit set"),
    # 5.1: the mask policy of the side
    (header(0x81, 0), True, -1, 1002, "unmasked client frame"),
    (header(0x81, 0, MASK), False, -1, 1002, "masked server frame"),
    # the frame size limit, on the declared length, before the payload arrives
    (header(0x82, 11), False, 10, 1009, "frame of 11 bytes, limit is 10"),
    (header(0x82, 3, MASK), True, 2, 1009, "frame of 3 bytes, limit is 2"),
    (header(0x82, (1 << 63) - 1, form=127), False, 1 << 40, 1009,
     f"frame of {(1 << 63) - 1} bytes, limit is {1 << 40}"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("bad", "require_mask", "limit", "code", "reason"), ERRORS, ids=[e[4] for e in ERRORS]
)
def test_5_2_parse_errors(
    impl: ModuleType, bad: bytes, require_mask: bool, limit: int, code: int, reason: str
) -> None:
    mask = MASK if require_mask else None
    good = impl.build_frame(1, b"ok", True, 0, mask) + impl.build_frame(9, b"", True, 0, mask)
    # The frames before the bad one come out; new_pos points at the bad one, whose header
    # alone is enough to refuse it.
    got = impl.parse_frames(b"xx" + good + bad, 2, require_mask, limit)
    assert got[:4] == ([(1, True, 0, b"ok"), (9, True, 0, b"")], 2 + len(good), code, reason)
    # A frame too big (1009) comes with its header, to say how big; a broken one without.
    if code == 1009:
        length = int(reason.split()[2])
        assert got[4] == (bad[0] & 0x0F, True, 0, length, mask, len(bad))
    else:
        assert got[4] is None
    # One byte short of a header: no verdict yet.
    assert impl.parse_frames(bad[:-1], 0, require_mask, limit) == ([], 0, 0, "", None)


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_frames_limits(impl: ModuleType) -> None:
    wire = impl.build_frame(2, bytes(100), True, 0, None)
    assert impl.parse_frames(wire, 0, False, 100)[2] == 0  # the limit itself is allowed
    assert impl.parse_frames(wire, 0, False, 99)[2] == 1009
    assert impl.parse_frames(wire, 0, False, 1 << 80)[2] == 0  # any int; huge: no limit
    assert impl.parse_frames(wire, 0, False, -(1 << 80))[2] == 0  # negative: no limit
    assert impl.parse_frames(wire, len(wire), False, 0) == ([], len(wire), 0, "", None)
    for pos in (-1, len(wire) + 1):
        with pytest.raises(ValueError, match="pos out of range"):
            impl.parse_frames(wire, pos, False, -1)
    with pytest.raises(TypeError):
        impl.parse_frames("text", 0, False, -1)


# -- 5.2 parsing: random input --------------------------------------------------------------------


@st.composite
def raw_frames(draw: st.DrawFn) -> bytes:
    """One frame-like byte string: any first byte, any mask bit, any length form (even
    non-minimal or with the top bit set), a payload that may be short of its length."""
    b0 = draw(st.integers(0, 255))
    mask = draw(st.one_of(st.none(), masks))
    length = draw(st.one_of(st.integers(0, 130), st.sampled_from(BOUNDARY_SIZES)))
    form = draw(st.sampled_from([0, 0, 0, 126, 127]))
    if form == 126 and length >= 1 << 16:
        form = 127
    out = header(b0, length, mask, form)
    if form == 127 and draw(st.integers(0, 9)) == 0:
        out = out[:2] + draw(st.binary(min_size=8, max_size=8)) + out[10:]
    body = payload_of(length, b0)
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, length))]
    return out + body


buffers = st.one_of(
    st.binary(max_size=300),
    st.lists(raw_frames(), max_size=6).map(b"".join),
    st.tuples(st.lists(raw_frames(), max_size=4).map(b"".join), st.binary(max_size=40)).map(
        lambda t: t[0] + t[1]
    ),
)
limits = st.one_of(
    st.just(-1), st.integers(0, 70_000), st.sampled_from([125, 126, 65535, 65536, 1 << 70])
)


@FAST
@needs_compiled
@given(
    buf=buffers,
    pos=st.integers(0, 1 << 20),
    require_mask=st.booleans(),
    limit=limits,
    kind=buffer_kinds,
)
def test_5_2_parse_frames_compiled_equals_pure_on_any_input(
    buf: bytes, pos: int, require_mask: bool, limit: int, kind: type
) -> None:
    pos %= len(buf) + 1
    data = kind(buf)
    want = outcome(_pure.parse_frames, data, pos, require_mask, limit)
    assert outcome(compiled().parse_frames, data, pos, require_mask, limit) == want


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool, list[tuple[int, bool, int, bytes]]]:
    """Valid frames of one side, sizes across the length forms, as built by _pure."""
    masked = draw(st.booleans())
    frames = []
    for _ in range(draw(st.integers(0, 6))):
        opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]))
        if opcode >= 8:
            item = (opcode, True, 0, draw(st.binary(max_size=125)))
        else:
            size = draw(sizes)
            item = (opcode, draw(st.booleans()), draw(st.sampled_from([0, 0x40, 0x70])),
                    payload_of(size, draw(st.integers(0, 255))))
        frames.append(item)
    wire = b"".join(
        _pure.build_frame(op, data, fin, rsv, draw(masks) if masked else None)
        for op, fin, rsv, data in frames
    )
    return wire, masked, frames


@FAST
@pytest.mark.parametrize("impl", IMPLS)
@given(stream=streams(), points=st.lists(st.integers(0), max_size=12))
def test_5_2_any_split_of_a_stream_gives_the_same_frames(
    impl: ModuleType,
    stream: tuple[bytes, bool, list[tuple[int, bool, int, bytes]]],
    points: list[int],
) -> None:
    """Fed as a reader would (append what arrives, parse from where it stopped), any cut of
    the stream yields the frames it was built from."""
    wire, masked, frames = stream
    buf, pos, out = bytearray(), 0, []
    for piece in cut(wire, points):
        buf += piece
        parsed, pos, code, reason, _ = impl.parse_frames(buf, pos, masked, -1)
        assert (code, reason) == (0, "")
        out += parsed
        del buf[:pos]
        pos = 0
    assert out == frames
    assert not buf
    assert impl.parse_frames(wire, 0, masked, -1) == (frames, len(wire), 0, "", None)


# -- corral.accel ---------------------------------------------------------------------------------


def test_accel_picks_one_module() -> None:
    chosen = _speedups if accel.COMPILED else _pure
    assert chosen is not None
    for name in ("apply_mask", "build_frame", "frame_header", "parse_frames"):
        assert getattr(accel, name) is getattr(chosen, name)
    if os.environ.get("CORRAL_PURE") == "1":
        assert not accel.COMPILED
    else:
        assert accel.COMPILED is (_speedups is not None)


@pytest.mark.parametrize(("env", "expected"), [("1", "False"), ("0", str(_speedups is not None))])
def test_accel_corral_pure_environment_variable(env: str, expected: str) -> None:
    code = "import corral.accel as a; print(a.COMPILED)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CORRAL_PURE": env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == expected
