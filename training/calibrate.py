"""Where the lips read as closed: one offset on mouthClose's logit, chosen on validation audio.

The loss weighs mouthClose's "closed" term up (`TrainConfig.closure_pos_weight`), so the lips
close a little early where m/n or p/t is uncertain; how much that moves the 0.5 crossing
depends on the rest of the recipe (noise mixed into training makes the network hedge more on
closures). Rather than retune the weight per recipe, training ends with this step: the
trained network reads a validation set, and the offset (added to mouthClose's output bias)
that maximises the mean of frame-exact and event closure F1 there is baked into the network
before export. The validation set is held-out sentences read by the training voices, clean
and through the training's own augmentation: the test voice is never heard here.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from dataclasses import dataclass

import numpy as np
import torch

from training import corpus
from training.channels import ARKIT_BLENDSHAPES, OFFSET, SAMPLE_RATE, VISEMES, WINDOW
from training.closures import ClosureEvents, bilabial_spans
from training.closures import score as closure_events
from training.evaluate import centres_of, speech_seconds
from training.model import A2FNet
from training.phones import BILABIALS
from training.synth import Prosody
from training.targets import frame_labels
from training.text import is_held_out, sentences

SENTENCES_PER_VOICE = 6
OFFSETS = tuple(round(x, 2) for x in np.arange(-2.0, 1.0001, 0.1))
_CLOSE = ARKIT_BLENDSHAPES.index("mouthClose")
_PP = VISEMES.index("PP")


@dataclass(frozen=True)
class Calibration:
    offset: float
    utterances: int
    frame_f1: float  # at the chosen offset
    event_f1: float
    frame_f1_uncalibrated: float
    event_f1_uncalibrated: float


@dataclass(frozen=True)
class _Scored:
    logits: np.ndarray  # mouthClose logit per evaluated frame
    times: np.ndarray
    closed_true: np.ndarray
    spans: list[tuple[float, float]]
    speech_s: float


def validation_set(seed: int) -> list[corpus.Sample]:
    """Held-out sentences read by every training voice, each clean and augmented."""
    rnd = random.Random(seed)
    held_out = [s for s in sentences() if is_held_out(s)]
    jobs = []
    for voice in corpus.TRAIN_VOICES:
        jobs.append(
            [
                corpus.Item(voice, text, Prosody(), rnd.randrange(2**31))
                for text in rnd.sample(held_out, SENTENCES_PER_VOICE)
            ]
        )
    with mp.get_context("fork").Pool(2) as pool:
        return [s for chunk in pool.imap(corpus.worker, jobs) for s in chunk]


def _score(net: A2FNet, sample: corpus.Sample) -> _Scored:
    centres = centres_of(sample.audio)  # every second 10 ms frame, as the evaluation
    windows = torch.from_numpy(sample.audio[centres[:, None] - OFFSET + np.arange(WINDOW)])
    with torch.no_grad():
        blend, _ = net.trunk(net.front(windows))
    times = centres / SAMPLE_RATE
    return _Scored(
        blend[:, _CLOSE].numpy(),
        times,
        frame_labels(sample.phones, times) == _PP,
        bilabial_spans(sample.phones, BILABIALS),
        speech_seconds(sample.phones),
    )


def _f1s(scored: list[_Scored], offset: float) -> tuple[float, float]:
    """Frame-exact and event closure F1 with `offset` added to the logits."""
    tp = predicted = positive = 0
    events = ClosureEvents()
    for s in scored:
        closed = s.logits + offset >= 0.0  # sigmoid >= 0.5
        tp += int(np.sum(closed & s.closed_true))
        predicted += int(closed.sum())
        positive += int(s.closed_true.sum())
        events += closure_events(closed, s.times, s.spans, s.speech_s)
    precision, recall = tp / max(1, predicted), tp / max(1, positive)
    return 2 * precision * recall / max(1e-9, precision + recall), events.f1


def calibrate(net: A2FNet, seed: int) -> Calibration:
    """Choose the offset on the validation set and add it to mouthClose's output bias."""
    net.eval()
    samples = [s for s in validation_set(seed) if any(p.name != "sil" for p in s.phones)]
    scored = [_score(net, s) for s in samples]
    results = {offset: _f1s(scored, offset) for offset in OFFSETS}
    best = max(OFFSETS, key=lambda offset: sum(results[offset]))
    with torch.no_grad():
        net.trunk.blend.bias[_CLOSE] += best
    return Calibration(best, len(samples), *results[best], *results[0.0])
