"""The committed audio-to-face ONNX model: I/O contract, manifest, and behaviour on speech.

Needs only onnxruntime, numpy and soundfile (no TTS engine, no torch): the speech fixture
and its phone alignment are committed under tests/fixtures/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from a2f_triton.repository import network_directory

from training.channels import ARKIT_BLENDSHAPES, OFFSET, SAMPLE_RATE, VISEMES, WINDOW

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = network_directory(ROOT / "model_repository")  # the version served by default
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HOP = SAMPLE_RATE // 100


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL_DIR / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, dict]:
    audio, rate = sf.read(FIXTURES / "speech_16k.wav", dtype="float32")
    assert rate == SAMPLE_RATE and audio.ndim == 1
    return audio, json.loads((FIXTURES / "speech_16k.json").read_text())


def run_frames(
    session: ort.InferenceSession, audio: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Blendshapes/visemes at the given times (s); the window's sample 4160 is the frame time."""
    padded = np.pad(audio, (OFFSET, WINDOW - OFFSET))
    starts = np.round(times * SAMPLE_RATE).astype(int)
    windows = padded[starts[:, None] + np.arange(WINDOW)]
    blend, vis = session.run(None, {"AUDIO": windows.astype(np.float32)})
    return blend, vis


def test_io_contract(session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    assert inp.name == "AUDIO" and inp.type == "tensor(float)"
    assert inp.shape[1] == WINDOW and not isinstance(inp.shape[0], int)  # dynamic batch
    outs = {o.name: o for o in session.get_outputs()}
    assert set(outs) == {"BLENDSHAPES", "VISEMES"}
    assert outs["BLENDSHAPES"].shape[1] == len(ARKIT_BLENDSHAPES)
    assert outs["VISEMES"].shape[1] == len(VISEMES)
    for batch in (1, 7):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, WINDOW)).astype(np.float32)
        blend, vis = session.run(None, {"AUDIO": x})
        assert blend.shape == (batch, 52) and vis.shape == (batch, 15)
        assert blend.dtype == np.float32 and vis.dtype == np.float32
        assert np.all((blend >= 0) & (blend <= 1))
        np.testing.assert_allclose(vis.sum(axis=1), 1.0, atol=1e-5)


def test_manifest_matches_channels(manifest: dict) -> None:
    assert manifest["name"] == "a2f_net"
    assert (manifest["sample_rate"], manifest["window"], manifest["offset"]) == (
        SAMPLE_RATE,
        WINDOW,
        OFFSET,
    )
    assert manifest["inputs"] == {"AUDIO": {"shape": [WINDOW], "dtype": "FP32"}}
    assert manifest["outputs"]["BLENDSHAPES"]["channels"] == list(ARKIT_BLENDSHAPES)
    assert manifest["outputs"]["VISEMES"]["channels"] == list(VISEMES)
    assert manifest["outputs"]["BLENDSHAPES"]["shape"] == [52]
    assert manifest["outputs"]["VISEMES"]["shape"] == [15]
    assert len(manifest["recipe_sha256"]) == 64
    assert 0 < manifest["macs_per_window"] <= 6_000_000
    assert (MODEL_DIR / "model.onnx").stat().st_size <= 5_000_000


def test_silence_is_neutral(session: ort.InferenceSession) -> None:
    quiet = np.zeros((2, WINDOW), np.float32)
    quiet[1] = np.random.default_rng(0).normal(0, 10 ** (-70 / 20), WINDOW)  # mic noise floor
    blend, vis = session.run(None, {"AUDIO": quiet})
    assert blend.max() < 0.15
    assert np.all(vis.argmax(axis=1) == VISEMES.index("sil"))


def test_speech_moves_jaw_and_closes_lips_on_bilabials(
    session: ort.InferenceSession, speech: tuple
) -> None:
    audio, meta = speech
    jaw, close = ARKIT_BLENDSHAPES.index("jawOpen"), ARKIT_BLENDSHAPES.index("mouthClose")
    vowels = [p for p in meta["phones"] if p["phone"] in {"aa", "ae", "ah", "ao", "ay", "aw"}]
    mid = np.array([(p["start"] + p["end"]) / 2 for p in vowels])
    blend, _ = run_frames(session, audio, mid)
    assert np.median(blend[:, jaw]) > 0.25, "open vowels should open the jaw"

    bilabials = meta["bilabials"]
    assert len(bilabials) >= 5
    mid = np.array([(p["start"] + p["end"]) / 2 for p in bilabials])
    blend, vis = run_frames(session, audio, mid)
    # the fixture is the held-out voice: most (not all) closures must be caught
    closed = (blend[:, close] > 0.4) & (blend[:, jaw] < 0.25)
    assert closed.mean() >= 0.7, f"lips closed on {closed.sum()}/{len(closed)} bilabials"
    assert np.median(blend[:, close]) > 0.5
    assert np.mean(vis.argmax(axis=1) == VISEMES.index("PP")) >= 0.6

    # and the lips are open in the middle of the open vowels around them
    mid = np.array([(p["start"] + p["end"]) / 2 for p in vowels])
    blend, _ = run_frames(session, audio, mid)
    assert np.median(blend[:, close]) < 0.1


def test_committed_graph_is_the_time_major_serving_form(manifest: dict) -> None:
    graph = onnx.load(str(MODEL_DIR / "model.onnx")).graph
    assert manifest["layout"] == "time-major"
    assert not any(node.op_type == "Conv" for node in graph.node)
