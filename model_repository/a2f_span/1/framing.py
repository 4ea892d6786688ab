"""Frame windows cut from one contiguous span of audio (pure numpy; pytest imports it).

Window i covers span samples `centres[i] - offset .. centres[i] - offset + window`, zeros
outside the span, as the gateway's `AudioAccumulator` cuts them from a live stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt


def check(span: npt.NDArray[np.float32], centres: npt.NDArray[np.int64]) -> str | None:
    """What is wrong with a span request, or None."""
    if span.ndim != 1 or centres.ndim != 1:
        return f"AUDIO_SPAN and FRAME_CENTERS must be 1-D, got {span.shape} and {centres.shape}"
    if centres.size and (centres.min() < 0 or centres.max() > span.size):
        return f"FRAME_CENTERS must lie in [0, {span.size}] (the span)"
    return None


def window_view(
    span: npt.NDArray[np.float32], centres: npt.NDArray[np.int64], window: int, offset: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Every window position as a read-only strided view `[positions, window]` of the span
    padded with silence, and the view row of each centre: `view[rows[a:b]]` copies just
    those windows, so a sub-batch is the only copy of the overlapping windows."""
    padded = np.zeros(offset + span.size + window - offset, dtype=np.float32)
    padded[offset : offset + span.size] = span
    view = np.lib.stride_tricks.sliding_window_view(padded, window)
    # Window i starts at centres[i] - offset in the span, i.e. at centres[i] in `padded`.
    return view, centres.astype(np.intp)


def sub_batches(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` rows covering `count` rows."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
