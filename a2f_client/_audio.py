"""Audio sources for the streaming client: a file, a numpy array, or a live async source.

Everything becomes PCM16 blocks at one known rate, which is what `PushAudio` carries. Files go
at their own rate (decoded and downmixed with the gateway's decoder) and the session resamples
them with the same streaming resampler the batch API uses, so a 16-bit mono file gives the
same frames on both paths whatever its rate. Resampling before sending would round the
resampled signal to 16 bits, which moved frames by up to 1.6e-3 at 22.05 kHz.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import numpy.typing as npt

from a2f_protocol.audio_files import (
    AudioInfo,
    CorruptAudioError,
    UnsupportedAudioError,
    decode_mono,
    probe,
)
from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.messages import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

FileSource = Union[str, os.PathLike[str], BinaryIO]  # noqa: UP007 (runtime alias, see below)
AudioSource = Union[  # noqa: UP007 (a runtime alias: Python 3.10 has no `|` for these)
    str, os.PathLike[str], BinaryIO, npt.NDArray[np.generic], AsyncIterable[npt.NDArray[np.generic]]
]
"""A path or open binary file (any format the gateway decodes), a mono/stereo numpy array, or
an async iterable of mono blocks (float in [-1, 1] or int16) for live audio."""


@dataclass(frozen=True, slots=True)
class WireAudio:
    """A source as the session receives it: PCM16 blocks at `rate`; `live` ones are not paced."""

    rate: int
    blocks: AsyncIterator[npt.NDArray[np.int16]]
    live: bool


def to_pcm16(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    """int16 passes through; floats in [-1, 1] are scaled by 32768, rounded and clipped."""
    array = np.asarray(samples)
    if array.ndim == 2:  # (frames, channels): downmix like the gateway does for files
        array = (
            array.mean(axis=1, dtype=np.float32) if array.dtype.kind == "f" else array.mean(axis=1)
        )
    if array.ndim != 1:
        raise ValueError("audio must be mono (frames,) or (frames, channels)")
    if array.dtype.kind in "iu":  # int16 passes through without a copy
        pcm: npt.NDArray[np.int16] = np.clip(array, -32768, 32767).astype(np.int16, copy=False)
        return pcm
    scaled = np.rint(np.asarray(array, dtype=np.float64) * 32768.0)
    pcm = np.clip(scaled, -32768, 32767).astype(np.int16)
    return pcm


def wire_audio(
    source: AudioSource,
    sample_rate: int,
    block_seconds: float,
    rates: tuple[int, int] = (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),
) -> WireAudio:
    """Check `source` now (a missing, empty or unreadable file fails before any connection)
    and describe how it is sent; an array or a live source is at `sample_rate`, which must
    lie in `rates` (the ones the protocol takes)."""
    low, high = rates
    if not isinstance(source, (str, os.PathLike, io.IOBase)) and not low <= sample_rate <= high:
        raise ValueError(f"sample rate {sample_rate} Hz: this protocol takes {low} to {high} Hz")
    if isinstance(source, AsyncIterable):
        return WireAudio(sample_rate, _live(source), live=True)
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise ValueError("audio is empty: no samples to send")
        block = _block_samples(sample_rate, block_seconds)
        return WireAudio(sample_rate, _aiter(_array_blocks(source, block)), live=False)
    info = probe_file(source)
    # A file at a rate the protocol does not take is resampled here instead.
    rate = info.sample_rate if low <= info.sample_rate <= high else None
    wire_rate = rate or MODEL_SAMPLE_RATE
    blocks = _file_blocks(source, rate, _block_samples(wire_rate, block_seconds))
    return WireAudio(wire_rate, _aiter(blocks), live=False)


def probe_file(source: FileSource) -> AudioInfo:
    """The file's header; raises `AudioFileError` when it cannot be read or holds no samples."""
    with _opened(source) as file:
        info = probe(file)
    if info.frames == 0:
        raise CorruptAudioError("audio file holds no samples")
    return info


def require_samples(source: FileSource | bytes) -> None:
    """Refuse an empty file before uploading it; a format this machine cannot read is left
    for the server to judge (its decoder may know more)."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif not isinstance(source, str | os.PathLike) and not source.seekable():
        return  # a pipe can be read once only: the server checks it
    try:
        probe_file(source)
    except UnsupportedAudioError:
        return


def _opened(source: FileSource) -> AbstractContextManager[BinaryIO]:
    # An open file stays the caller's to close.
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb")
    return nullcontext(source)


def _file_blocks(
    source: FileSource, rate: int | None, block: int
) -> Iterator[npt.NDArray[np.int16]]:
    with _opened(source) as file:
        yield from _rechunk(map(to_pcm16, decode_mono(file, to_rate=rate)), block)


def _array_blocks(samples: npt.NDArray[np.generic], block: int) -> Iterator[npt.NDArray[np.int16]]:
    pcm = to_pcm16(samples)
    for start in range(0, pcm.size, block):
        yield pcm[start : start + block]


def _block_samples(rate: int, seconds: float) -> int:
    return max(int(seconds * rate), 1)


async def _aiter(blocks: Iterable[npt.NDArray[np.int16]]) -> AsyncIterator[npt.NDArray[np.int16]]:
    for block in blocks:
        yield block


async def _live(
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
