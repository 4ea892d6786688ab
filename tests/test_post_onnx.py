"""The ONNX postprocessor (model_repository/a2f_post/1/model.onnx) against the numpy reference,
and the official container's rendering: an `a2f` ensemble with no python-backend step."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from a2f_triton import repository

from gateway.model_info import load_postprocess_module, load_repository_module

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "model_repository"
ONNX_PATH = SOURCE / "a2f_post" / "1" / "model.onnx"
pp = load_postprocess_module(SOURCE)
CHANNELS, VISEMES = pp.load_channels(repository.manifest_path(SOURCE))
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the overridable-initializer notice
    return ort.InferenceSession(str(ONNX_PATH), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def post() -> pp.Postprocessor:
    return pp.Postprocessor(CHANNELS, VISEMES)


def random_parameter(name: str, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Values across the whole range the gateway lets through, and a little past the clamps."""
    width = pp.PARAMETERS[name].width or len(CHANNELS)
    if name == "CLAMP":
        bounds = np.sort(rng.uniform(-0.2, 1.2, (rows, 2)), axis=1)
        return bounds.astype(np.float32)
    low, high = {
        "EMOTION": (0.0, 1.0),
        "EMOTION_STRENGTH": (0.0, 2.0),
        "CHANNEL_MULTIPLIER": (-2.0, 3.0),
        "CHANNEL_OFFSET": (-1.0, 1.0),
        "THRESHOLD": (0.0, 0.5),
    }[name]
    return rng.uniform(low, high, (rows, width)).astype(np.float32)


def raw(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    blendshapes = rng.random((rows, len(CHANNELS)), dtype=np.float32)
    # Some fully rounded lips and some zero weights, so every branch is taken.
    blendshapes[::3, CHANNELS.index("mouthPucker")] = 1.0
    blendshapes[1::4] = 0.0
    return {"BLENDSHAPES_RAW": blendshapes, "VISEMES_RAW": rng.random((rows, 15), np.float32)}


def compare(session: ort.InferenceSession, post: pp.Postprocessor, request: dict) -> None:
    assert post.validate(request) is None
    want = post.apply(post.collate([request]))
    got = session.run(["BLENDSHAPES", "VISEMES"], request)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", [None, *pp.PARAMETERS])
@pytest.mark.parametrize("seed", range(3))
def test_each_parameter_equals_the_numpy_reference(
    session: ort.InferenceSession, post: pp.Postprocessor, name: str | None, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    request = raw(33, rng)
    if name is not None:
        request[name] = random_parameter(name, 33, rng)
    compare(session, post, request)


@pytest.mark.parametrize("seed", range(5))
def test_all_parameters_together_equal_the_numpy_reference(
    session: ort.InferenceSession, post: pp.Postprocessor, seed: int
) -> None:
    rng = np.random.default_rng(100 + seed)
    rows = int(rng.integers(1, 300))
    request = raw(rows, rng) | {n: random_parameter(n, rows, rng) for n in pp.PARAMETERS}
    compare(session, post, request)


def test_a_bad_row_stays_in_its_row(session: ort.InferenceSession) -> None:
    """Without the python postprocessor's rejection, NaN or out-of-range parameters (which the
    gateway refuses) must at least not leak into the other windows of the same run."""
    rng = np.random.default_rng(7)
    request = raw(4, rng) | {n: random_parameter(n, 4, rng) for n in pp.PARAMETERS}
    clean = session.run(["BLENDSHAPES"], request)[0]
    for name in pp.PARAMETERS:
        poisoned = {k: v.copy() for k, v in request.items()}
        poisoned[name][1] = np.nan
        out = session.run(["BLENDSHAPES"], poisoned)[0]
        np.testing.assert_array_equal(np.delete(out, 1, axis=0), np.delete(clean, 1, axis=0))


def test_committed_model_is_built_from_the_current_reference() -> None:
    builder = load_repository_module(SOURCE / "a2f_post" / "build_onnx.py")
    fresh = builder.build_model(CHANNELS, VISEMES).SerializeToString()
    assert fresh == ONNX_PATH.read_bytes(), "run python model_repository/a2f_post/build_onnx.py"


# --- the official container's repository ------------------------------------------------------


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("native") / "repo"
    repository.render_repository(
        SOURCE, target, available_backends={"python", "onnxruntime", "tensorrt"}
    )
    return target


def ensemble_models(target: Path) -> list[str]:
    return re.findall(r'model_name: "(\w+)"', (target / "a2f" / "config.pbtxt").read_text())


def test_official_container_ensemble_has_no_python_backend_step(native: Path) -> None:
    models = ensemble_models(native)
    assert models == ["a2f_net", "a2f_post"]
    for model in models:
        config = (native / model / "config.pbtxt").read_text()
        assert 'platform: "onnxruntime_onnx"' in config, model
        assert "backend:" not in config, model
        assert not (native / model / "1" / "model.py").exists(), model


def test_native_postprocessor_config_matches_its_onnx(
    native: Path, session: ort.InferenceSession
) -> None:
    """What ONNX Runtime's Triton backend checks at load: required inputs are graph inputs,
    optional ones overridable initializers, and optional inputs only without batching."""
    config = (native / "a2f_post" / "config.pbtxt").read_text()
    assert re.search(r"^max_batch_size: 0$", config, re.M)
    declared = re.findall(
        r'\{ name: "(\w+)", data_type: TYPE_FP32, dims: \[ ([-\d, ]+) \](, optional: true)? \}',
        config,
    )
    model = {i.name: i.shape for i in session.get_inputs()}
    initializers = {i.name: i.shape for i in session.get_overridable_initializers()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    for name, dims, optional in declared:
        shape = model.get(name) or initializers.get(name) or outputs.get(name)
        assert shape is not None, name
        assert [-1 if isinstance(d, str) else d for d in shape] == [
            int(d) for d in dims.split(",")
        ], name
        if name in model or name in initializers:
            assert bool(optional) == (name in initializers), name
    assert {n for n, _, _ in declared} == set(model) | set(initializers) | set(outputs)


def test_python_flavours_batch_the_same_onnx(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    repository.render_repository(SOURCE, target, available_backends={"python"})
    config = (target / "a2f_post" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "platform:" not in config
    assert "max_batch_size: 1024" in config and "dims: [ -1" not in config
    assert "dynamic_batching" in config
    assert (target / "a2f_post/1/model.onnx").resolve() == ONNX_PATH
    assert (target / "a2f_post/1/model.py").is_file()
