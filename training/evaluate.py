"""``make eval-model``: evaluate the committed ONNX against the baselines; write the report.

Held-out voice (never trained on) reading held-out sentences, clean and degraded (noise at
10 dB SNR + room reverb); silence and noise-only inputs; the machine's own recordings of
human speech (``/usr/share/sounds/alsa``, 48 kHz, resampled with soxr) plotted over the
waveform. Writes ``training/REPORT.md``, ``training/report/*.png`` and the ``evaluation``
key of the manifest.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

from training import augment, corpus
from training.baselines import Loudness, MfccTemplates, log_energy, mfcc
from training.channels import ARKIT_BLENDSHAPES, OFFSET, SAMPLE_RATE, VISEMES, WINDOW
from training.export import MANIFEST_PATH, ONNX_PATH, recipe_sha256, write_manifest
from training.model import HOP
from training.targets import frame_labels, frame_targets

HERE = Path(__file__).resolve().parent
REPORT = HERE / "REPORT.md"
PLOTS = HERE / "report"
ALSA = Path("/usr/share/sounds/alsa")
EVAL_SEED = 4321
N_HELD_OUT = 80
STRIDE = 2  # evaluate every second 10 ms frame (50 fps)
CLOSURE_THRESHOLD = 0.5  # mouthClose at or above this = lips closed
_IDX = {n: i for i, n in enumerate(ARKIT_BLENDSHAPES)}
_SIL, _PP = VISEMES.index("sil"), VISEMES.index("PP")

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


def degrade(audio: np.ndarray, seed: int) -> np.ndarray:
    """The "noisy" condition: a room plus pink/white/brown/hum noise at 10 dB SNR."""
    rng = np.random.default_rng(seed)
    wet = np.convolve(audio, augment.room_response(rng))[: len(audio)]
    rms = np.sqrt(np.mean(audio[np.abs(audio) > 1e-4] ** 2))
    return (wet + augment.coloured_noise(len(audio), rng) * rms * 10 ** (-10 / 20)).astype(
        np.float32
    )


# How a condition alters the i-th held-out recording: (audio, i) -> audio.
Alteration = Callable[[np.ndarray, int], np.ndarray]

# Condition -> (report heading, alteration).
CONDITIONS: dict[str, tuple[str, Alteration]] = {
    "clean": ("clean", lambda audio, _i: audio),
    "noisy": ("noisy (room reverb + noise at 10 dB SNR)", lambda audio, i: degrade(audio, EVAL_SEED + i)),
}  # fmt: skip

# Gains applied to the clean test set: a distant or low-gain microphone delivers far less.
LEVEL_GAINS_DB = (0, -10, -20, -34)


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


def speech_metrics(
    system: System, samples: list, alter: Alteration = CONDITIONS["clean"][1]
) -> dict[str, float]:
    pb, pv, tb, tl = [], [], [], []
    for i, s in enumerate(samples):
        audio = alter(s.audio, i)
        c = centres_of(audio)
        b, v = system(audio, c)
        pb.append(b)
        pv.append(v)
        tb.append(frame_targets(s.phones, c / SAMPLE_RATE)[0])
        tl.append(frame_labels(s.phones, c / SAMPLE_RATE))
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
        "viseme_accuracy": float(np.mean(pv.argmax(1) == tl)),
        "mean_channel_pearson": float(np.mean([_pearson(pb[:, k], tb[:, k]) for k in active])),
        "blendshape_mae": float(np.mean(np.abs(pb[:, active] - tb[:, active]))),
        "frames": len(tl),
    }


def channel_pearsons(system: System, samples: list) -> dict[str, float]:
    pb, tb = [], []
    for s in samples:
        c = centres_of(s.audio)
        pb.append(system(s.audio, c)[0])
        tb.append(frame_targets(s.phones, c / SAMPLE_RATE)[0])
    pb, tb = np.concatenate(pb), np.concatenate(tb)
    return {n: _pearson(pb[:, k], tb[:, k]) for n, k in _IDX.items() if tb[:, k].std() > 0.01}


def level_sweep(system: System, samples: list) -> dict[str, dict[str, float]]:
    """The clean test set played at lower levels (peak dBFS -> metrics)."""
    peak_db = 20 * np.log10(max(float(np.abs(s.audio).max()) for s in samples))

    def at_gain(gain_db: float) -> Alteration:
        return lambda audio, _i: audio * np.float32(10 ** (gain_db / 20))

    return {
        f"{peak_db + gain:.0f}": speech_metrics(system, samples, at_gain(gain))
        for gain in LEVEL_GAINS_DB
    }


def non_speech_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(EVAL_SEED)
    n = 3 * SAMPLE_RATE
    out = {"digital silence": np.zeros(n, np.float32)}
    out["noise floor (-70 dBFS)"] = (rng.standard_normal(n) * 10 ** (-70 / 20)).astype(np.float32)
    for k, kind in enumerate(augment.NOISE_KINDS):
        out[f"{kind} noise (-30 dBFS)"] = augment.coloured_noise(n, rng, k) * 10 ** (-30 / 20)
    if (ALSA / "Noise.wav").exists():
        out["ALSA Noise.wav"] = _load_alsa(ALSA / "Noise.wav")
    return out


def non_speech_metrics(system: System, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """How far from neutral the face moves with no speech (lower is better)."""
    acts, closed, sil = [], [], []
    for audio in inputs.values():
        padded = np.pad(audio, (OFFSET, OFFSET))
        b, v = system(padded, centres_of(padded))
        acts.append(b.max(axis=1))
        closed.append(b[:, _IDX["mouthClose"]] >= CLOSURE_THRESHOLD)
        sil.append(v.argmax(1) == _SIL)
    return {
        "nonspeech_max_weight_mean": float(np.mean(np.concatenate(acts))),
        "nonspeech_jaw_or_lip_false_closure_rate": float(np.mean(np.concatenate(closed))),
        "nonspeech_sil_rate": float(np.mean(np.concatenate(sil))),
        "silence_max_weight": float(np.max(np.concatenate(acts[:2]))),
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


METRICS = (
    ("jawOpen_pearson", "jawOpen Pearson r", True),
    ("bilabial_f1", "bilabial closure F1", True),
    ("bilabial_ap", "bilabial closure average precision", True),
    ("viseme_accuracy", "viseme accuracy", True),
    ("mean_channel_pearson", "mean Pearson r (active channels)", True),
    ("blendshape_mae", "blendshape MAE (active channels)", False),
)
NON_SPEECH = (
    ("silence_max_weight", "silence: max blendshape weight", False),
    ("nonspeech_max_weight_mean", "silence+noise: mean of max weight", False),
    ("nonspeech_jaw_or_lip_false_closure_rate", "silence+noise: false lip closures", False),
    ("nonspeech_sil_rate", "silence+noise: `sil` viseme rate", True),
)


def _table(results: dict[str, dict[str, float]], rows: tuple) -> tuple[list[str], bool]:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    wins = True
    for key, label, higher in rows:
        vals = [results[n][key] for n in names]
        net, others = vals[0], vals[1:]
        best = all(net > o if higher else net < o for o in others)
        wins &= best
        cells = [f"**{x:.3f}**" if i == 0 and best else f"{x:.3f}" for i, x in enumerate(vals)]
        lines.append(
            f"| {label} ({'higher' if higher else 'lower'} is better) | " + " | ".join(cells) + " |"
        )
    return lines, wins


def write_report(
    results: dict,
    levels: dict[str, dict[str, float]],
    channels: dict[str, float],
    manifest: dict,
    alsa_plots: list[str],
) -> None:
    train = manifest.get("training", {})
    lines = [
        "# a2f_net: evaluation report",
        "",
        "Generated by `make eval-model` (`.venv/bin/python -m training.evaluate`), which re-evaluates",
        "the committed `model_repository/a2f_net/1/model.onnx`; `make model` trains it",
        "(`bash training/setup.sh && .venv/bin/python -m training.pipeline`). How targets are made:",
        "[README.md](README.md).",
        "",
        "## Model",
        "",
        f"- version {manifest['model_version']}, recipe sha256 `{manifest['recipe_sha256'][:16]}…`",
        f"- **{manifest['macs_per_window']:,} multiply-adds per window** (budget 6,000,000), "
        f"ONNX {manifest.get('onnx_bytes', ONNX_PATH.stat().st_size) / 1e6:.2f} MB, opset {manifest.get('opset', '?')}, "
        f"ONNX Runtime vs PyTorch max |diff| {manifest.get('ort_max_abs_diff', float('nan')):.1e}",
        f"- trained on {len(train.get('voices_train', []))} voices ({', '.join(train.get('voices_train', []))}), "
        f"{train.get('corpus_hours', '?')} h of audio incl. augmented copies, {train.get('steps', '?')} steps "
        f"x {train.get('batch', '?')} windows in {train.get('train_seconds', '?')} s "
        f"(corpus {train.get('corpus_seconds', '?')} s) on 2 CPU cores",
        f"- held out: voice `{corpus.HELD_OUT_VOICE.key}` and 10 % of the sentences; "
        f"{N_HELD_OUT} held-out sentences read by the held-out voice are the test set",
        "",
    ]
    all_wins = True
    for cond, (heading, _alter) in CONDITIONS.items():
        lines += [f"## Held-out voice, {heading}", ""]
        table, wins = _table({k: v[cond] for k, v in results.items()}, METRICS)
        all_wins &= wins
        lines += [*table, ""]
    lines += ["## Silence and non-speech noise", "",
              "Digital silence, a -70 dBFS noise floor, white/pink/brown/hum noise at -30 dBFS and ALSA's `Noise.wav`.", ""]  # fmt: skip
    table, wins = _table({k: v["nonspeech"] for k, v in results.items()}, NON_SPEECH)
    all_wins &= wins
    net = results["network"]["clean"]
    bar = net["bilabial_f1"] >= 0.85 and net["jawOpen_pearson"] >= 0.8
    lines += [
        *table,
        "",
        "## Verdict",
        "",
        f"- quality bar (held-out voice, clean: bilabial F1 >= 0.85, jawOpen r >= 0.8): **{'met' if bar else 'NOT met'}** "
        f"(F1 {net['bilabial_f1']:.3f}: precision {net['bilabial_precision']:.3f}, recall {net['bilabial_recall']:.3f}; r {net['jawOpen_pearson']:.3f})",
        f"- network beats both baselines on every metric above: **{'yes' if all_wins else 'NO'}**",
        "",
        "Definitions: frames every 20 ms; a frame is a *bilabial* frame when it lies inside an aligned p/b/m;",
        f"the lips count as closed when mouthClose >= {CLOSURE_THRESHOLD}. Viseme accuracy compares the arg-max",
        "viseme with the viseme of the aligned phone (diphthongs: first/second half). Pearson r is over all",
        "test frames; *active channels* are the blendshapes whose target varies (std > 0.01). Average",
        "precision ranks all frames by mouthClose (area under the precision-recall curve): unlike F1 it",
        "does not depend on where 0.5 falls in a model's calibration.",
        "",
        "## Input level (network, held-out voice, clean)",
        "",
        "The clean test set played quieter, as from a distant or low-gain microphone (the training",
        "audio spans peaks of -40 to +3 dBFS). Closures are the first to go.",
        "",
        "| peak level (dBFS) | bilabial F1 | closure AP | jawOpen r | viseme accuracy |",
        "|---|---|---|---|---|",
        *[
            f"| {lvl} | {m['bilabial_f1']:.3f} | {m['bilabial_ap']:.3f} | {m['jawOpen_pearson']:.3f} | {m['viseme_accuracy']:.3f} |"
            for lvl, m in levels.items()
        ],
        "",
        "## Per-channel Pearson r (network, held-out voice, clean)",
        "",
        "| channel | r |",
        "|---|---|",
        *[f"| {n} | {r:.3f} |" for n, r in sorted(channels.items(), key=lambda kv: -kv[1])],
        "",
        "## Plots",
        "",
        "Held-out voice (dashed: targets; shaded: aligned p/b/m):",
        "",
        "![held-out example](report/heldout_example.png)",
        "",
        "Human speech shipped with the machine (`/usr/share/sounds/alsa`, resampled 48 kHz -> 16 kHz with soxr):",
        "",
        *[f"![{p}](report/{p})" for p in alsa_plots],
        "",
    ]
    REPORT.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    del argv  # no options: the evaluation is fixed so reports are comparable
    net = Network()
    loud, templ = fit_baselines()
    samples = _cached("held_out", lambda: corpus.render_held_out(N_HELD_OUT, EVAL_SEED))
    systems: dict[str, System] = {"network": net, "loudness→jawOpen": loud, "MFCC templates": templ}
    inputs = non_speech_inputs()
    results = {}
    for name, system in systems.items():
        results[name] = {
            cond: speech_metrics(system, samples, alter) for cond, (_h, alter) in CONDITIONS.items()
        }
        results[name]["nonspeech"] = non_speech_metrics(system, inputs)
        print(name, json.dumps(results[name]), flush=True)
    levels = level_sweep(net, samples)
    print("levels", json.dumps(levels), flush=True)
    channels = channel_pearsons(net, samples)
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
        **{name: r for name, r in results.items()},
        "network_by_peak_dbfs": levels,
    }
    write_manifest(manifest)
    write_report(results, levels, channels, manifest, alsa_plots)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
