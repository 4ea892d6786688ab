"""Decode uploaded audio files to 16 kHz mono float32, block by block.

`soundfile` (libsndfile) reads WAV (PCM16/24/32, float), FLAC, OGG/Vorbis and more from any
seekable binary file; stereo is downmixed by averaging; any other rate goes through one
streaming `soxr` resampler (the same kind and quality the WebSocket session uses), so memory
stays at a few blocks whatever the file's length.

Errors are classified for HTTP: not audio we can read -> 415, readable but broken, truncated
or empty -> 422, longer than allowed -> 413. The message says what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, ClassVar

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from a2f_protocol.clock import MODEL_SAMPLE_RATE

BLOCK_FRAMES = 1 << 16  # input frames decoded per step: ~0.5 MB of float32 stereo at 48 kHz


class AudioFileError(ValueError):
    """An upload that cannot be animated; `status_code` is the HTTP answer."""

    status_code: ClassVar[int] = 422


class UnsupportedAudioError(AudioFileError):
    status_code = 415


class CorruptAudioError(AudioFileError):
    status_code = 422


class AudioTooLongError(AudioFileError):
    status_code = 413


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the file's header says."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _open(file: IO[bytes]) -> soundfile.SoundFile:
    # libsndfile calls a 0-byte file "Format not recognised", which sends users hunting for
    # a codec problem.
    if file.seek(0, 2) == 0:
        raise CorruptAudioError("audio file is empty (0 bytes)")
    file.seek(0)
    try:
        sound = soundfile.SoundFile(file)
    except soundfile.LibsndfileError as exc:
        # libsndfile says "Format not recognised" for anything that is not an audio container
        # it knows; other open errors come from a known container with a broken header.
        text = exc.error_string  # without the "Error opening <object repr>" prefix
        if "not recognised" in text.lower():
            raise UnsupportedAudioError(
                "unsupported audio format: send WAV (PCM16/24/32 or float), FLAC or OGG/Vorbis"
            ) from exc
        raise CorruptAudioError(f"corrupt audio file: {text}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CorruptAudioError(f"corrupt audio file: {exc}") from exc
    if sound.samplerate <= 0 or sound.channels <= 0:
        sound.close()
        raise CorruptAudioError("audio header has no sample rate or no channels")
    return sound


def probe(file: IO[bytes]) -> AudioInfo:
    """Read the header only (cheap): format, rate, channels and length."""
    with _open(file) as sound:
        return AudioInfo(
            sound.format, sound.subtype, sound.samplerate, sound.channels, max(sound.frames, 0)
        )


def check_duration(info: AudioInfo, max_seconds: float) -> None:
    """Refuse a file whose header announces more than `max_seconds` of audio."""
    if info.duration_s > max_seconds:
        raise AudioTooLongError(
            f"audio is {info.duration_s:.1f} s long; the limit is {max_seconds:g} s"
        )


def decode_16k(
    file: IO[bytes], *, max_seconds: float | None = None, block_frames: int = BLOCK_FRAMES
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield the file's audio as 16 kHz mono float32 in [-1, 1], one block at a time.

    16 kHz input is passed through bit-exactly (PCM16 becomes `pcm / 32768`, the WebSocket
    path's scaling). `max_seconds` is enforced on the decoded length too, since a header can
    understate it. Raises `AudioFileError` subclasses; a failure can come after some blocks.
    """
    return decode_mono(
        file, to_rate=MODEL_SAMPLE_RATE, max_seconds=max_seconds, block_frames=block_frames
    )


def decode_mono(
    file: IO[bytes],
    *,
    to_rate: int | None = None,
    max_seconds: float | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> Iterator[npt.NDArray[np.float32]]:
    """As `decode_16k`, at the file's own rate unless `to_rate` is given."""
    with _open(file) as sound:
        rate = sound.samplerate
        resampler = (
            None
            if to_rate is None or rate == to_rate
            else soxr.ResampleStream(rate, to_rate, 1, dtype="float32")
        )
        limit = None if max_seconds is None else int(max_seconds * rate)
        decoded = 0
        while True:
            try:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                reason = getattr(exc, "error_string", str(exc))
                raise CorruptAudioError(
                    f"corrupt or truncated audio after {decoded / rate:.2f} s: {reason}"
                ) from exc
            last = block.shape[0] < block_frames
            decoded += block.shape[0]
            if limit is not None and decoded > limit:
                raise AudioTooLongError(f"audio is longer than the limit of {max_seconds:g} s")
            mono = downmix(block)
            if not np.isfinite(mono).all():
                raise CorruptAudioError("audio contains NaN or infinite samples")
            out = mono if resampler is None else resampler.resample_chunk(mono, last=last)
            if out.size:
                yield out
            if last:
                break
        if decoded == 0:
            raise CorruptAudioError("audio file holds no samples")


def downmix(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Average the channels of a (frames, channels) block; mono passes through unchanged."""
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    return np.asarray(block.mean(axis=1), dtype=np.float32)
