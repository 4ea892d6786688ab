"""Noise mixed into training windows in the front end's band-power domain, new at every step.

The corpus adds stationary white/pink/brown/hum noise to the audio once per utterance, and
the evaluation's diagnosis showed what that leaves untaught: noise that fills a closure's dip
(most of all in the low bands, where an /m/'s murmur and a /b/'s voice bar are), and other
talkers or music that read as speech in the pauses. The band powers of independent sources
add (the cross term averages out), so mixing here costs a few tensor operations per batch
and every step hears noise it has not heard before:

* babble: one to six other training windows (other voices and sentences) summed;
* coloured noise: a random spectral tilt with a bump in the low bands, each band's power
  fluctuating frame to frame as filtered noise does;
* the same, coming and going in random bursts (traffic, typing, doors);
* notes: harmonic tones through the filterbank's own frequency response, one to three
  voices held for a random stretch each.

The target stays the talker's face. The evaluation's sources (``training/conditions.py``:
babble of voices no training voice uses, and its own fan, street, music and keyboard
generators) share nothing with these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.channels import SAMPLE_RATE
from training.model import LOG_FLOOR, N_BANDS, gabor_bank

KINDS = ("babble", "coloured", "bursts", "notes")
_GRID_HZ = 1.0  # frequency resolution of the filterbank response table


@dataclass(frozen=True)
class NoiseConfig:
    probability: float = 0.4  # of a window getting noise at all
    snr_db: tuple[float, float] = (0.0, 25.0)  # band-power SNR against the window's speech
    max_talkers: int = 6
    max_notes: int = 3  # consecutive notes in one window
    max_voices: int = 3  # simultaneous tones in a note
    harmonics: int = 12


def band_response() -> torch.Tensor:
    """[frequencies, bands]: each band's mean power for a unit sinusoid, 0 to 8 kHz by 1 Hz."""
    bank = gabor_bank()[:, 0]  # [2 * bands, kernel]
    n_fft = int(SAMPLE_RATE / _GRID_HZ)
    spectrum = np.abs(np.fft.rfft(bank, n_fft, axis=1)) ** 2  # [2 * bands, n_fft // 2 + 1]
    power = (spectrum[:N_BANDS] + spectrum[N_BANDS:]) / 2  # cosine and sine halves
    return torch.from_numpy(power.T.astype(np.float32))


class FeatureNoise:
    """Mixes random noise into batches of log band energies [B, bands, frames]."""

    def __init__(self, cfg: NoiseConfig, corpus_feats: torch.Tensor, starts: torch.Tensor):
        self.cfg = cfg
        self.feats = corpus_feats  # [all frames, bands]: babble is read from other windows
        self.starts = starts
        self.response = band_response()

    def __call__(self, feats: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, frames = feats.shape
        hit = torch.rand(b, generator=gen) < self.cfg.probability
        n = int(hit.sum())
        if n == 0:
            return feats
        speech = (feats[hit].exp() - LOG_FLOOR).clamp_min(0.0)
        kind = torch.randint(len(KINDS), (n,), generator=gen)
        noise = torch.empty_like(speech)
        for k, make in enumerate((self._babble, self._coloured, self._bursts, self._notes)):
            chosen = kind == k
            if chosen.any():
                noise[chosen] = make(int(chosen.sum()), frames, gen)
        noise = noise / noise.mean(dim=(1, 2), keepdim=True).clamp_min(1e-20)
        low, high = self.cfg.snr_db
        snr = low + (high - low) * torch.rand(n, 1, 1, generator=gen)
        gain = speech.mean(dim=(1, 2), keepdim=True) * 10 ** (-snr / 10)
        out = feats.clone()
        out[hit] = torch.log(speech + gain * noise + LOG_FLOOR)
        return out

    def _babble(self, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        talkers = torch.randint(1, self.cfg.max_talkers + 1, (n, 1), generator=gen)
        pick = self.starts[
            torch.randint(len(self.starts), (n, self.cfg.max_talkers), generator=gen)
        ]
        windows = pick[:, :, None] + torch.arange(frames)  # [n, talkers, frames]
        power = (self.feats[windows].exp() - LOG_FLOOR).clamp_min(
            0.0
        )  # [n, talkers, frames, bands]
        # each talker at its own level, within 10 dB
        level = 10 ** (-torch.rand(n, self.cfg.max_talkers, 1, 1, generator=gen))
        used = (torch.arange(self.cfg.max_talkers)[None] < talkers)[:, :, None, None]
        return (power * level * used).sum(1).transpose(1, 2)

    def _spectrum(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """[n, bands, 1]: a tilt of -30..+10 dB across the bands plus a 0-20 dB low bump."""
        band = torch.arange(N_BANDS, dtype=torch.float32)[None] / (N_BANDS - 1)
        tilt = -30 + 40 * torch.rand(n, 1, generator=gen)
        centre = 0.3 * torch.rand(n, 1, generator=gen)
        bump = 20 * torch.rand(n, 1, generator=gen) * torch.exp(-(((band - centre) / 0.12) ** 2))
        return (10 ** ((tilt * band + bump) / 10))[:, :, None]

    def _fluctuation(self, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        """Band power of filtered noise per frame: a gamma(2) draw around 1."""
        u = torch.rand(n, N_BANDS, frames, 2, generator=gen).clamp_min(1e-12)
        return -u.log().mean(-1)

    def _coloured(self, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        return self._spectrum(n, gen) * self._fluctuation(n, frames, gen)

    def _bursts(self, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        """Coloured noise under an envelope of random segments from -30 to 0 dB."""
        cuts = torch.rand(n, frames, generator=gen) < 0.15  # a new segment starts
        segment = cuts.cumsum(1)  # [n, frames]: the segment each frame is in
        levels = -30 * torch.rand(n, frames + 1, generator=gen)
        envelope = 10 ** (levels.gather(1, segment) / 10)
        return self._coloured(n, frames, gen) * envelope[:, None, :]

    def _notes(self, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        """Harmonic tones (110-880 Hz fundamentals, random timbre), a few notes per window."""
        cfg = self.cfg
        f0 = 110 * 2 ** (3 * torch.rand(n, cfg.max_notes, cfg.max_voices, 1, generator=gen))
        harmonic = torch.arange(1, cfg.harmonics + 1, dtype=torch.float32)
        decay = 0.5 + 1.5 * torch.rand(n, cfg.max_notes, cfg.max_voices, 1, generator=gen)
        voices = torch.randint(1, cfg.max_voices + 1, (n, cfg.max_notes, 1, 1), generator=gen)
        on = torch.arange(cfg.max_voices)[None, None, :, None] < voices
        amplitude = harmonic ** (-decay) * on  # [n, notes, voices, harmonics]
        freq = (f0 * harmonic / _GRID_HZ).long()
        audible = freq < len(self.response)
        rows = self.response[freq.clamp_max(len(self.response) - 1)]  # [..., harmonics, bands]
        power = ((amplitude * audible)[..., None] ** 2 * rows).sum(dim=(2, 3))  # [n, notes, bands]
        starts = torch.rand(n, cfg.max_notes, generator=gen).sort(1).values * frames
        starts[:, 0] = 0
        frame = torch.arange(frames, dtype=torch.float32)
        note = (frame[None, None] >= starts[:, :, None]).sum(1) - 1  # [n, frames]
        per_frame = power.gather(1, note[:, :, None].expand(-1, -1, N_BANDS))  # [n, frames, bands]
        return per_frame.transpose(1, 2) * self._fluctuation(n, frames, gen).pow(0.25)
