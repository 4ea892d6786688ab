"""ONNX export, ONNX Runtime vs PyTorch check, and the manifest next to the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.channels import ARKIT_BLENDSHAPES, OFFSET, SAMPLE_RATE, VISEMES, WINDOW
from training.model import A2FNet, count_macs
from training.time_major import time_major

ROOT = Path(__file__).resolve().parent.parent
# Triton version directories of a2f_net: training writes the newest; the older ones stay in
# the repository for rollback (`--model_version`).
SERVED_VERSION = 3
# The version the report compares with: 1.2.0, the last trained without noise, whose clean
# figures the noise-robust versions must keep.
BASELINE_VERSION = 1
MODEL_DIR = ROOT / "model_repository" / "a2f_net" / str(SERVED_VERSION)
BASELINE_MANIFEST_PATH = MODEL_DIR.parent / str(BASELINE_VERSION) / "manifest.json"
ONNX_PATH = MODEL_DIR / "model.onnx"
MANIFEST_PATH = MODEL_DIR / "manifest.json"
OPSET = 17


def recipe_sha256() -> str:
    """Hash of everything that defines the model: the training code and the setup script."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in sorted([*here.glob("*.py"), here / "setup.sh"]):
        if path.exists():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def export(net: A2FNet, path: Path = ONNX_PATH) -> None:
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        (torch.zeros(2, WINDOW),),
        str(path),
        input_names=["AUDIO"],
        output_names=["BLENDSHAPES", "VISEMES"],
        dynamic_axes={"AUDIO": {0: "batch"}, "BLENDSHAPES": {0: "batch"}, "VISEMES": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    model.producer_name = "open-a2f training"
    model = time_major(model)
    onnx.save(model, str(path))


def check_ort(net: A2FNet, path: Path, audio: np.ndarray) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on the given windows."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    blend, vis = sess.run(None, {"AUDIO": audio})
    with torch.no_grad():
        tb, tv = net(torch.from_numpy(audio))
    return float(max(np.abs(blend - tb.numpy()).max(), np.abs(vis - tv.numpy()).max()))


def manifest(version: str, macs: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "a2f_net",
        "model_version": version,
        "sample_rate": SAMPLE_RATE,
        "window": WINDOW,
        "offset": OFFSET,
        "inputs": {"AUDIO": {"shape": [WINDOW], "dtype": "FP32"}},
        "outputs": {
            "BLENDSHAPES": {
                "shape": [len(ARKIT_BLENDSHAPES)],
                "dtype": "FP32",
                "channels": list(ARKIT_BLENDSHAPES),
            },
            "VISEMES": {"shape": [len(VISEMES)], "dtype": "FP32", "channels": list(VISEMES)},
        },
        "layout": "time-major",
        "recipe_sha256": recipe_sha256(),
        "macs_per_window": macs,
        **extra,
    }


def write_manifest(data: dict[str, Any], path: Path = MANIFEST_PATH) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def export_all(
    net: A2FNet, version: str, check_audio: np.ndarray, extra: dict[str, Any]
) -> dict[str, Any]:
    """Export, verify against PyTorch, and write the manifest; returns the manifest."""
    export(net)
    diff = check_ort(net, ONNX_PATH, check_audio)
    if diff > 1e-4:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.2e}")
    data = manifest(
        version,
        count_macs(net),
        {"onnx_bytes": ONNX_PATH.stat().st_size, "opset": OPSET, "ort_max_abs_diff": diff, **extra},
    )
    write_manifest(data)
    return data
