"""A gated input level normaliser: quiet speech is lifted towards the level the model was
trained on; silence, steady noise and clicks are left as they are.

Why: the network reads log band energies above a fixed floor about 70 dB below full scale,
so speech 34 dB quieter than usual loses its lip closures (the quietest bands of a closure
sink into that floor) while the jaw still follows. Boosting every quiet input would make
noise move the mouth, so the gain rises only while the recent input looks like speech.

How, per 10 ms block of 16 kHz audio (the model's rate, after any resampling):

* Every `DECIDE_EVERY` blocks, over the last `HISTORY` blocks' energies, each averaged with
  its neighbours over `SMOOTH_BLOCKS` (10 ms energies of brown noise or a rumble rise and
  fall like syllables; over 30 ms they do not), and digital silence left out: it says nothing about the room, and a sound starting after it would look like a
  syllable rising from nothing): the 10th percentile is the noise floor, the 95th the peak.
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
latency.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE

# On unless configured off: at a normal level it changes nothing (training/REPORT.md measures
# the model with and without it).
ENABLED_BY_DEFAULT = True
BLOCK = MODEL_SAMPLE_RATE // 100  # 10 ms
# Blocks (3 s) of energies behind each decision: over 1.5 s the level of clean speech moved
# by 20 dB between decisions at the starts of sentences, over 3 s by 4 dB.
HISTORY = 300
DECIDE_EVERY = 10  # blocks (100 ms) between decisions
SILENCE_DB = -100.0  # energy of digital silence (mean square, dB re. full scale)
DIGITAL_SILENCE_DB = -90.0  # below a 16-bit microphone's own noise: no room sounds this quiet
MIN_HEARD = 50  # blocks above digital silence before any decision (500 ms)
FLOOR_PERCENTILE, PEAK_PERCENTILE, LEVEL_PERCENTILE = 10.0, 95.0, 80.0
SMOOTH_BLOCKS = 3
# The gate, checked on 3 s windows every 100 ms: clean speech (-6 or -40 dBFS peak) passes
# 94-98 % of them, speech with a fan at 10 dB SNR 41 % (the gain holds between them), and
# none of brown noise, a fan, a street, music or typing, alone or switched on in a quiet
# room (with a 12 dB range or 50 ms syllables, music and typing passed 3-7 %).
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


def _db(power: float) -> float:
    return max(10.0 * math.log10(power), SILENCE_DB) if power > 0.0 else SILENCE_DB


def _run_lengths(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    lengths: npt.NDArray[np.intp] = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return lengths


class LevelNormaliser:
    """One stream's normaliser: `process` each chunk of 16 kHz float32 audio in order."""

    def __init__(self) -> None:
        self._block = np.zeros(BLOCK, np.float32)  # the current block's input so far
        self._filled = 0
        self._blocks = 0  # blocks completed
        self._powers: deque[float] = deque(maxlen=HISTORY)  # mean squares of the last blocks
        self._wanted_db = 0.0
        self._since_speech = HOLD_BLOCKS
        self.gain_db = 0.0  # gain at the end of the current block
        self._gain_from = self._gain_to = 1.0  # linear gain ramp over the current block

    def process(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The normalised chunk (same length); chunks must follow each other."""
        out = np.empty(samples.size, np.float32)
        done = 0
        while done < samples.size:
            n = min(BLOCK - self._filled, samples.size - done)
            part = samples[done : done + n]
            self._block[self._filled : self._filled + n] = part
            if self._gain_from == self._gain_to == 1.0:
                out[done : done + n] = part
            else:
                ramp = _RAMP[self._filled : self._filled + n]
                gain = self._gain_from + (self._gain_to - self._gain_from) * ramp
                out[done : done + n] = np.clip(part * gain, -1.0, 1.0)
            self._filled += n
            done += n
            if self._filled == BLOCK:
                self._end_block()
        return out

    def _end_block(self) -> None:
        block = self._block
        self._powers.append(float(np.mean(np.square(block, dtype=np.float64))))
        self._filled = 0
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
        peak = float(np.max(np.abs(block)))
        if peak > 0.0:  # the limiter: a loud block pulls the next block's gain down at once
            gain = min(gain, PEAK_LIMIT_DB - 20.0 * math.log10(peak))
        self.gain_db = max(gain, 0.0)
        self._gain_from = self._gain_to
        self._gain_to = 10.0 ** (self.gain_db / 20.0) if self.gain_db > 0.0 else 1.0

    def _decide(self) -> None:
        if len(self._powers) < SMOOTH_BLOCKS:
            return
        powers = np.fromiter(self._powers, np.float64, len(self._powers))
        smoothed = np.convolve(powers, np.full(SMOOTH_BLOCKS, 1.0 / SMOOTH_BLOCKS), "valid")
        energies = np.array([_db(p) for p in smoothed.tolist()])
        heard = energies[energies > DIGITAL_SILENCE_DB]
        if heard.size < MIN_HEARD:
            return
        floor, peak = np.percentile(heard, (FLOOR_PERCENTILE, PEAK_PERCENTILE))
        if peak - floor < SPEECH_RANGE_DB:
            return
        runs = _run_lengths(energies >= peak - NUCLEUS_DB)
        shortest, longest = SYLLABLE_BLOCKS
        if np.count_nonzero((runs >= shortest) & (runs <= longest)) < MIN_SYLLABLES:
            return
        level = float(np.percentile(heard[heard >= floor + SPEECH_RANGE_DB], LEVEL_PERCENTILE))
        ceiling = min(MAX_GAIN_DB, FLOOR_CEILING_DB - float(floor))
        self._wanted_db = float(np.clip(TARGET_DB - level, 0.0, max(ceiling, 0.0)))
        self._since_speech = 0
