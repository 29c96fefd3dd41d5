"""The in-place halves of corral's fast path, compiled against pure (RFC 6455 section 5.3):

- ``apply_mask_in_place`` leaves in a writable buffer exactly what ``apply_mask`` returns, at
  any mask offset and buffer alignment, and refuses read-only buffers and bad masks alike;
- ``PayloadBuffer`` is filled through writable views and handed out once as ``bytes``; no new
  view after that, and a view still held never points at freed memory.

The compiled half is skipped when the extension is not built (pure install).
"""

from __future__ import annotations

import gc
from itertools import pairwise
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import _pure
from helpers import twins

_, _, IMPLS = twins(_pure, "corral._speedups")

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(
    data=st.binary(max_size=3000),
    mask=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=-9, max_value=1 << 40),
    skip=st.integers(min_value=0, max_value=9),
)
def test_5_3_masking_in_place_equals_masking_a_copy(
    impl: ModuleType, data: bytes, mask: bytes, offset: int, skip: int
) -> None:
    buf = bytearray(skip) + data  # the data starts at any alignment
    impl.apply_mask_in_place(memoryview(buf)[skip:], mask, offset)
    assert bytes(buf[skip:]) == _pure.apply_mask(data, mask, offset)
    assert buf[:skip] == bytearray(skip)  # nothing outside the view is touched


@pytest.mark.parametrize("impl", IMPLS)
def test_5_3_masking_in_place_refuses_what_it_cannot_do(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask_in_place(b"read-only", b"1234")
    with pytest.raises(TypeError):
        impl.apply_mask_in_place(memoryview(bytearray(3)).toreadonly(), b"1234")
    with pytest.raises(ValueError, match="mask must be 4 bytes"):
        impl.apply_mask_in_place(bytearray(3), b"123")
    empty = bytearray()
    impl.apply_mask_in_place(empty, b"1234")
    assert empty == b""


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(data=st.binary(max_size=5000), points=st.lists(st.integers(min_value=0), max_size=6))
def test_payload_buffer_filled_piece_by_piece_gives_the_bytes(
    impl: ModuleType, data: bytes, points: list[int]
) -> None:
    buffer = impl.PayloadBuffer(len(data))
    assert len(buffer) == len(data)
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    for start, stop in pairwise(bounds):
        view = buffer.view(start, stop)
        assert len(view) == stop - start and not view.readonly
        view[:] = data[start:stop]
    payload = buffer.take()
    assert type(payload) is bytes
    assert payload == data
    assert hash(payload) == hash(data)


@pytest.mark.parametrize("impl", IMPLS)
def test_payload_buffer_is_taken_once(impl: ModuleType) -> None:
    buffer = impl.PayloadBuffer(4)
    buffer.view(0, 4)[:] = b"abcd"
    assert buffer.take() == b"abcd"
    with pytest.raises(BufferError):
        buffer.take()
    with pytest.raises(BufferError):
        buffer.view(0, 1)
    assert impl.PayloadBuffer(0).take() == b""


@pytest.mark.parametrize("impl", IMPLS)
def test_payload_buffer_views_stay_in_range(impl: ModuleType) -> None:
    buffer = impl.PayloadBuffer(10)
    for start, stop in ((-1, 2), (3, 2), (0, 11), (11, 11)):
        with pytest.raises(ValueError, match="view out of range"):
            buffer.view(start, stop)
    assert len(buffer.view(10, 10)) == 0
    with pytest.raises(ValueError):
        impl.PayloadBuffer(-1)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_view_held_after_take_points_at_live_memory(impl: ModuleType) -> None:
    buffer = impl.PayloadBuffer(100_000)
    view = buffer.view(0, 100_000)
    view[:] = bytes(range(256)) * 390 + bytes(160)
    payload = buffer.take()
    del payload, buffer
    gc.collect()
    assert view[255] == 255 and view[-1] == 0  # still readable: nothing was freed under it
