"""``make eval-model``: evaluate the committed ONNX against the baselines; write the report.

Held-out voice (never trained on) reading held-out sentences: clean, in the legacy noisy
condition (room + synthetic noise at 10 dB SNR), with noise sources the training never hears
(``training/conditions.py``: babble, fan, street, music, keyboard) at 20/10/5 dB SNR, in two
fixed rooms, through a telephone channel and from 8 kHz; the clean set at four levels with and
without the service's input level normaliser (``gateway.session.level``); silence and
non-speech inputs. Closures are scored frame by frame (F1, AP) and as events
(``training/closures.py``). The machine's own recordings of human speech
(``/usr/share/sounds/alsa``, 48 kHz, resampled with soxr) are plotted over the waveform.
Writes ``training/REPORT.md``, ``training/report/*.png`` and the ``evaluation`` key of the
manifest.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr
import torch

from gateway.session.level import LevelNormaliser
from training import augment, conditions, corpus, reporting
from training.baselines import Loudness, MfccTemplates, log_energy, mfcc
from training.channels import ARKIT_BLENDSHAPES, OFFSET, SAMPLE_RATE, VISEMES, WINDOW
from training.closures import TOLERANCE_S, ClosureEvents, bilabial_spans, closure_runs
from training.closures import score as closure_events
from training.export import (
    BASELINE_MANIFEST_PATH,
    MANIFEST_PATH,
    ONNX_PATH,
    recipe_sha256,
    write_manifest,
)
from training.model import HOP, LOG_FLOOR, FrontEnd
from training.phones import BILABIALS
from training.targets import frame_labels, frame_targets

HERE = Path(__file__).resolve().parent
PLOTS = HERE / "report"
ALSA = Path("/usr/share/sounds/alsa")
EVAL_SEED = 4321
N_HELD_OUT = 80
STRIDE = 2  # evaluate every second 10 ms frame (50 fps)
CLOSURE_THRESHOLD = 0.5  # mouthClose at or above this = lips closed
# The network is measured as `--normalise_level` serves it (the level sweep and the non-speech
# set show it without the normaliser too, the service's default).
NORMALISE = True
_IDX = {n: i for i, n in enumerate(ARKIT_BLENDSHAPES)}
_SIL, _PP = VISEMES.index("sil"), VISEMES.index("PP")
_MOUTH = [i for n, i in _IDX.items() if n.startswith(("mouth", "jaw"))]

System = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def centres_of(audio: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Centre samples of the full windows inside the recording (window start = centre - 4160)."""
    n = (len(audio) - WINDOW) // HOP + 1
    return np.arange(0, max(n, 0), stride) * HOP + OFFSET


class Network:
    def __init__(self, path: Path = ONNX_PATH) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, audio: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = centres[:, None] - OFFSET + np.arange(WINDOW)
        windows = audio[idx].astype(np.float32)
        outs = [
            self.sess.run(None, {"AUDIO": windows[i : i + 512]})
            for i in range(0, len(windows), 512)
        ]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def _cached(name: str, build: Callable[[], object]) -> object:
    """Evaluation audio cached in training/work/, keyed by the recipe so it is never stale."""
    path = corpus.WORK / f"{name}-{recipe_sha256()[:12]}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = build()
    corpus.WORK.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))
    return value


def fit_baselines() -> tuple[Loudness, MfccTemplates]:
    """Fit both baselines on clean training-voice speech (sentences disjoint from the test)."""
    samples = _cached("baseline_fit", lambda: corpus.synthesize_corpus(8, 20, EVAL_SEED))
    energy, feats, blend, labels = [], [], [], []
    for s in samples:
        if s.tag not in ("clean", "nonspeech"):
            continue
        c = centres_of(s.audio)
        b, _ = frame_targets(s.phones, c / SAMPLE_RATE)
        energy.append(log_energy(s.audio, c))
        feats.append(mfcc(s.audio, c))
        blend.append(b)
        labels.append(frame_labels(s.phones, c / SAMPLE_RATE))
    e, f, b, lab = (np.concatenate(x) for x in (energy, feats, blend, labels))
    return Loudness.fit(e, b[:, _IDX["jawOpen"]], lab), MfccTemplates.fit(f, b, lab)


