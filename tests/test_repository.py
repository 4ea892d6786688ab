"""The model repository on the real embedded tritonserver: a2f_net, a2f_post, the a2f ensemble
and a2f_span (server-side framing through the ensemble)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as grpcclient
from a2f_triton import repository
from tritonclient.utils import InferenceServerException

from gateway.model_info import load_postprocess_module

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "model_repository"
SERVED = repository.network_directory(SOURCE)  # the network version served by default
MANIFEST = json.loads((SERVED / repository.MANIFEST_NAME).read_text())
pp = load_postprocess_module(SOURCE)
WINDOW = MANIFEST["window"]
N_CHANNELS = len(MANIFEST["outputs"]["BLENDSHAPES"]["channels"])
N_VISEMES = len(MANIFEST["outputs"]["VISEMES"]["channels"])
CHANNEL = {name: i for i, name in enumerate(MANIFEST["outputs"]["BLENDSHAPES"]["channels"])}


@pytest_asyncio.fixture(scope="module")
async def client(triton) -> AsyncIterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    await client.close()


def audio(rows: int, seed: int = 0) -> np.ndarray:
    # Loud enough that the network's speech channels move away from 0.
    return (np.random.default_rng(seed).standard_normal((rows, WINDOW)) * 0.1).astype(np.float32)


async def infer(
    client: grpcclient.InferenceServerClient, windows: np.ndarray, **params: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    inputs = []
    for name, value in {"AUDIO": windows, **params}.items():
        tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(value, np.float32))
        inputs.append(tensor)
    result = await client.infer("a2f", inputs)
    return result.as_numpy("BLENDSHAPES"), result.as_numpy("VISEMES")


def per_channel(rows: int, value: float | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float32), (rows, N_CHANNELS)).copy()


def per_window(rows: int, *values: float) -> np.ndarray:
    return np.tile(np.float32(values), (rows, 1))


async def test_all_models_ready(client: grpcclient.InferenceServerClient) -> None:
    for model in ("a2f_net", "a2f_post", "a2f", "a2f_span"):
        assert await client.is_model_ready(model), model


async def test_metadata_matches_manifest(client: grpcclient.InferenceServerClient) -> None:
    for model in ("a2f", "a2f_net"):
        meta = await client.get_model_metadata(model, as_json=True)
        inputs = {t["name"]: t for t in meta["inputs"]}
        outputs = {t["name"]: t for t in meta["outputs"]}
        for name, spec in MANIFEST["inputs"].items():
            assert inputs[name]["datatype"] == spec["dtype"]
            assert [int(d) for d in inputs[name]["shape"]] == [-1, *spec["shape"]]
        assert set(outputs) == set(MANIFEST["outputs"])
        for name, spec in MANIFEST["outputs"].items():
            assert outputs[name]["datatype"] == spec["dtype"]
            assert [int(d) for d in outputs[name]["shape"]] == [-1, len(spec["channels"])]
    meta = await client.get_model_metadata("a2f", as_json=True)
    widths = {t["name"]: int(t["shape"][1]) for t in meta["inputs"] if t["name"] != "AUDIO"}
    assert widths == {name: spec.width or N_CHANNELS for name, spec in pp.PARAMETERS.items()}


async def test_outputs_are_weights_and_viseme_distributions(
    client: grpcclient.InferenceServerClient,
) -> None:
    blendshapes, visemes = await infer(client, audio(4))
    assert blendshapes.shape == (4, N_CHANNELS) and visemes.shape == (4, N_VISEMES)
    assert ((blendshapes >= 0) & (blendshapes <= 1)).all()
    np.testing.assert_allclose(visemes.sum(axis=1), 1.0, atol=1e-5)


async def test_n_windows_in_one_request_equal_n_single_requests(
    client: grpcclient.InferenceServerClient,
) -> None:
    rows = 12
    rng = np.random.default_rng(7)
    windows = audio(rows, seed=7)
    params = {
        "EMOTION": rng.random((rows, len(pp.EMOTIONS)), dtype=np.float32),
        "EMOTION_STRENGTH": rng.random((rows, 1), dtype=np.float32),
        "CHANNEL_MULTIPLIER": rng.uniform(0.5, 1.5, (rows, N_CHANNELS)).astype(np.float32),
        "CHANNEL_OFFSET": rng.uniform(-0.1, 0.1, (rows, N_CHANNELS)).astype(np.float32),
    }
    together = await infer(client, windows, **params)
    singles = [
        await infer(client, windows[i : i + 1], **{k: v[i : i + 1] for k, v in params.items()})
        for i in range(rows)
    ]
    for output, merged in enumerate(together):
        apart = np.concatenate([single[output] for single in singles])
        np.testing.assert_allclose(merged, apart, atol=1e-5, rtol=0)


async def infer_span(
    client: grpcclient.InferenceServerClient,
    span: np.ndarray,
    centres: np.ndarray,
    **params: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    inputs = []
    for name, value, dtype in [
        ("AUDIO_SPAN", span, "FP32"),
        ("FRAME_CENTERS", centres, "INT64"),
    ] + [(name, value, "FP32") for name, value in params.items()]:
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(
            np.ascontiguousarray(value, np.float32 if dtype == "FP32" else np.int64)
        )
        inputs.append(tensor)
    result = await client.infer("a2f_span", inputs)
    return result.as_numpy("BLENDSHAPES"), result.as_numpy("VISEMES")


async def test_span_equals_its_windows_through_the_ensemble(
    client: grpcclient.InferenceServerClient,
) -> None:
    """Server-side framing: windows centred on FRAME_CENTERS, zeros outside the span; more
    frames than one sub-batch (256), irregular steps and both edges."""
    offset = MANIFEST["offset"]
    rng = np.random.default_rng(3)
    span = (rng.standard_normal(300 * 267 + 5000) * 0.1).astype(np.float32)
    centres = np.sort(rng.integers(0, span.size + 1, 300)).astype(np.int64)
    centres[:2], centres[-1] = (0, 100), span.size
    padded = np.concatenate([np.zeros(offset, np.float32), span, np.zeros(WINDOW, np.float32)])
    windows = np.stack([padded[c : c + WINDOW] for c in centres])
    params = {
        "EMOTION": rng.random(len(pp.EMOTIONS), dtype=np.float32),
        "CHANNEL_MULTIPLIER": rng.uniform(0.5, 1.5, N_CHANNELS).astype(np.float32),
        "CLAMP": np.float32([0.0, 0.9]),
    }
    spanned = await infer_span(client, span, centres, **params)
    expected = await infer(
        client, windows, **{k: np.tile(v, (len(centres), 1)) for k, v in params.items()}
    )
    for got, want in zip(spanned, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


async def test_span_with_centres_outside_it_fails_alone(
    client: grpcclient.InferenceServerClient,
) -> None:
    span = audio(1)[0]
    with pytest.raises(InferenceServerException, match="FRAME_CENTERS"):
        await infer_span(client, span, np.int64([0, span.size + 1]))
    blendshapes, visemes = await infer_span(client, span, np.int64([0, span.size]))
    assert blendshapes.shape == (2, N_CHANNELS) and visemes.shape == (2, N_VISEMES)


async def test_dynamic_batcher_merges_concurrent_clients(
    client: grpcclient.InferenceServerClient,
) -> None:
    async def counts() -> tuple[int, int]:
        stats = await client.get_inference_statistics("a2f_net", as_json=True)
        model = stats["model_stats"][0]
        return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

    inferences_before, executions_before = await counts()
    clients = 64
    for _ in range(3):
        await asyncio.gather(*(infer(client, audio(1, seed=i)) for i in range(clients)))
    inferences_after, executions_after = await counts()
    inferences = inferences_after - inferences_before
    executions = executions_after - executions_before
    # Gateways sharing this server add their health probes' one-window inferences.
    assert inferences >= 3 * clients
    assert executions * 4 <= inferences, f"{executions} executions for {inferences} windows"


async def test_multiplier_and_offset(client: grpcclient.InferenceServerClient) -> None:
    windows = audio(3, seed=1)
    base, _ = await infer(client, windows)
    multiplier = per_channel(3, np.linspace(0.0, 2.0, N_CHANNELS))
    out, _ = await infer(client, windows, CHANNEL_MULTIPLIER=multiplier)
    np.testing.assert_allclose(out, np.clip(base * multiplier, 0, 1), atol=1e-6)
    offset = per_channel(3, np.linspace(-0.5, 0.5, N_CHANNELS))
    out, _ = await infer(client, windows, CHANNEL_MULTIPLIER=multiplier, CHANNEL_OFFSET=offset)
    np.testing.assert_allclose(out, np.clip(base * multiplier + offset, 0, 1), atol=1e-6)


async def test_clamp(client: grpcclient.InferenceServerClient) -> None:
    windows = audio(3, seed=2)
    base, _ = await infer(client, windows)
    offset = per_channel(3, 0.3)
    out, _ = await infer(client, windows, CHANNEL_OFFSET=offset, CLAMP=per_window(3, 0.35, 0.6))
    np.testing.assert_allclose(out, np.clip(base + 0.3, 0.35, 0.6), atol=1e-6)
    assert out.min() >= np.float32(0.35) and out.max() <= np.float32(0.6)


async def test_threshold(client: grpcclient.InferenceServerClient) -> None:
    windows = audio(2, seed=3)
    base, _ = await infer(client, windows)
    ramp = per_channel(2, np.linspace(0.0, 0.8, N_CHANNELS))
    shifted = np.clip(base + ramp, 0, 1)
    out, _ = await infer(client, windows, CHANNEL_OFFSET=ramp, THRESHOLD=per_window(2, 0.4))
    np.testing.assert_allclose(out, np.where(shifted < 0.4, 0.0, shifted), atol=1e-6)
    assert (out == 0).any() and (out >= 0.4).any()


async def test_emotion_blends_expression_and_keeps_lip_sync(
    client: grpcclient.InferenceServerClient,
) -> None:
    windows = audio(2, seed=4)
    base, _ = await infer(client, windows)
    joy = np.zeros((2, len(pp.EMOTIONS)), np.float32)
    joy[:, pp.EMOTIONS.index("joy")] = 1.0
    out, _ = await infer(client, windows, EMOTION=joy)
    for name in ("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"):
        assert (out[:, CHANNEL[name]] > base[:, CHANNEL[name]] + 0.1).all(), name
    lip_sync = [CHANNEL[n] for n in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")]
    np.testing.assert_array_equal(out[:, lip_sync], base[:, lip_sync])
    silent, _ = await infer(client, windows, EMOTION=joy, EMOTION_STRENGTH=per_window(2, 0.0))
    np.testing.assert_array_equal(silent, base)


@pytest.mark.parametrize(
    ("windows", "params"),
    [
        pytest.param(np.zeros((1, WINDOW // 2), np.float32), {}, id="short-window"),
        pytest.param(np.full((2, WINDOW), np.nan, np.float32), {}, id="nan-audio"),
        pytest.param(audio(2), {"CHANNEL_OFFSET": per_channel(2, np.nan)}, id="nan-offset"),
        pytest.param(audio(2), {"CLAMP": per_window(2, 0.8, 0.2)}, id="inverted-clamp"),
        pytest.param(audio(2), {"EMOTION": np.zeros((2, 3), np.float32)}, id="emotion-width"),
        pytest.param(audio(2), {"THRESHOLD": per_window(3, 0.1)}, id="rows-mismatch"),
    ],
)
async def test_malformed_request_fails_alone(
    client: grpcclient.InferenceServerClient, windows: np.ndarray, params: dict[str, np.ndarray]
) -> None:
    good = [infer(client, audio(1, seed=i)) for i in range(6)]
    results = await asyncio.gather(infer(client, windows, **params), *good, return_exceptions=True)
    assert isinstance(results[0], InferenceServerException), results[0]
    assert not any(isinstance(r, BaseException) for r in results[1:])
    blendshapes, _ = await infer(client, audio(1))
    assert blendshapes.shape == (1, N_CHANNELS)


# --- rendering (no server) -------------------------------------------------------------


def config(target: Path, model: str) -> str:
    return (target / model / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    ("backends", "has_plan", "expected"),
    [
        ({"python"}, False, "python"),
        ({"python", "onnxruntime"}, False, "onnxruntime"),
        ({"python", "onnxruntime", "tensorrt"}, False, "onnxruntime"),
        ({"python", "onnxruntime", "tensorrt"}, True, "tensorrt"),
    ],
)
def test_auto_flavour_follows_backends(
    tmp_path: Path, backends: set[str], has_plan: bool, expected: str
) -> None:
    version = tmp_path / "a2f_net" / "1"
    version.mkdir(parents=True)
    for name in (repository.NETWORK_WEIGHTS, repository.MANIFEST_NAME):
        shutil.copy2(SERVED / name, version / name)
    if has_plan:
        (version / "model.plan").touch()
    assert repository.choose_flavour("auto", backends, tmp_path) == expected


def test_forced_flavour_needs_its_backend() -> None:
    with pytest.raises(ValueError, match="onnxruntime"):
        repository.choose_flavour("onnxruntime", {"python"}, SOURCE)


def test_python_flavour_render(tmp_path: Path) -> None:
    before = sorted(p.relative_to(SOURCE) for p in SOURCE.rglob("*"))
    target = tmp_path / "repo"
    repository.render_repository(
        SOURCE, target, available_backends={"python"}, instances=3, ort_threads=2,
        dynamic_batching=False,
    )  # fmt: skip
    net = config(target, "a2f_net")
    assert 'backend: "python"' in net and "platform:" not in net
    assert "count: 3, kind: KIND_CPU" in net
    assert '"intra_op_thread_count", value: { string_value: "2" }' in net
    assert "dynamic_batching" not in net and "dynamic_batching" not in config(target, "a2f_post")
    served = target / "a2f_net" / SERVED.name
    assert (served / "model.py").is_file()
    assert (served / "model.onnx").resolve() == SERVED / "model.onnx"
    assert not (target / "a2f_net/python_flavour").exists()
    assert sorted(p.relative_to(SOURCE) for p in SOURCE.rglob("*")) == before


def test_onnxruntime_flavour_render(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    repository.render_repository(
        SOURCE, target, available_backends={"python", "onnxruntime"}, instances=2,
        ort_threads=1, max_queue_delay_us=750, trt_fp16=True,
    )  # fmt: skip
    net = config(target, "a2f_net")
    assert 'platform: "onnxruntime_onnx"' in net and "count: 2, kind: KIND_AUTO" in net
    assert 'name : "tensorrt"' in net and '"precision_mode" value: "FP16"' in net
    assert "max_queue_delay_microseconds: 750" in net
    assert not (target / "a2f_net" / SERVED.name / "model.py").exists()
    # Rendering again replaces the earlier rendering; a foreign directory is refused.
    repository.render_repository(SOURCE, target, available_backends={"onnxruntime"})
    foreign = tmp_path / "foreign"
    (foreign / "keep").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        repository.render_repository(SOURCE, foreign, available_backends={"onnxruntime"})
