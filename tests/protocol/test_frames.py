"""Binary framing: PushAudio and A2FB BlendshapeFrame, byte-exact with the reference layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2f_protocol.frames import (
    FRAME_HEADER_BYTES,
    FrameFormatError,
    pack_frame,
    pack_push_audio,
    parse_push_audio,
    unpack_frame,
)

int64 = st.integers(-(2**63), 2**63 - 1)
floats32 = st.floats(width=32, allow_nan=False)


def test_frame_layout_matches_the_spec() -> None:
    data = pack_frame(7, 1866, 2133, [0.5, 1.0])
    # magic "A2FB" is uint32 0x42463241 little-endian; version 1; count; reserved 0.
    assert struct.unpack_from("<IIII", data) == (0x42463241, 1, 2, 0)
    assert struct.unpack_from("<Qqq", data, 16) == (7, 1866, 2133)
    assert data[:4] == b"A2FB" and FRAME_HEADER_BYTES == 40
    assert struct.unpack_from("<2f", data, 40) == (0.5, 1.0)
    assert len(data) == 48


@given(
    index=st.integers(0, 2**64 - 1),
    current=int64,
    following=int64,
    weights=st.lists(floats32, max_size=80),
)
def test_frame_round_trip(index: int, current: int, following: int, weights: list[float]) -> None:
    frame = unpack_frame(pack_frame(index, current, following, weights))
    assert (frame.frame_index, frame.timestamp_current, frame.timestamp_next) == (
        index,
        current,
        following,
    )
    np.testing.assert_array_equal(frame.weights, np.asarray(weights, np.float32))


@pytest.mark.parametrize(
    "data",
    [b"A2FB", b"XXXX" + bytes(36), pack_frame(0, 0, 0, [1.0])[:-1], pack_frame(0, 0, 0, [])[:-1]],
)
def test_bad_frames_are_refused(data: bytes) -> None:
    with pytest.raises(FrameFormatError):
        unpack_frame(data)


@given(start=int64, pcm=st.lists(st.integers(-32768, 32767), max_size=500))
def test_push_audio_round_trip(start: int, pcm: list[int]) -> None:
    data = pack_push_audio(start, np.asarray(pcm, np.int16))
    assert len(data) == 8 + 2 * len(pcm)
    assert struct.unpack_from("<q", data) == (start,)
    parsed = parse_push_audio(data)
    assert parsed.start_sample_index == start
    assert parsed.pcm.tolist() == pcm


@pytest.mark.parametrize("size", [0, 1, 7, 9, 13])
def test_push_audio_needs_header_and_whole_samples(size: int) -> None:
    with pytest.raises(FrameFormatError, match="Invalid PushAudio binary payload"):
        parse_push_audio(bytes(size))


def test_push_audio_with_header_only_is_empty() -> None:
    assert parse_push_audio(pack_push_audio(5, [])).pcm.size == 0
