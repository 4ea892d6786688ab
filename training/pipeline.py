"""``make model``: corpus synthesis -> targets -> augmentation -> training (a main stage, then
a short finishing stage, `training.train.finishing`) -> closure calibration -> ONNX -> report.

Seeded end to end; the corpus and checkpoints go to ``training/work/`` (git-ignored); the
ONNX model and manifest go to ``model_repository/a2f_net/3/`` (versions 1 and 2, models 1.2.0
and 1.3.0, stay for rollback), the report to ``training/REPORT.md`` and ``training/report/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from training import calibrate, corpus, evaluate, export
from training.model import A2FNet, Trunk
from training.train import TrainConfig, finishing, seed_everything, train

SEED = 1234
PER_VOICE = 720  # sentences per natural voice (espeak variants: a third), clean + augmented
NON_SPEECH = 300  # noise/silence-only recordings
MODEL_VERSION = "1.4.0"
MAIN_STAGE = corpus.WORK / "main_stage.pt"  # for `--main-stage`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-voice", type=int, default=PER_VOICE)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--main-stage",
        type=Path,
        default=None,
        help="the main stage's weights from an earlier run (training/work/main_stage.pt): "
        "skip that stage (the corpus is synthesised again: equal in its figures, not bytes)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(SEED)
    t0 = time.time()
    corpus.WORK.mkdir(parents=True, exist_ok=True)

    samples = corpus.synthesize_corpus(args.per_voice, NON_SPEECH, SEED)
    data = corpus.to_arrays(samples)
    hours = sum(len(s.audio) for s in samples) / 16000 / 3600
    t_corpus = time.time() - t0
    print(
        f"corpus: {len(samples)} recordings, {hours:.2f} h, {len(data.starts)} windows ({t_corpus:.0f} s)",
        flush=True,
    )
    del samples

    cfg = TrainConfig(steps=args.steps, seed=SEED)
    if args.main_stage is None:
        trunk, log = train(data, cfg)
        torch.save(A2FNet(trunk).state_dict(), MAIN_STAGE)
    else:
        main_stage = A2FNet(Trunk())
        main_stage.load_state_dict(torch.load(args.main_stage))
        trunk, log = main_stage.trunk, None
    finish = finishing(cfg)
    trunk, finish_log = train(data, finish, start=trunk)
    net = A2FNet(trunk).eval()
    calibration = calibrate.calibrate(net, SEED + 2)
    print(f"calibrated: {calibration}", flush=True)
    torch.save(net.state_dict(), corpus.WORK / "a2f_net.pt")

    check = np.random.default_rng(SEED).uniform(-0.5, 0.5, (16, export.WINDOW)).astype(np.float32)
    info = export.export_all(
        net,
        MODEL_VERSION,
        check,
        {
            "training": {
                "seed": SEED,
                "voices_train": [v.key for v in corpus.TRAIN_VOICES],
                "voice_held_out": corpus.HELD_OUT_VOICE.key,
                "sentences_per_voice": args.per_voice,
                "corpus_hours": round(hours, 2),
                "windows": len(data.starts),
                "steps": cfg.steps,
                "finishing_steps": finish.steps,
                "batch": cfg.batch,
                "final_loss": round(finish_log.final_loss, 5),
                "corpus_seconds": round(t_corpus),
                "train_seconds": None if log is None else round(log.seconds),
                "finishing_seconds": round(finish_log.seconds),
            },
            "closure_calibration": dataclasses.asdict(calibration),
        },
    )
    print(
        f"exported: {info['onnx_bytes']} bytes, {info['macs_per_window']} MACs/window", flush=True
    )
    evaluate.main([])
    print(f"make model done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
