"""Corpus: synthesize sentences with many voices, augment, and turn them into training arrays.

Features are the network's own front end run once over each whole utterance: because the
front end is fixed and frames are 160 samples apart, the window starting at sample 160*m
sees exactly feature frames m..m+50, so training reads slices instead of re-running the
filterbank on every window. Its target is the face at the window's centre, sample
160*m + 4160.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training import augment
from training.channels import OFFSET, SAMPLE_RATE
from training.model import HOP, N_FRAMES, FrontEnd
from training.phones import Phone
from training.synth import (
    ESPEAK_VOICES,
    FESTIVAL_VOICES,
    FLITE_VOICES,
    Prosody,
    Utterance,
    Voice,
    festival_batch,
    synthesize,
)
from training.targets import frame_labels, frame_targets
from training.text import is_held_out, sentences

WORK = Path(__file__).resolve().parent / "work"
HELD_OUT_VOICE = Voice("flite", "rms")
TRAIN_VOICES: tuple[Voice, ...] = (
    *(Voice("flite", v) for v in FLITE_VOICES if v != HELD_OUT_VOICE.name),
    *(Voice("festival", v) for v in FESTIVAL_VOICES),
    *(Voice("espeak", v) for v in ESPEAK_VOICES),
)
CHUNK = 20  # sentences per worker job (festival start-up is paid once per job)


@dataclass(frozen=True)
class Item:
    voice: Voice
    text: str
    prosody: Prosody
    seed: int


@dataclass
class Sample:
    """One utterance as the network hears it, with its alignment (times in the audio)."""

    audio: np.ndarray
    phones: list[Phone]
    tag: str


def _render(items: list[Item]) -> list[Utterance]:
    voice = items[0].voice
    if voice.engine == "festival":
        return festival_batch(voice.name, [(it.text, it.prosody) for it in items])
    return [synthesize(it.voice, it.text, it.prosody) for it in items]


def pad_silence(utt: Utterance, rng: np.random.Generator) -> Sample:
    """Surround with silence long enough that every speech frame has a full window."""
    pre = OFFSET + int(rng.integers(0, SAMPLE_RATE // 2))
    post = OFFSET + int(rng.integers(0, SAMPLE_RATE // 2))
    audio = np.concatenate([np.zeros(pre, np.float32), utt.audio, np.zeros(post, np.float32)])
    shift = pre / SAMPLE_RATE
    return Sample(audio, [Phone(p.name, p.start + shift, p.end + shift) for p in utt.phones], "")


def augmented(utt: Utterance, rng: np.random.Generator) -> Sample:
    """A randomly degraded copy: every effect is applied with its own probability."""
    tags = []
    audio, phones = utt.audio, utt.phones
    if rng.random() < 0.3:
        audio, phones = augment.tempo_pitch(audio, phones, rng)
        tags.append("tempo")
    if rng.random() < 0.5:
        audio, phones = augment.speed(audio, phones, rng)
        tags.append("speed")
    s = pad_silence(Utterance(audio, phones), rng)
    audio = s.audio
    speech_rms = float(np.sqrt(np.mean(utt.audio**2)) + 1e-6)
    if rng.random() < 0.4:
        audio = np.convolve(audio, augment.room_response(rng))[: len(audio)].astype(np.float32)
        tags.append("reverb")
    if rng.random() < 0.5:
        audio = augment.equalise(audio, rng)
        tags.append("eq")
    if rng.random() < 0.25:
        audio = augment.degrade_codec(audio, rng)
        tags.append("codec")
    if rng.random() < 0.3:
        quiet = [(0, round(s.phones[0].start * SAMPLE_RATE))]
        quiet += [
            (round(p.start * SAMPLE_RATE), round(p.end * SAMPLE_RATE))
            for p in s.phones
            if p.name == "sil"
        ]
        quiet.append((round(s.phones[-1].end * SAMPLE_RATE), len(audio)))
        audio = augment.add_events(audio, quiet, speech_rms, rng)
        tags.append("events")
    if rng.random() < 0.7:
        audio = augment.add_noise(audio, speech_rms, rng)
        tags.append("noise")
    return Sample(augment.set_level(audio, rng), s.phones, "+".join(tags) or "level")


def _clean(utt: Utterance, rng: np.random.Generator) -> Sample:
    s = pad_silence(utt, rng)
    return Sample(augment.set_level(s.audio, rng), s.phones, "clean")


def worker(items: list[Item]) -> list[Sample]:
    """Render a job's sentences; each gives a clean and an augmented copy."""
    out = []
    for item, utt in zip(items, _render(items), strict=True):
        rng = np.random.default_rng(item.seed)
        out.append(_clean(utt, rng))
        out.append(augmented(utt, rng))
    return out


