"""A gated input level normaliser: quiet speech is lifted towards the level the model was
trained on; silence, steady noise and clicks are left as they are.

Why: the network reads log band energies above a fixed floor about 70 dB below full scale,
so speech 34 dB quieter than the test's -6 dBFS peak loses its lip closures (the quietest bands of a closure
sink into that floor) while the jaw still follows. Boosting every quiet input would make
noise move the mouth, so the gain rises only while the recent input looks like speech.

How, per 10 ms block of 16 kHz audio (the model's rate, after any resampling):

* Every `DECIDE_EVERY` blocks, over the last `HISTORY` blocks' energies, each averaged with
  its neighbours over `SMOOTH_BLOCKS` (10 ms energies of brown noise or a rumble rise and
  fall like syllables; over 30 ms they do not), digital silence left out (it says nothing
  about the room, and a sound starting after it would look like a syllable rising from
  nothing): the 10th percentile is the noise floor, the 95th the peak.
  The input counts as speech when the peak stands `SPEECH_RANGE_DB` above the floor and the
  history holds `MIN_SYLLABLES` *syllables*: runs of blocks within `NUCLEUS_DB` of the peak
  lasting 60 ms to 1 s. Steady noise, hum and fans have no such range; a fan switched on is
  one run that never ends; key clicks are too short. The speech level is the 80th
  percentile of the blocks `SPEECH_RANGE_DB` above the floor, which does not sink when pauses
  fill part of the history.
* While it is speech, the wanted gain brings the level to `TARGET_DB`: never below 0 dB (loud
  speech passes unchanged, bit for bit), at most `MAX_GAIN_DB`, and never lifting the floor
  above `FLOOR_CEILING_DB`. Without speech for `HOLD_BLOCKS` the wanted gain returns to 0 dB.
* The gain moves towards the wanted one by at most `UP_DB` / `DOWN_DB` per block, linearly
  interpolated sample by sample; a block whose boosted peak would pass `PEAK_LIMIT_DB` pulls
  the next block's gain down at once, and samples are clipped to full scale.

Every decision falls on a block boundary counted from sample 0 and uses only earlier blocks,
so the output does not depend on how the audio was chunked (bit-identical) and adds no
latency. Cost: about 1-1.7 ms of CPU per second of audio in 40 ms pushes (0.4-0.5 ms in 1 s
pushes), against the gateway's 7 ms per second of a 30 fps stream.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE

# Off unless configured on (`--normalise_level`): it lifts speech at -40 dBFS peak from closure
# F1 0.21 to 0.69 (training/REPORT.md), but costs 0.66 ms of CPU per stream-second of 40 ms
# pushes, and a 4 MiB push holds the event loop 45-90 ms (its 13,000 blocks and 1,300
# decisions), which took the flood canaries of `make bench` from p99 30 ms to 89 ms.
ENABLED_BY_DEFAULT = False
BLOCK = MODEL_SAMPLE_RATE // 100  # 10 ms
# Blocks (3 s) of energies behind each decision: over 1.5 s the level of clean speech moved
# by 20 dB between decisions at the starts of sentences, over 3 s by 4 dB.
HISTORY = 300
DECIDE_EVERY = 25  # blocks (250 ms) between decisions: each costs about 40 us
SILENCE_DB = -100.0  # energy of digital silence (mean square, dB re. full scale)
DIGITAL_SILENCE_DB = -90.0  # below a 16-bit microphone's own noise: no room sounds this quiet
MIN_HEARD = 50  # blocks above digital silence before any decision (500 ms)
FLOOR_PERCENTILE, PEAK_PERCENTILE, LEVEL_PERCENTILE = 10.0, 95.0, 80.0
SMOOTH_BLOCKS = 3
# The gate, checked on 3 s windows every 100 ms while it was tuned: clean speech (-6 or -40
# dBFS peak) passes 94-98 % of them, speech with a fan at 10 dB SNR 41 % (the gain holds
# between them), and none of brown noise, a fan, a street, music or typing, alone or
# switched on in a quiet room (with a 12 dB range or 50 ms syllables, music and typing
# passed 3-7 %).
SPEECH_RANGE_DB = 15.0  # speech's loud parts stand this far above the floor
NUCLEUS_DB = 12.0  # a syllable's nucleus lies within this of the peak
SYLLABLE_BLOCKS = (6, 100)  # ... and lasts 60 ms to 1 s
MIN_SYLLABLES = 3
# The speech level the gain aims for: the held-out test voice at -6 dBFS peak (the level the
# model scores best at) measures -20 to -16 dB, so speech that loud is never touched.
TARGET_DB = -22.0
MAX_GAIN_DB = 30.0
FLOOR_CEILING_DB = -45.0  # a boosted noise floor stays below this
HOLD_BLOCKS = 500  # 5 s without speech before the gain returns to 0 dB
UP_DB, DOWN_DB = 0.3, 0.1  # per block: 30 dB/s up, 10 dB/s down
PEAK_LIMIT_DB = -3.0

_RAMP = np.arange(1, BLOCK + 1, dtype=np.float64) / BLOCK


def _quantile(ordered: npt.NDArray[np.float64], q: float) -> float:
    """The `q`-th percentile of sorted values (linear interpolation, as numpy's default)."""
    position = q / 100.0 * (ordered.size - 1)
    low = int(position)
    high = min(low + 1, ordered.size - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _boost(
    rows: npt.NDArray[np.float64],
    starts: npt.NDArray[np.float64],
    stops: npt.NDArray[np.float64],
    ramp: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """Rows of samples, each on its linear gain ramp; rows at unity gain pass untouched."""
    out = rows.astype(np.float32)
    boosted = (starts != 1.0) | (stops != 1.0)
    if boosted.any():
        first, last = starts[boosted, None], stops[boosted, None]
        out[boosted] = np.clip(rows[boosted] * (first + (last - first) * ramp), -1.0, 1.0)
    return out


_NONE = np.empty(0, np.float64)


def _run_lengths(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    lengths: npt.NDArray[np.intp] = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return lengths


class LevelNormaliser:
    """One stream's normaliser: `process` each chunk of 16 kHz float32 audio in order."""

    def __init__(self) -> None:
        self._block = np.zeros(BLOCK, np.float64)  # the current block's input so far
        self._filled = 0
        self._blocks = 0  # blocks completed
        self._powers = np.zeros(HISTORY, np.float64)  # mean squares, a ring by block number
        self._wanted_db = 0.0
        self._since_speech = HOLD_BLOCKS
        self.gain_db = 0.0  # gain at the end of the current block
        self._gain_from = self._gain_to = 1.0  # linear gain ramp over the current block

    def process(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The normalised chunk (same length); chunks must follow each other."""
        pending = self._filled
        # The pending block's start is played again (with the same ramp) and dropped below,
        # so every block is closed from one array, whichever chunks it came in.
        data = np.concatenate((self._block[:pending], samples))
        whole = data.size // BLOCK
        rows = data[: whole * BLOCK].reshape(whole, BLOCK)
        starts, stops = self._end_blocks(rows) if whole else (_NONE, _NONE)
        tail = data[whole * BLOCK :]
        self._block[: tail.size] = tail
        self._filled = tail.size
        if (
            self._gain_from == self._gain_to == 1.0
            and (starts == 1.0).all()
            and (stops == 1.0).all()
        ):
            return samples  # unity gain throughout (most input): nothing to compute
        out = np.empty(data.size, np.float32)
        if whole:
            out[: whole * BLOCK] = _boost(rows, starts, stops, _RAMP).ravel()
        gains = np.array([self._gain_from]), np.array([self._gain_to])
        out[whole * BLOCK :] = _boost(tail[None, :], *gains, _RAMP[: tail.size]).ravel()
        return out[pending:]

    def _end_blocks(
        self, rows: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Close complete blocks in order; the gain ramp (from, to) each was played with.

        The statistics of a block do not depend on the gain, and its gain only on the blocks
        before it, so they are computed for all rows at once.
        """
        powers = (np.add.reduce(rows * rows, axis=1) / BLOCK).tolist()
        peaks = np.max(np.abs(rows), axis=1).tolist()
        starts, stops = [], []
        for power, peak in zip(powers, peaks, strict=True):
            starts.append(self._gain_from)
            stops.append(self._gain_to)
            self._end_block(power, peak)
        return np.array(starts), np.array(stops)

    def _end_block(self, power: float, peak: float) -> None:
        self._powers[self._blocks % HISTORY] = power
        self._blocks += 1
        self._since_speech += 1
        if self._blocks % DECIDE_EVERY == 0:
            self._decide()
        if self._since_speech > HOLD_BLOCKS:
            self._wanted_db = 0.0
        gain = self.gain_db
        gain = (
            min(self._wanted_db, gain + UP_DB)
            if self._wanted_db > gain
            else max(self._wanted_db, gain - DOWN_DB)
        )
        if peak > 0.0:  # the limiter: a loud block pulls the next block's gain down at once
            gain = min(gain, PEAK_LIMIT_DB - 20.0 * math.log10(peak))
        self.gain_db = max(gain, 0.0)
        self._gain_from = self._gain_to
        self._gain_to = 10.0 ** (self.gain_db / 20.0) if self.gain_db > 0.0 else 1.0

    def _decide(self) -> None:
        if self._blocks < MIN_HEARD:
            return
        start = self._blocks % HISTORY  # the oldest block once the ring is full
        powers = (
            np.concatenate((self._powers[start:], self._powers[:start]))
            if self._blocks >= HISTORY
            else self._powers[: self._blocks]
        )
        smoothed = np.convolve(powers, np.full(SMOOTH_BLOCKS, 1.0 / SMOOTH_BLOCKS), "valid")
        # 10 log10 of the mean square, digital silence (and anything quieter) at SILENCE_DB.
        energies = np.maximum(10.0 * np.log10(np.maximum(smoothed, 1e-10)), SILENCE_DB)
        heard = np.sort(energies[energies > DIGITAL_SILENCE_DB])
        if heard.size < MIN_HEARD:
            return
        floor = _quantile(heard, FLOOR_PERCENTILE)
        peak = _quantile(heard, PEAK_PERCENTILE)
        if peak - floor < SPEECH_RANGE_DB:
            return
        runs = _run_lengths(energies >= peak - NUCLEUS_DB)
        shortest, longest = SYLLABLE_BLOCKS
        if np.count_nonzero((runs >= shortest) & (runs <= longest)) < MIN_SYLLABLES:
            return
        active = heard[np.searchsorted(heard, floor + SPEECH_RANGE_DB) :]  # sorted as well
        level = _quantile(active, LEVEL_PERCENTILE)
        ceiling = min(MAX_GAIN_DB, FLOOR_CEILING_DB - floor)
        self._wanted_db = float(np.clip(TARGET_DB - level, 0.0, max(ceiling, 0.0)))
        self._since_speech = 0
