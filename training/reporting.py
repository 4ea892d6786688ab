"""training/REPORT.md from the evaluation's figures (``training/evaluate.py`` measures them)."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

from training import corpus
from training.export import ONNX_PATH
from training.model import LOG_FLOOR

REPORT = Path(__file__).resolve().parent / "REPORT.md"
# The last evaluation's figures: `python -m training.reporting` rewrites the report from them.
LAST = corpus.WORK / "last_evaluation.pkl"
CLEAN, NOISY = "clean", "noisy (room + noise, 10 dB SNR)"
FLOOR_DB = 10 * math.log10(LOG_FLOOR)  # the front end's floor

METRICS = (
    ("jawOpen_pearson", "jawOpen Pearson r", True),
    ("bilabial_f1", "bilabial closure F1 (frame-exact)", True),
    ("bilabial_ap", "bilabial closure average precision", True),
    ("closure_event_recall", "p/b/m closed within ±20 ms (event recall)", True),
    ("false_closures_per_min", "false closures per minute of speech", False),
    ("closure_event_f1", "closure event F1", True),
    ("viseme_accuracy", "viseme accuracy", True),
    ("mean_channel_pearson", "mean Pearson r (active channels)", True),
    ("blendshape_mae", "blendshape MAE (active channels)", False),
)
NON_SPEECH = (
    ("silence_max_weight", "silence: max blendshape weight", False),
    ("nonspeech_max_weight_mean", "non-speech: mean of max weight", False),
    ("nonspeech_mouth_p95", "non-speech: mouth/jaw weight, 95th percentile", False),
    ("nonspeech_jaw_or_lip_false_closure_rate", "non-speech: frames with lips closed", False),
    ("nonspeech_false_closures_per_min", "non-speech: closures per minute", False),
    ("nonspeech_sil_rate", "non-speech: `sil` viseme rate", True),
)
HALVES = ("closure_event_recall", "false_closures_per_min")
# The per-condition comparison with the baselines: fewer columns, every condition.
VERSUS = ("closure_event_f1", "bilabial_f1", "bilabial_ap", "jawOpen_pearson")
LEVEL_COLUMNS = (
    "bilabial_f1", "bilabial_ap", "closure_event_recall", "false_closures_per_min",
    "closure_event_f1", "jawOpen_pearson", "viseme_accuracy",
)  # fmt: skip
SHORT = {
    "bilabial_f1": "frame F1",
    "bilabial_ap": "AP",
    "closure_event_recall": "event recall",
    "false_closures_per_min": "false/min",
    "closure_event_f1": "event F1",
    "jawOpen_pearson": "jawOpen r",
    "viseme_accuracy": "viseme acc.",
    "mean_channel_pearson": "mean r",
}


@dataclass
class Report:
    results: dict  # system -> condition (and "nonspeech") -> metrics
    levels: dict  # normaliser on? -> peak dBFS -> metrics (network)
    non_speech: dict  # normaliser on? -> input -> metrics (network)
    diagnosis: dict
    channels: dict[str, float]
    manifest: dict
    alsa_plots: list[str]
    seconds: int
    previous: dict  # the baseline's manifest (`export.BASELINE_VERSION`), with its evaluation


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _system_table(results: dict[str, dict[str, float]], rows: tuple) -> tuple[list[str], list[str]]:
    """The table, and the metrics on which the first system does not beat every other."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lost = []
    for key, label, higher in rows:
        vals = [results[n][key] for n in names]
        best = all(_better(vals[0], o, higher) for o in vals[1:])
        if not best and key not in HALVES:
            lost.append(label)
        cells = [f"**{x:.3f}**" if i == 0 and best else f"{x:.3f}" for i, x in enumerate(vals)]
        lines.append(
            f"| {label} ({'higher' if higher else 'lower'} is better) | " + " | ".join(cells) + " |"
        )
    return lines, lost


def _speech_conditions(results: dict) -> list[str]:
    return [c for c in results["network"] if c != "nonspeech"]


def _network_table(rows: dict[str, dict[str, float]], first: str, columns: tuple) -> list[str]:
    head = f"| {first} | " + " | ".join(SHORT[c] for c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in columns) + " |")
    return lines


