"""``make model``: corpus synthesis -> targets -> augmentation -> training -> ONNX -> report.

Seeded end to end; the corpus and checkpoints go to ``training/work/`` (git-ignored); the
ONNX model and manifest go to ``model_repository/a2f_net/2/`` (version 1, model 1.2.0, stays for rollback), the report to
``training/REPORT.md`` and ``training/report/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from training import calibrate, corpus, evaluate, export
from training.model import A2FNet
from training.train import TrainConfig, seed_everything, train

SEED = 1234
PER_VOICE = 720  # sentences per natural voice (espeak variants: a third), clean + augmented
NON_SPEECH = 300  # noise/silence-only recordings
MODEL_VERSION = "1.3.0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-voice", type=int, default=PER_VOICE)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--threads", type=int, default=2)
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
    trunk, log = train(data, cfg)
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
                "batch": cfg.batch,
                "final_loss": round(log.final_loss, 5),
                "corpus_seconds": round(t_corpus),
                "train_seconds": round(log.seconds),
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
