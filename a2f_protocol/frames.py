"""Binary frames of the protocol: `PushAudio` (client -> server) and `BlendshapeFrame` (A2FB).

PushAudio: int64 LE `startSampleIndex`, then PCM16 LE mono samples.
BlendshapeFrame: magic "A2FB", uint32 version (1), uint32 weight_count, uint32 reserved (0),
uint64 frame_index, int64 timestamp_current, int64 timestamp_next (samples at 16 kHz), then
weight_count float32 LE weights. All little-endian, no padding (40-byte header).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from a2f_protocol.messages import PROTOCOL_VERSION

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest WebSocket message the gateway accepts (as the reference server)."""

TRANSPORT_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES
"""Largest message the socket layer reads at all. One between the two limits is read and
answered with an `Error` (the session goes on); a larger one closes the connection with
1009 unread, so a client cannot make the gateway buffer more than this per connection."""

A2FB_MAGIC = b"A2FB"  # = uint32 0x42463241 little-endian
_PUSH_HEADER = struct.Struct("<q")
_FRAME_HEADER = struct.Struct("<4sIIIQqq")
PUSH_AUDIO_HEADER_BYTES = _PUSH_HEADER.size
FRAME_HEADER_BYTES = _FRAME_HEADER.size

_PCM = np.dtype("<i2")
_WEIGHT = np.dtype("<f4")


class FrameFormatError(ValueError):
    """Bytes that are not a valid frame of the expected kind."""


@dataclass(frozen=True, slots=True)
class PushAudio:
    """Audio chunk: `pcm` (int16) starts at absolute sample `start_sample_index`."""

    start_sample_index: int
    pcm: npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class BlendshapeFrame:
    """One output frame; timestamps are in 16 kHz samples, `weights` float32 in channel order."""

    frame_index: int
    timestamp_current: int
    timestamp_next: int
    weights: npt.NDArray[np.float32]


def pack_push_audio(start_sample_index: int, pcm: npt.ArrayLike) -> bytes:
    """Bytes of a PushAudio message; `pcm` is converted to int16 LE (values must fit)."""
    samples = np.asarray(pcm)
    if samples.ndim != 1:
        raise ValueError("pcm must be one-dimensional (mono)")
    return _PUSH_HEADER.pack(start_sample_index) + samples.astype(_PCM, copy=False).tobytes()


def parse_push_audio(data: bytes) -> PushAudio:
    """Decode a PushAudio message; the samples are a zero-copy view of `data`."""
    if len(data) < PUSH_AUDIO_HEADER_BYTES or (len(data) - PUSH_AUDIO_HEADER_BYTES) % 2:
        raise FrameFormatError("Invalid PushAudio binary payload")
    (start,) = _PUSH_HEADER.unpack_from(data)
    pcm = np.frombuffer(data, dtype=_PCM, offset=PUSH_AUDIO_HEADER_BYTES)
    return PushAudio(start_sample_index=start, pcm=pcm)


def pack_frame(
    frame_index: int, timestamp_current: int, timestamp_next: int, weights: npt.ArrayLike
) -> bytes:
    """Bytes of one A2FB BlendshapeFrame."""
    values = np.asarray(weights, dtype=_WEIGHT)
    if values.ndim != 1:
        raise ValueError("weights must be one-dimensional")
    header = _FRAME_HEADER.pack(
        A2FB_MAGIC, PROTOCOL_VERSION, values.size, 0, frame_index, timestamp_current, timestamp_next
    )
    return header + values.tobytes()


def pack_frames(
    first_index: int, timestamps: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]
) -> list[bytes]:
    """Bytes of consecutive A2FB frames `first_index ..`, frame i spanning `timestamps[i] ..
    timestamps[i + 1]`: one array operation for the whole block, then one slice per frame."""
    count, width = weights.shape
    layout = _frame_layout(width)
    block = np.empty(count, dtype=layout)
    block["magic"] = A2FB_MAGIC
    block["version"] = PROTOCOL_VERSION
    block["count"] = width
    block["reserved"] = 0
    block["index"] = np.arange(first_index, first_index + count, dtype=np.uint64)
    block["current"] = timestamps[:count]
    block["next"] = timestamps[1 : count + 1]
    block["weights"] = weights
    data = block.tobytes()
    size = layout.itemsize
    return [data[i : i + size] for i in range(0, count * size, size)]


@functools.cache
def _frame_layout(width: int) -> np.dtype[np.void]:
    return np.dtype(
        [
            ("magic", "S4"),
            ("version", "<u4"),
            ("count", "<u4"),
            ("reserved", "<u4"),
            ("index", "<u8"),
            ("current", "<i8"),
            ("next", "<i8"),
            ("weights", _WEIGHT, (width,)),
        ]
    )


def unpack_frame(data: bytes) -> BlendshapeFrame:
    """Decode and check one A2FB BlendshapeFrame."""
    if len(data) < FRAME_HEADER_BYTES:
        raise FrameFormatError(f"A2FB frame too short: {len(data)} bytes")
    magic, version, count, reserved, index, current, following = _FRAME_HEADER.unpack_from(data)
    if magic != A2FB_MAGIC:
        raise FrameFormatError(f"bad A2FB magic {magic!r}")
    if version != PROTOCOL_VERSION or reserved != 0:
        raise FrameFormatError(f"unsupported A2FB version {version} (reserved {reserved})")
    if len(data) != FRAME_HEADER_BYTES + 4 * count:
        raise FrameFormatError(f"A2FB frame of {len(data)} bytes does not hold {count} weights")
    weights = np.frombuffer(data, dtype=_WEIGHT, offset=FRAME_HEADER_BYTES).astype(np.float32)
    return BlendshapeFrame(index, current, following, weights)