def non_speech(n: int, seed: int) -> list[Sample]:
    """Silence and noise-only recordings: the face must stay neutral on them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.uniform(1.0, 3.0) * SAMPLE_RATE)
        audio = augment.coloured_noise(length, rng) * 10 ** (rng.uniform(-70, -15) / 20)
        if rng.random() < 0.2:
            audio = np.zeros(length, np.float32)
        audio = augment.add_events(audio, [(0, length)], 0.1, rng)
        out.append(
            Sample(
                np.clip(audio, -1, 1).astype(np.float32),
                [Phone("sil", 0.0, length / SAMPLE_RATE)],
                "nonspeech",
            )
        )
    return out


def plan(per_voice: int, seed: int) -> list[list[Item]]:
    """Training jobs: ``per_voice`` random training sentences per natural voice (flite,
    festival), a third of that per espeak variant (ten formant-synth variants would
    otherwise outweigh the six natural voices), random prosody."""
    rnd = random.Random(seed)
    train_sents = [s for s in sentences() if not is_held_out(s)]
    jobs = []
    for v in TRAIN_VOICES:
        chosen = rnd.sample(train_sents, per_voice // 3 if v.engine == "espeak" else per_voice)
        items = [
            Item(v, s, Prosody(rnd.uniform(0.8, 1.3), rnd.uniform(0.8, 1.25)), rnd.randrange(2**31))
            for s in chosen
        ]
        jobs += [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    return jobs


def held_out_items(n: int, seed: int) -> list[Item]:
    """Evaluation: the held-out voice reading held-out sentences at its natural prosody."""
    rnd = random.Random(seed)
    test_sents = [s for s in sentences() if is_held_out(s)]
    return [
        Item(HELD_OUT_VOICE, s, Prosody(), rnd.randrange(2**31)) for s in rnd.sample(test_sents, n)
    ]


def render_held_out(n: int, seed: int) -> list[Sample]:
    """Clean held-out utterances, silence-padded (the evaluation adds its own degradations)."""
    items = held_out_items(n, seed)
    out = []
    for item, utt in zip(items, _render(items), strict=True):
        s = pad_silence(utt, np.random.default_rng(item.seed))
        out.append(Sample(s.audio * 0.5 / (np.max(np.abs(s.audio)) + 1e-9), s.phones, "held-out"))
    return out


def synthesize_corpus(
    per_voice: int, n_non_speech: int, seed: int, processes: int = 2
) -> list[Sample]:
    jobs = plan(per_voice, seed)
    with mp.get_context("fork").Pool(processes) as pool:
        samples = [s for chunk in pool.imap(worker, jobs) for s in chunk]
    return samples + non_speech(n_non_speech, seed + 1)


@dataclass
class Arrays:
    """Flat training arrays; window i reads ``feats[starts[i] : starts[i] + 51]``."""

    feats: np.ndarray  # [frames, 40] float32
    blend: np.ndarray  # [frames, 52] target at the centre of the window starting there
    vis: np.ndarray  # [frames, 15] soft viseme targets
    labels: np.ndarray  # [frames] hard viseme index
    starts: np.ndarray  # [windows] valid window starts (window fits in its utterance)


def to_arrays(samples: list[Sample]) -> Arrays:
    front = FrontEnd().eval()
    feats, blend, vis, labels, starts = [], [], [], [], []
    offset = 0
    with torch.no_grad():
        for s in samples:
            f = front(torch.from_numpy(s.audio)[None])[0].T.numpy()  # [frames, 40]
            n = len(f)
            times = (np.arange(n) * HOP + OFFSET) / SAMPLE_RATE
            b, v = frame_targets(s.phones, times)
            feats.append(f)
            blend.append(b)
            vis.append(v)
            labels.append(frame_labels(s.phones, times))
            starts.append(offset + np.arange(max(0, n - N_FRAMES + 1)))
            offset += n
    return Arrays(
        np.concatenate(feats), np.concatenate(blend), np.concatenate(vis),
        np.concatenate(labels), np.concatenate(starts),
    )  # fmt: skip