def _versus_table(results: dict) -> tuple[list[str], list[str]]:
    """Every condition: network / loudness / MFCC per metric; conditions the network loses."""
    systems = list(results)
    higher = {key: h for key, _label, h in METRICS}
    lines = [
        "| condition | " + " | ".join(SHORT[k] for k in VERSUS) + " |",
        "|---" * (len(VERSUS) + 1) + "|",
    ]
    losses = []
    for cond in _speech_conditions(results):
        cells = []
        for key in VERSUS:
            vals = [results[s][cond][key] for s in systems]
            wins = all(_better(vals[0], v, higher[key]) for v in vals[1:])
            if not wins:
                losses.append(f"{cond}: {SHORT[key]}")
            first = f"**{vals[0]:.3f}**" if wins else f"{vals[0]:.3f}"
            cells.append(" / ".join([first, *(f"{v:.3f}" for v in vals[1:])]))
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return lines, losses


def _targets(report: Report) -> list[str]:
    net = report.results["network"]
    conds = _speech_conditions(report.results)
    clean = net[CLEAN]
    quiet = report.levels[True]
    quietest = quiet[min(quiet, key=float)]
    raw_quietest = report.levels[False][min(quiet, key=float)]
    down_to_5 = [c for c in conds if c != CLEAN]
    worst_jaw = min(down_to_5, key=lambda c: net[c]["jawOpen_pearson"])
    ns = report.non_speech[True]
    moving = [n for n, m in ns.items() if n != "all" and m["mouth_p95"] > 0.15]
    closing = [n for n, m in ns.items() if n != "all" and m["false_closures_per_min"] > 0]

    mark = _mark
    return [
        f"- clean: event recall >= 0.9 with <= 6 false closures per minute: "
        f"{mark(clean['closure_event_recall'] >= 0.9 and clean['false_closures_per_min'] <= 6)} "
        f"(recall {clean['closure_event_recall']:.3f}, {clean['false_closures_per_min']:.1f} per minute)",
        f"- frame-exact closure F1 >= 0.6 with reverb at 10 dB SNR: {mark(net[NOISY]['bilabial_f1'] >= 0.6)} "
        f"({net[NOISY]['bilabial_f1']:.3f})",
        f"- frame-exact closure F1 >= 0.6 at -40 dBFS peak: {mark(quietest['bilabial_f1'] >= 0.6)} "
        f"({quietest['bilabial_f1']:.3f} with the level normaliser, {raw_quietest['bilabial_f1']:.3f} without)",
        f"- jawOpen r >= 0.85 in every condition down to 5 dB SNR: "
        f"{mark(net[worst_jaw]['jawOpen_pearson'] >= 0.85)} (lowest: {net[worst_jaw]['jawOpen_pearson']:.3f}, {worst_jaw})",
        f"- no false closures and a near-neutral face on the held-out non-speech set: "
        f"{mark(not moving and not closing)} (closures on: {', '.join(closing) or 'none'}; "
        f"mouth/jaw 95th percentile above 0.15 on: {', '.join(moving) or 'none'})",
        _clean_target(report),
    ]


def _by_condition(evaluation: dict) -> dict[str, dict[str, float]]:
    """A manifest's evaluation of the network per speech condition, quiet levels included."""
    network = {cond: m for cond, m in evaluation["network"].items() if cond != "nonspeech"}
    quiet = {f"clean at {g} dBFS peak": m for g, m in evaluation["network_by_peak_dbfs"].items()}
    return {**network, **quiet}


def _worse_on_clean(report: Report) -> list[str]:
    new, old = report.results["network"][CLEAN], report.previous["evaluation"]["network"][CLEAN]
    return [
        SHORT.get(key, key)
        for key, _label, higher in METRICS
        if (old[key] - new[key] if higher else new[key] - old[key]) > 0.01
    ]


def _clean_target(report: Report) -> str:
    version = report.previous["model_version"]
    worse = _worse_on_clean(report)
    return (
        f"- on clean speech every metric at least {version}'s minus 0.01: {_mark(not worse)}"
        f" ({'worse on: ' + ', '.join(worse) if worse else 'none worse'})"
    )