# How a condition alters the i-th held-out recording: (audio, i) -> audio.
Alteration = Callable[[np.ndarray, int], np.ndarray]
# What a noisy condition adds to the i-th recording (kept apart for the diagnosis).
NoiseOf = Callable[[np.ndarray, int], np.ndarray]


def legacy_noise(audio: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The "noisy" condition of every earlier report: a random room, then white/pink/brown/hum
    noise at 10 dB SNR (room and noise kinds are the training's own)."""
    rng = np.random.default_rng(EVAL_SEED + i)
    wet = np.convolve(audio, augment.room_response(rng))[: len(audio)]
    noise = augment.coloured_noise(len(audio), rng) * conditions.speech_rms(audio) * 10 ** (-1 / 2)
    return wet.astype(np.float32), noise.astype(np.float32)


def source_noise(source: np.ndarray, snr_db: float) -> NoiseOf:
    def noise(audio: np.ndarray, i: int) -> np.ndarray:
        stretch = conditions.stretch_of(source, audio.size, np.random.default_rng(EVAL_SEED + i))
        return stretch * np.float32(conditions.speech_rms(audio) * 10 ** (-snr_db / 20))

    return noise


def noise_sources() -> dict[str, np.ndarray]:
    """Each held-out noise source, synthesised once (babble with the TTS is cached)."""
    return {
        name: np.asarray(
            _cached(f"noise_{name}", lambda make=make, k=k: make(EVAL_SEED + 100 * k))
            if name == "babble"
            else make(EVAL_SEED + 100 * k)
        )
        for k, (name, make) in enumerate(conditions.NOISE_SOURCES.items())
    }


def speech_conditions(
    sources: dict[str, np.ndarray],
) -> tuple[dict[str, Alteration], dict[str, NoiseOf]]:
    """Condition name -> alteration, and for the noisy ones: the noise they add."""
    alter: dict[str, Alteration] = {
        "clean": lambda audio, _i: audio,
        "noisy (room + noise, 10 dB SNR)": lambda audio, i: sum(legacy_noise(audio, i)),
    }
    noises: dict[str, NoiseOf] = {
        "noisy (room + noise, 10 dB SNR)": lambda a, i: legacy_noise(a, i)[1]
    }
    for name, source in sources.items():
        for snr in conditions.NOISE_SNRS_DB:
            key = f"{name}, {snr} dB SNR"
            noises[key] = source_noise(source, snr)
            alter[key] = lambda audio, i, noise=noises[key]: audio + noise(audio, i)
    for name, (rt60, tail) in conditions.ROOMS.items():
        alter[name] = lambda audio, i, rt60=rt60, tail=tail: conditions.reverberant(
            audio, rt60, tail, EVAL_SEED + i
        )
    alter["telephone (300-3400 Hz, 8 kHz mu-law)"] = lambda audio, _i: conditions.telephone(audio)
    alter["8 kHz input, resampled"] = lambda audio, _i: conditions.from_8khz(audio)
    return alter, noises


# Gains applied to the clean test set (peak -6 dBFS): -6, -16, -26 and -40 dBFS peak, as from
# a distant or low-gain microphone.
LEVEL_GAINS_DB = (0, -10, -20, -34)


def at_gain(gain_db: float) -> Alteration:
    return lambda audio, _i: audio * np.float32(10 ** (gain_db / 20))


def session_audio(samples: list, alter: Alteration, normalise: bool) -> Iterator[np.ndarray]:
    """Each recording as the condition alters it; with ``normalise``, through one level
    normaliser, as one session of the service hears these sentences one after another."""
    level = LevelNormaliser() if normalise else None
    for i, s in enumerate(samples):
        audio = np.asarray(alter(s.audio, i), np.float32)
        yield audio if level is None else level.process(audio)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0  # a constant output carries no information about the target
    return float(np.corrcoef(a, b)[0, 1])


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve of ``score`` ranking the ``positive`` frames.

    F1 depends on where the 0.5 threshold falls in a model's calibration; this does not, so
    it is the fairer figure for comparing two networks' closure detection.
    """
    if not positive.any():
        return 0.0
    hits = positive[np.argsort(-score, kind="stable")]
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def speech_seconds(phones: list) -> float:
    spoken = [p for p in phones if p.name != "sil"]
    return spoken[-1].end - spoken[0].start if spoken else 0.0


def speech_metrics(
    system: System, samples: list, alter: Alteration, normalise: bool = False
) -> dict[str, float]:
    pb, pv, tb, tl = [], [], [], []
    events = ClosureEvents()
    for s, audio in zip(samples, session_audio(samples, alter, normalise), strict=True):
        c = centres_of(audio)
        b, v = system(audio, c)
        pb.append(b)
        pv.append(v)
        tb.append(frame_targets(s.phones, c / SAMPLE_RATE)[0])
        tl.append(frame_labels(s.phones, c / SAMPLE_RATE))
        events += closure_events(
            b[:, _IDX["mouthClose"]] >= CLOSURE_THRESHOLD,
            c / SAMPLE_RATE,
            bilabial_spans(s.phones, BILABIALS),
            speech_seconds(s.phones),
        )
    pb, pv, tb, tl = (np.concatenate(x) for x in (pb, pv, tb, tl))
    closed_pred = pb[:, _IDX["mouthClose"]] >= CLOSURE_THRESHOLD
    closed_true = tl == _PP
    tp = np.sum(closed_pred & closed_true)
    precision = tp / max(1, np.sum(closed_pred))
    recall = tp / max(1, np.sum(closed_true))
    active = [k for k in range(len(ARKIT_BLENDSHAPES)) if tb[:, k].std() > 0.01]
    return {
        "jawOpen_pearson": _pearson(pb[:, _IDX["jawOpen"]], tb[:, _IDX["jawOpen"]]),
        "bilabial_f1": float(2 * precision * recall / max(1e-9, precision + recall)),
        "bilabial_precision": float(precision),
        "bilabial_recall": float(recall),
        "bilabial_ap": average_precision(pb[:, _IDX["mouthClose"]], closed_true),
        "closure_event_recall": events.recall,
        "false_closures_per_min": events.false_per_minute,
        "closure_event_f1": events.f1,
        "viseme_accuracy": float(np.mean(pv.argmax(1) == tl)),
        "mean_channel_pearson": float(np.mean([_pearson(pb[:, k], tb[:, k]) for k in active])),
        "blendshape_mae": float(np.mean(np.abs(pb[:, active] - tb[:, active]))),
        "frames": len(tl),
    }


def false_closure_phones(system: System, samples: list) -> dict[str, int]:
    """Which aligned phone lies under the middle of each false closure (clean speech)."""
    found: dict[str, int] = {}
    for s in samples:
        c = centres_of(s.audio)
        times = c / SAMPLE_RATE
        closed = system(s.audio, c)[0][:, _IDX["mouthClose"]] >= CLOSURE_THRESHOLD
        near = np.zeros(len(c), bool)
        for start, end in bilabial_spans(s.phones, BILABIALS):
            near |= (times >= start - TOLERANCE_S) & (times <= end + TOLERANCE_S)
        for first, last in closure_runs(closed):
            if near[first : last + 1].any():
                continue
            middle = times[(first + last) // 2]
            name = next((p.name for p in s.phones if p.start <= middle < p.end), "sil")
            found[name] = found.get(name, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def channel_pearsons(system: System, samples: list, normalise: bool) -> dict[str, float]:
    pb, tb = [], []
    for s, audio in zip(samples, session_audio(samples, lambda a, _i: a, normalise), strict=True):
        c = centres_of(audio)
        pb.append(system(audio, c)[0])
        tb.append(frame_targets(s.phones, c / SAMPLE_RATE)[0])
    pb, tb = np.concatenate(pb), np.concatenate(tb)
    return {n: _pearson(pb[:, k], tb[:, k]) for n, k in _IDX.items() if tb[:, k].std() > 0.01}


def level_sweep(system: System, samples: list, normalise: bool) -> dict[str, dict[str, float]]:
    """The clean test set played at lower levels (peak dBFS -> metrics)."""
    peak_db = 20 * np.log10(max(float(np.abs(s.audio).max()) for s in samples))
    return {
        f"{peak_db + gain:.0f}": speech_metrics(system, samples, at_gain(gain), normalise)
        for gain in LEVEL_GAINS_DB
    }


NON_SPEECH_SECONDS = 10
SOURCE_LEVELS_DBFS = (-30, -50)  # RMS: a source in the room, and one far away


def non_speech_inputs(sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(EVAL_SEED)
    n = 3 * SAMPLE_RATE
    out = {"digital silence": np.zeros(n, np.float32)}
    out["noise floor (-70 dBFS)"] = (rng.standard_normal(n) * 10 ** (-70 / 20)).astype(np.float32)
    for k, kind in enumerate(augment.NOISE_KINDS):
        out[f"{kind} noise (-30 dBFS)"] = augment.coloured_noise(n, rng, k) * 10 ** (-30 / 20)
    if (ALSA / "Noise.wav").exists():
        out["ALSA Noise.wav"] = _load_alsa(ALSA / "Noise.wav")
    for name, source in sources.items():
        stretch = conditions.stretch_of(source, NON_SPEECH_SECONDS * SAMPLE_RATE, rng)
        for level in SOURCE_LEVELS_DBFS:
            out[f"{name} ({level} dBFS)"] = stretch * np.float32(10 ** (level / 20))
    return out


def non_speech_metrics(
    system: System, inputs: dict[str, np.ndarray], normalise: bool = False
) -> dict[str, dict[str, float]]:
    """How far from neutral the face moves with no speech (lower is better), per input and
    over all of them (``"all"``); each input is a session of its own."""
    per: dict[str, dict[str, float]] = {}
    acts, closed, sil, mouth, events = [], [], [], [], ClosureEvents()
    for name, audio in inputs.items():
        padded = np.pad(audio, (OFFSET, OFFSET))
        if normalise:
            padded = LevelNormaliser().process(padded)
        c = centres_of(padded)
        b, v = system(padded, c)
        shut = b[:, _IDX["mouthClose"]] >= CLOSURE_THRESHOLD
        ev = closure_events(shut, c / SAMPLE_RATE, [], len(audio) / SAMPLE_RATE)
        acts.append(b.max(axis=1))
        closed.append(shut)
        sil.append(v.argmax(1) == _SIL)
        mouth.append(b[:, _MOUTH].max(axis=1))
        events += ev
        per[name] = {
            "mouth_p95": float(np.percentile(mouth[-1], 95)),
            "false_closures_per_min": ev.false_per_minute,
            "sil_rate": float(np.mean(sil[-1])),
        }
    per["all"] = {
        "nonspeech_max_weight_mean": float(np.mean(np.concatenate(acts))),
        "nonspeech_jaw_or_lip_false_closure_rate": float(np.mean(np.concatenate(closed))),
        "nonspeech_false_closures_per_min": events.false_per_minute,
        "nonspeech_mouth_p95": float(np.percentile(np.concatenate(mouth), 95)),
        "nonspeech_sil_rate": float(np.mean(np.concatenate(sil))),
        "silence_max_weight": float(np.max(np.concatenate(acts[:2]))),
    }
    return per


# -- what the network's front end sees ---------------------------------------------------------

_FRONT = FrontEnd().eval()
FLOOR_DB = 10 * np.log10(LOG_FLOOR)  # the front end's floor: -70 dB


def band_db(audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[frames, 40] band energies (dB) of the front-end frame at each window's centre."""
    with torch.no_grad():
        feats = _FRONT(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0]
    return (10 / np.log(10)) * feats.numpy().T[(centres - HOP) // HOP]


def closure_dip(bands: np.ndarray, closures: np.ndarray, reach: int = 3) -> np.ndarray:
    """How far each closure frame's broadband energy sits below the loudest frame within
    ``reach`` frames (60 ms) of it: the dip the network reads a closure from."""
    broadband = 10 * np.log10(np.sum(10 ** (bands / 10), axis=1))
    padded = np.pad(broadband, reach, mode="edge")
    around = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    return (around - broadband)[closures]


def _frames_of(samples: list, label: int) -> list[np.ndarray]:
    return [frame_labels(s.phones, centres_of(s.audio) / SAMPLE_RATE) == label for s in samples]


def level_view(samples: list, gain_db: float, normalise: bool) -> dict[str, float]:
    """Closure frames against the front end's floor at one input level."""
    closures = _frames_of(samples, _PP)
    loudest, buried, other, dips = [], [], [], []
    for s, audio, pp in zip(
        samples, session_audio(samples, at_gain(gain_db), normalise), closures, strict=True
    ):
        bands = band_db(audio, centres_of(audio))
        speech = frame_labels(s.phones, centres_of(audio) / SAMPLE_RATE) != _SIL
        loudest.append(bands[pp].max(axis=1))
        other.append(bands[speech & ~pp].max(axis=1))
        buried.append((bands[pp] < FLOOR_DB + 6).all(axis=1))
        dips.append(closure_dip(bands, pp))
    return {
        "closure_loudest_band_db": float(np.median(np.concatenate(loudest))),
        "speech_loudest_band_db": float(np.median(np.concatenate(other))),
        "closures_at_floor": float(np.mean(np.concatenate(buried))),
        "closure_dip_db": float(np.median(np.concatenate(dips))),
    }


def noise_view(samples: list, alter: Alteration, noise: NoiseOf) -> dict[str, float]:
    """Per closure frame: does any band stand 3 dB above the noise alone (same stretch)?"""
    closures = _frames_of(samples, _PP)
    vowels = _frames_of(samples, VISEMES.index("aa"))
    hidden: dict[str, list[np.ndarray]] = {"closures": [], "vowels": []}
    dips: dict[str, list[np.ndarray]] = {"clean": [], "noisy": []}
    for i, (s, pp, aa) in enumerate(zip(samples, closures, vowels, strict=True)):
        c = centres_of(s.audio)
        noisy = band_db(alter(s.audio, i), c)
        contrast = (noisy - band_db(noise(s.audio, i), c)).max(axis=1)
        hidden["closures"].append(contrast[pp] < 3)
        hidden["vowels"].append(contrast[aa] < 3)
        dips["clean"].append(closure_dip(band_db(s.audio, c), pp))
        dips["noisy"].append(closure_dip(noisy, pp))
    return {f"{k}_hidden": float(np.mean(np.concatenate(v))) for k, v in hidden.items()} | {
        f"closure_dip_{k}_db": float(np.median(np.concatenate(v))) for k, v in dips.items()
    }


def _load_alsa(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


PLOT_CHANNELS = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthRollLower",
    "mouthStretchLeft",
)


def plot_recording(
    net: Network, audio: np.ndarray, title: str, path: Path, phones: list | None = None
) -> None:
    padded = np.pad(audio, (OFFSET, OFFSET))
    c = centres_of(padded, stride=1)
    b, v = net(padded, c)
    t = (c - OFFSET) / SAMPLE_RATE
    fig, axes = plt.subplots(
        3, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [1, 2, 1]}
    )
    axes[0].plot(np.arange(len(audio)) / SAMPLE_RATE, audio, lw=0.4, color="0.3")
    axes[0].set_title(title)
    axes[0].set_ylabel("waveform")
    for name in PLOT_CHANNELS:
        axes[1].plot(t, b[:, _IDX[name]], label=name)
    if phones is not None:
        tb, _ = frame_targets(phones, t)
        axes[1].plot(t, tb[:, _IDX["jawOpen"]], "--", color="C0", lw=0.8, label="jawOpen target")
        axes[1].plot(
            t, tb[:, _IDX["mouthClose"]], "--", color="C1", lw=0.8, label="mouthClose target"
        )
        for p in phones:
            if p.name in ("p", "b", "m"):
                axes[1].axvspan(p.start, p.end, color="C1", alpha=0.12)
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("blendshape")
    axes[1].legend(loc="upper right", fontsize=7, ncol=2)
    axes[2].imshow(
        v.T,
        aspect="auto",
        origin="lower",
        extent=(t[0], t[-1], -0.5, len(VISEMES) - 0.5),
        cmap="magma",
    )
    axes[2].set_yticks(range(len(VISEMES)), VISEMES, fontsize=6)
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    del argv  # no options: the evaluation is fixed so reports are comparable
    t0 = time.time()
    net = Network()
    loud, templ = fit_baselines()
    samples = _cached("held_out", lambda: corpus.render_held_out(N_HELD_OUT, EVAL_SEED))
    sources = noise_sources()
    alterations, noises = speech_conditions(sources)
    systems: dict[str, System] = {"network": net, "loudness→jawOpen": loud, "MFCC templates": templ}
    inputs = non_speech_inputs(sources)
    results: dict[str, dict] = {}
    for name, system in systems.items():
        # The network hears what the service's session core gives it.
        normalise = NORMALISE and system is net
        results[name] = {
            cond: speech_metrics(system, samples, alter, normalise)
            for cond, alter in alterations.items()
        }
        results[name]["nonspeech"] = non_speech_metrics(system, inputs, normalise)["all"]
        print(name, f"{time.time() - t0:.0f} s", json.dumps(results[name]["clean"]), flush=True)
    levels = {flag: level_sweep(net, samples, flag) for flag in (False, True)}
    non_speech = {flag: non_speech_metrics(net, inputs, flag) for flag in (False, True)}
    print("levels", f"{time.time() - t0:.0f} s", json.dumps(levels), flush=True)
    diagnosis = {
        "levels": {
            flag: {f"{g}": level_view(samples, g, flag) for g in LEVEL_GAINS_DB}
            for flag in (False, True)
        },
        "noise": {k: noise_view(samples, alterations[k], n) for k, n in noises.items()},
        "false_closure_phones": false_closure_phones(net, samples),
    }
    channels = channel_pearsons(net, samples, NORMALISE)
    PLOTS.mkdir(exist_ok=True)
    ex = samples[0]
    plot_recording(net, ex.audio[OFFSET:-OFFSET], f"held-out voice: {corpus.HELD_OUT_VOICE.key}", PLOTS / "heldout_example.png",
                   [p._replace(start=p.start - OFFSET / SAMPLE_RATE, end=p.end - OFFSET / SAMPLE_RATE) for p in ex.phones])  # fmt: skip
    alsa_plots = []
    for wav in sorted(ALSA.glob("*.wav")) if ALSA.exists() else []:
        name = f"alsa_{wav.stem}.png"
        plot_recording(net, _load_alsa(wav), f"{wav.name} (48 kHz human recording)", PLOTS / name)
        alsa_plots.append(name)
    manifest = json.loads(MANIFEST_PATH.read_text())
    manifest["evaluation"] = {
        "held_out_voice": corpus.HELD_OUT_VOICE.key,
        "closure_threshold": CLOSURE_THRESHOLD,
        "level_normaliser": NORMALISE,
        "network": results["network"],
        "network_by_peak_dbfs": levels[NORMALISE],
    }
    write_manifest(manifest)
    report = reporting.Report(
        results, levels, non_speech, diagnosis, channels, manifest, alsa_plots,
        round(time.time() - t0), json.loads(BASELINE_MANIFEST_PATH.read_text()),
    )  # fmt: skip
    reporting.write(report)
    reporting.LAST.write_bytes(pickle.dumps(report))
    print(f"evaluation done in {time.time() - t0:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
