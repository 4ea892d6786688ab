"""What crosses from a session to the inference layer: a stretch of audio and the job that
carries its frames through the scheduler, the dispatcher and back."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.defaults import DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class SpanBatch:
    """Consecutive frames `first_index ..` as one contiguous stretch of audio: the audio is
    held once, and each request's windows are cut from it straight into its input buffer.

    `samples` starts at absolute 16 kHz sample `start`; frame i's window is centred on
    `centres[i]` (relative to `start`), zeros outside `samples` (`cut_windows` cuts them).
    `timestamps` has one entry more than there are frames: the last is the next frame's time,
    so frame i spans `timestamps[i] .. timestamps[i + 1]`.
    """

    first_index: int
    timestamps: npt.NDArray[np.int64]
    start: int
    samples: npt.NDArray[np.float32]

    @property
    def count(self) -> int:
        return int(self.timestamps.size - 1)

    @property
    def centres(self) -> npt.NDArray[np.int64]:
        return self.timestamps[:-1] - self.start

    def cut_windows(
        self, out: npt.NDArray[np.float32], rows: slice, window: int, offset: int
    ) -> None:
        """Write the windows of frames `rows` into `out` (one row each), zeros outside the
        span: a request's input buffer is filled straight from the session's audio."""
        starts = self.centres[rows] - offset
        size = self.samples.size
        for row, begin in enumerate(starts.tolist()):
            if begin >= 0 and begin + window <= size:  # all but a stream's first and last
                out[row] = self.samples[begin : begin + window]
                continue
            out[row] = 0
            lo, hi = max(begin, 0), min(begin + window, size)
            if hi > lo:
                out[row, lo - begin : hi - begin] = self.samples[lo:hi]


Outcome = npt.NDArray[np.float32] | Exception


@dataclass(eq=False, slots=True)
class Job:
    """Consecutive frames of one session waiting for the network, and their results so far.

    `done` is called once, with every row's outputs in frame order or with the first error.
    """

    owner: Hashable  # the session (connection) the frames belong to
    batch: SpanBatch
    parameters: Mapping[str, npt.NDArray[np.float32]]
    done: Callable[[Job, Outcome], None]
    tenant: str = DEFAULT_TENANT
    live: bool = True  # frames of a stream still going (not a session's tail)
    bulk: bool = False  # frames of a file upload: served in the room streams leave
    ready_at: float = -1.0  # monotonic s when the dispatcher got it, if it measures latency
    taken: int = 0  # rows handed to requests so far
    _filled: int = 0
    _rows: npt.NDArray[np.float32] | None = None
    _settled: bool = False

    @property
    def count(self) -> int:
        return self.batch.count

    def deliver(self, start: int, rows: npt.NDArray[np.float32]) -> None:
        """Outputs of rows `start ..` arrived; completes the job once every row has."""
        if self._settled:
            return
        if self._rows is None:
            if start == 0 and rows.shape[0] == self.count:  # the common case: one slice
                self._finish(rows)
                return
            self._rows = np.empty((self.count, rows.shape[1]), np.float32)
        self._rows[start : start + rows.shape[0]] = rows
        self._filled += rows.shape[0]
        if self._filled == self.count:
            self._finish(self._rows)

    def fail(self, error: Exception) -> None:
        if not self._settled:
            self._settled = True
            self.done(self, error)

    def _finish(self, rows: npt.NDArray[np.float32]) -> None:
        self._settled = True
        self.done(self, rows)