def _mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _previous_table(report: Report) -> list[str]:
    """Both versions in every condition and at every level; means over the hard ones."""
    new = _by_condition(report.manifest["evaluation"])
    old = _by_condition(report.previous["evaluation"])
    columns = (
        "closure_event_f1",
        "bilabial_f1",
        "bilabial_ap",
        "jawOpen_pearson",
        "viseme_accuracy",
    )
    hard = [c for c in new if c in old and c != CLEAN and "-6 dBFS" not in c]
    lines = [
        "| condition | " + " | ".join(SHORT[k] for k in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for cond in [c for c in new if c in old]:
        cells = [f"{new[cond][k]:.3f} / {old[cond][k]:.3f}" for k in columns]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    means = [
        f"**{sum(new[c][k] for c in hard) / len(hard):.3f}** / {sum(old[c][k] for c in hard) / len(hard):.3f}"
        for k in columns
    ]
    lines.append(
        f"| mean of the {len(hard)} noisy, reverberant and quiet conditions | "
        + " | ".join(means)
        + " |"
    )
    return lines


def _diagnosis_tables(report: Report) -> list[str]:
    d = report.diagnosis
    peak = {f"{g}": lvl for g, lvl in zip(d["levels"][False], report.levels[False], strict=True)}
    lines = [
        "| peak dBFS | normaliser | closure frames' loudest band (median dB) | other speech frames' loudest band | closure frames with every band within 6 dB of the floor | closure dip (median dB) | frame F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for flag in (False, True):
        for gain, view in d["levels"][flag].items():
            lvl = peak[gain]
            lines.append(
                f"| {lvl} | {'on' if flag else 'off'} | {view['closure_loudest_band_db']:.1f} | "
                f"{view['speech_loudest_band_db']:.1f} | {view['closures_at_floor']:.2f} | "
                f"{view['closure_dip_db']:.1f} | "
                f"{report.levels[flag][lvl]['bilabial_f1']:.3f} |"
            )
    net = report.results["network"]
    lines += [
        "",
        "| condition | closure dip, clean → noisy (median dB) | closure frames hidden in the noise | /a/ frames hidden | frame F1 | event recall | false/min | jawOpen r |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond, view in d["noise"].items():
        m = net[cond]
        lines.append(
            f"| {cond} | {view['closure_dip_clean_db']:.1f} → {view['closure_dip_noisy_db']:.1f} | "
            f"{view['closures_hidden']:.2f} | {view['vowels_hidden']:.2f} | "
            f"{m['bilabial_f1']:.3f} | {m['closure_event_recall']:.3f} | "
            f"{m['false_closures_per_min']:.1f} | {m['jawOpen_pearson']:.3f} |"
        )
    return lines


def write(report: Report) -> None:
    manifest, results = report.manifest, report.results
    train = manifest.get("training", {})
    lines = [
        "# a2f_net: evaluation report",
        "",
        "Generated by `make eval-model` (`.venv/bin/python -m training.evaluate`), which re-evaluates",
        f"the committed `{ONNX_PATH.relative_to(ONNX_PATH.parents[3])}`; `make model` trains it",
        "(`bash training/setup.sh && .venv/bin/python -m training.pipeline`). How targets are made:",
        f"[README.md](README.md). This evaluation took {report.seconds} s on 2 CPU cores.",
        "",
        "## Model",
        "",
        f"- version {manifest['model_version']}, recipe sha256 `{manifest['recipe_sha256'][:16]}…`",
        f"- **{manifest['macs_per_window']:,} multiply-adds per window** (budget 6,000,000), "
        f"ONNX {manifest['onnx_bytes'] / 1e6:.2f} MB, opset {manifest.get('opset', '?')}, "
        f"ONNX Runtime vs PyTorch max |diff| {manifest.get('ort_max_abs_diff', float('nan')):.1e}",
        f"- trained on {len(train.get('voices_train', []))} voices ({', '.join(train.get('voices_train', []))}), "
        f"{train.get('corpus_hours', '?')} h of audio incl. augmented copies, {train.get('steps', '?')} steps "
        f"x {train.get('batch', '?')} windows in {train.get('train_seconds', '?')} s "
        f"(corpus {train.get('corpus_seconds', '?')} s) on 2 CPU cores",
        f"- held out: voice `{corpus.HELD_OUT_VOICE.key}` and 10 % of the sentences; "
        "80 held-out sentences read by the held-out voice are the test set",
        "- the network hears the test audio through the service's input level normaliser "
        "(`gateway/session/level.py`, `--normalise_level`; the service's default is off, for its "
        "CPU cost: see that module), one session per condition with the sentences one after "
        "another; the baselines hear it raw",
        f"- the earlier versions stay in the repository for rollback (`--model_version N`); "
        f"{report.previous['model_version']} (version 1, trained without noise) is the baseline "
        "below, its figures from its own manifest",
        "",
        "## Targets",
        "",
        *_targets(report),
        "",
        "## Held-out voice, clean (-6 dBFS peak)",
        "",
    ]
    table, clean_lost = _system_table({k: v[CLEAN] for k, v in results.items()}, METRICS)
    lines += [*table, ""]
    lines += [
        "## Every condition (network)",
        "",
        "Noise sources the training never hears (`training/conditions.py`: babble of six espeak-ng",
        "voices no training voice uses, a fan, a street, synthesised music, a keyboard), mixed at",
        "the SNR named (against the speech's RMS); two fixed rooms; a telephone channel; audio",
        "recorded at 8 kHz and resampled. The first noisy row is the condition of earlier reports",
        "(a random room, then the training's own white/pink/brown/hum noise at 10 dB SNR).",
        "",
        *_network_table(
            {c: results["network"][c] for c in _speech_conditions(results)},
            "condition",
            (*LEVEL_COLUMNS, "mean_channel_pearson"),
        ),
        "",
        "## Network against both baselines in every condition",
        "",
        "Each cell: network / loudness→jawOpen / MFCC templates (bold: the network beats both).",
        "",
    ]
    versus, losses = _versus_table(results)
    lines += [*versus, ""]
    lines += [
        f"## Against the baseline ({report.previous['model_version']})",
        "",
        f"Each cell: {manifest['model_version']} / {report.previous['model_version']} (network, "
        "same evaluation; the quiet rows are the level sweep).",
        "",
        *_previous_table(report),
        "",
    ]
    ns_table, ns_lost = _system_table({k: v["nonspeech"] for k, v in results.items()}, NON_SPEECH)
    lines += [
        "## Silence and non-speech",
        "",
        "Digital silence, a -70 dBFS noise floor, white/pink/brown/hum noise at -30 dBFS, ALSA's",
        "`Noise.wav`, and the five held-out noise sources alone (10 s each at -30 and at -50 dBFS",
        "RMS); each input is a session of its own.",
        "",
        *ns_table,
        "",
        "Per input (network; without / with the level normaliser):",
        "",
        "| input | mouth/jaw weight, 95th pct. | closures per minute | `sil` viseme rate |",
        "|---|---|---|---|",
    ]
    off, on = report.non_speech[False], report.non_speech[True]
    for name in off:
        if name == "all":
            continue
        a, b = off[name], on[name]
        lines.append(
            f"| {name} | {a['mouth_p95']:.3f} / {b['mouth_p95']:.3f} | "
            f"{a['false_closures_per_min']:.1f} / {b['false_closures_per_min']:.1f} | "
            f"{a['sil_rate']:.3f} / {b['sil_rate']:.3f} |"
        )
    lines += [
        "",
        "## Input level (network, held-out voice, clean)",
        "",
        "The clean test set played quieter, as from a distant or low-gain microphone (the training",
        "audio spans peaks of -40 to +3 dBFS), without and with the level normaliser.",
        "",
        "| peak dBFS | normaliser | " + " | ".join(SHORT[c] for c in LEVEL_COLUMNS) + " |",
        "|---|---|" + "---|" * len(LEVEL_COLUMNS),
    ]
    for flag in (False, True):
        for lvl, m in report.levels[flag].items():
            cells = " | ".join(f"{m[c]:.3f}" for c in LEVEL_COLUMNS)
            lines.append(f"| {lvl} | {'on' if flag else 'off'} | {cells} |")
    lines += [
        "",
        "## Diagnosis: what the front end sees",
        "",
        f"The front end's log band energies have a floor {-FLOOR_DB:.0f} dB below full scale. Closure frames",
        "(inside an aligned p/b/m) against that floor, as the level falls:",
        "",
        *_diagnosis_tables(report),
        "",
        "The *closure dip* is how far a closure frame's broadband energy (in the front end's bands)",
        "sits below the loudest frame within ±60 ms: the contrast a closure is read from. A frame is",
        "*hidden* when none of its 40 bands stands 3 dB above the same stretch of noise alone.",
        "",
        *_diagnosis_text(report),
        "",
        "## Verdict",
        "",
        "- network beats both baselines on every clean metric (event recall and false closures per",
        f"  minute aside: a baseline that shuts the lips 200 times a minute wins the first; event F1 weighs both): **{'yes' if not clean_lost else 'NO (' + '; '.join(clean_lost) + ')'}**",
        f"- ... and on every non-speech metric: **{'yes' if not ns_lost else 'NO (' + '; '.join(ns_lost) + ')'}**",
        f"- ... and on event F1, frame F1, AP and jawOpen r in every condition: **{'yes' if not losses else 'NO'}**"
        + (f" (not in: {'; '.join(losses)})" if losses else ""),
        "",
        "Definitions: frames every 20 ms; a frame is a *bilabial* frame when it lies inside an aligned p/b/m;",
        f"the lips count as closed when mouthClose >= {manifest['evaluation']['closure_threshold']}. "
        "*Event* scores: each aligned p/b/m (touching ones",
        "merged) is hit when the lips close within the phone ± 20 ms; each run of closed frames is a",
        "closure event, false when it overlaps no such p/b/m; false closures are per minute of speech",
        "(first to last phone of each sentence), or of audio for non-speech. Viseme accuracy compares",
        "the arg-max viseme with the viseme of the aligned phone (diphthongs: first/second half).",
        "Pearson r is over all test frames; *active channels* are the blendshapes whose target varies",
        "(std > 0.01). Average precision ranks all frames by mouthClose (area under the",
        "precision-recall curve): unlike F1 it does not depend on where 0.5 falls in a model's",
        "calibration. A *near-neutral* face keeps the 95th percentile of its largest mouth/jaw",
        "weight at or below 0.15.",
        "",
        "## Per-channel Pearson r (network, held-out voice, clean)",
        "",
        "| channel | r |",
        "|---|---|",
        *[f"| {n} | {r:.3f} |" for n, r in sorted(report.channels.items(), key=lambda kv: -kv[1])],
        "",
        "## Plots",
        "",
        "Held-out voice (dashed: targets; shaded: aligned p/b/m):",
        "",
        "![held-out example](report/heldout_example.png)",
        "",
        "Human speech shipped with the machine (`/usr/share/sounds/alsa`, resampled 48 kHz -> 16 kHz with soxr):",
        "",
        *[f"![{p}](report/{p})" for p in report.alsa_plots],
        "",
    ]
    REPORT.write_text("\n".join(lines))


def _diagnosis_text(report: Report) -> list[str]:
    """What the tables say about quiet and noisy input, with their own figures."""
    levels, noise = report.diagnosis["levels"], report.diagnosis["noise"]
    loud, quiet = levels[False]["0"], levels[False][f"{min(map(int, levels[False]))}"]
    lvl_off, lvl_on = report.levels[False], report.levels[True]
    low = min(lvl_off, key=float)
    net = report.results["network"]
    off, on = report.non_speech[False], report.non_speech[True]
    moved = [name for name in off if name != "all" and off[name] != on[name]]
    at10 = {k: v for k, v in noise.items() if k.endswith(" 10 dB SNR") and k != NOISY}
    hidden = sorted(v["closures_hidden"] for v in at10.values())
    fan, keys = noise["fan, 10 dB SNR"], noise["keyboard, 10 dB SNR"]
    phones = report.diagnosis["false_closure_phones"]
    total = sum(phones.values())
    top = ", ".join(f"{n} {c}" for n, c in list(phones.items())[:6])
    old = report.previous["evaluation"]["network"]
    was = report.previous["model_version"]
    calibration = report.manifest.get("closure_calibration", {})
    clean, old_clean = net[CLEAN], old[CLEAN]
    return [
        f"**Low levels.** The front end takes the log of each band's energy above a fixed floor {-FLOOR_DB:.0f} dB",
        f"below full scale ({was}'s was 70 dB, which clipped a quiet microphone's closures away:",
        "training/README.md, History). A closure's loudest band now sits at a median",
        f"{loud['closure_loudest_band_db']:.0f} dB at -6 dBFS peak and {quiet['closure_loudest_band_db']:.0f} dB at {low} dBFS, {quiet['closures_at_floor']:.0%} of closure frames have every band",
        f"within 6 dB of the floor, the dip a closure is read from keeps {quiet['closure_dip_db']:.1f} dB (clean: {loud['closure_dip_db']:.1f}),",
        f"and without the level normaliser frame F1 is {lvl_off[low]['bilabial_f1']:.3f} (AP {lvl_off[low]['bilabial_ap']:.3f}) at {low} dBFS against",
        f"{lvl_off['-6']['bilabial_f1']:.3f} at -6 dBFS: the network itself is level-robust, for anyone who runs the ONNX directly.",
        "The level normaliser (`gateway/session/level.py`, `--normalise_level`) lifts what it recognises",
        f"as speech by up to 30 dB; with it frame F1 is {lvl_on[low]['bilabial_f1']:.3f} at {low} dBFS. Speech at the test's level passes",
        f"it bit for bit (the -6 dBFS rows {'are' if lvl_off['-6'] == lvl_on['-6'] else 'are NOT'} equal); its gate (a 15 dB range and syllable-like runs of energy) "
        + (
            "never opened on a non-speech input above (their rows are equal with and without it)."
            if not moved
            else "opened on: " + ", ".join(moved) + "."
        ),
        "",
        "**Noise.** Training now mixes noise into the band powers at every step",
        "(`training/feature_noise.py`: babble of other training windows, coloured noise with a",
        "low-band bump, bursts, harmonic notes; 0-25 dB SNR), on top of the corpus's audio",
        f"augmentation. At 10 dB SNR {hidden[0]:.0%} to {hidden[-1]:.0%} of closure frames (by source) have no band 3 dB above",
        f"the noise; what goes is the contrast: the fan fills the dip from {fan['closure_dip_clean_db']:.1f} dB clean to {fan['closure_dip_noisy_db']:.1f} dB",
        "(its energy lies below 1 kHz, where an /m/'s murmur and a /b/'s voice bar are). The network",
        f"now reads more of what is left: event recall {net['fan, 10 dB SNR']['closure_event_recall']:.2f} with the fan at 10 dB ({was}: {old['fan, 10 dB SNR']['closure_event_recall']:.2f}),",
        f"jawOpen r {net['fan, 5 dB SNR']['jawOpen_pearson']:.2f} at 5 dB ({old['fan, 5 dB SNR']['jawOpen_pearson']:.2f}), frame F1 {net[NOISY]['bilabial_f1']:.3f} in the legacy noisy condition",
        f"({old[NOISY]['bilabial_f1']:.3f}), still short of 0.6: where the dip is under about 8 dB a closure",
        f"and an unvoiced stretch look alike. Typing leaves the dips ({keys['closure_dip_noisy_db']:.1f} dB) and the closures (recall",
        f"{net['keyboard, 10 dB SNR']['closure_event_recall']:.2f}) largely intact; a large hall's tail fills them without any noise (recall",
        f"{net['large hall (RT60 0.9 s)']['closure_event_recall']:.2f}).",
        "",
        "**Speech-like sound.** Babble mixed into training taught the jaw to follow the talker",
        f"rather than the voices behind: jawOpen r with babble at 20 dB SNR {net['babble, 20 dB SNR']['jawOpen_pearson']:.2f} ({was}:",
        f"{old['babble, 20 dB SNR']['jawOpen_pearson']:.2f}), music {net['music, 20 dB SNR']['jawOpen_pearson']:.2f} ({old['music, 20 dB SNR']['jawOpen_pearson']:.2f}). Alone, though, other voices are speech: on babble",
        f"the `sil` rate is {off['babble (-50 dBFS)']['sil_rate']:.2f} even at -50 dBFS. A level gate cannot tell them from a quiet",
        "talker (training plays talkers down to -40 dBFS); a model conditioned on the talker, or a",
        "voice-activity stage, would have to.",
        "",
        f"**Clean speech.** Event recall {clean['closure_event_recall']:.3f} with {clean['false_closures_per_min']:.1f} false closures per minute ({was}:",
        f"{old_clean['closure_event_recall']:.3f}, {old_clean['false_closures_per_min']:.1f}). Closure AP is unchanged ({clean['bilabial_ap']:.3f} / {old_clean['bilabial_ap']:.3f}), but the 0.5",
        f"crossing moved on this voice: precision {clean['bilabial_precision']:.3f} against {old_clean['bilabial_precision']:.3f}, recall {clean['bilabial_recall']:.3f} against",
        f"{old_clean['bilabial_recall']:.3f}, so frame F1 is {clean['bilabial_f1']:.3f} ({old_clean['bilabial_f1']:.3f}) and event F1 {clean['closure_event_f1']:.3f} ({old_clean['closure_event_f1']:.3f}). On the",
        "validation set (held-out sentences read by the training voices, `training/calibrate.py`)",
        f"the best offset on mouthClose's logit is {calibration.get('offset', 0.0):+.1f} (frame F1 {calibration.get('frame_f1', float('nan')):.3f}, event F1 {calibration.get('event_f1', float('nan')):.3f}): the",
        "over-closing is the held-out voice's, not a threshold the recipe could set without",
        f"tuning to the test. The {total} false closures lie on: {top} (phone under each run's middle):",
        "the m/n place contrast of the natural voices (README, Known gaps).",
    ]


if __name__ == "__main__":
    write(pickle.loads(LAST.read_bytes()))
