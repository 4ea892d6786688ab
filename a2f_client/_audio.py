"""Audio sources for the streaming client: a file, a numpy array, or a live async source.

Everything becomes PCM16 blocks at one known rate, which is what `PushAudio` carries.
Files are decoded and resampled to 16 kHz with the gateway's own decoder, so a file streamed
over the WebSocket sees the same samples as the same file posted to the batch API.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import numpy.typing as npt

from a2f_protocol.audio_files import decode_16k, probe
from a2f_protocol.clock import MODEL_SAMPLE_RATE

AudioSource = Union[  # noqa: UP007 (a runtime alias: Python 3.10 has no `|` for these)
    str, os.PathLike[str], BinaryIO, npt.NDArray[np.generic], AsyncIterable[npt.NDArray[np.generic]]
]
"""A path or open binary file (any format the gateway decodes), a mono/stereo array, or an
async iterable of mono blocks (float in [-1, 1] or int16) for live audio."""


def to_pcm16(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    """int16 passes through; floats in [-1, 1] are scaled by 32768, rounded and clipped."""
    array = np.asarray(samples)
    if array.ndim == 2:  # (frames, channels): downmix like the gateway does for files
        array = (
            array.mean(axis=1, dtype=np.float32) if array.dtype.kind == "f" else array.mean(axis=1)
        )
    if array.ndim != 1:
        raise ValueError("audio must be mono (frames,) or (frames, channels)")
    if array.dtype == np.int16:
        return array
    if array.dtype.kind in "iu":
        return np.clip(array, -32768, 32767).astype(np.int16)
    scaled = np.rint(np.asarray(array, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def is_file_source(source: object) -> bool:
    return isinstance(source, (str, os.PathLike)) or hasattr(source, "read")


def file_duration_s(source: str | os.PathLike[str] | BinaryIO) -> float:
    """Length from the header (for progress bars)."""
    if hasattr(source, "read"):
        return probe(source).duration_s  # type: ignore[arg-type]
    with open(source, "rb") as file:
        return probe(file).duration_s


def iter_file_blocks(
    source: str | os.PathLike[str] | BinaryIO, block_samples: int
) -> Iterator[npt.NDArray[np.int16]]:
    """PCM16 blocks of `block_samples` at 16 kHz from a file."""
    if hasattr(source, "read"):
        yield from _rechunk(map(to_pcm16, decode_16k(source)), block_samples)  # type: ignore[arg-type]
        return
    with open(Path(source), "rb") as file:
        yield from _rechunk(map(to_pcm16, decode_16k(file)), block_samples)


def iter_array_blocks(
    samples: npt.NDArray[np.generic], block_samples: int
) -> Iterator[npt.NDArray[np.int16]]:
    pcm = to_pcm16(samples)
    for start in range(0, pcm.size, block_samples):
        yield pcm[start : start + block_samples]


async def aiter_live(
    source: AsyncIterable[npt.NDArray[np.generic]],
) -> AsyncIterator[npt.NDArray[np.int16]]:
    async for block in source:
        yield to_pcm16(block)


def _rechunk(blocks: Iterator[npt.NDArray[np.int16]], size: int) -> Iterator[npt.NDArray[np.int16]]:
    pending = np.zeros(0, np.int16)
    for block in blocks:
        pending = np.concatenate((pending, block))
        while pending.size >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending.size:
        yield pending


__all__ = ["MODEL_SAMPLE_RATE", "AudioSource", "to_pcm16"]
