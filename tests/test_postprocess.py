"""The postprocessor's maths (model_repository/a2f_post/1/postprocess.py), without Triton."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from a2f_triton.repository import manifest_path

from gateway.model_info import load_postprocess_module

ROOT = Path(__file__).resolve().parent.parent


pp = load_postprocess_module(ROOT / "model_repository")
CHANNELS, VISEMES = pp.load_channels(manifest_path(ROOT / "model_repository"))
C = {name: i for i, name in enumerate(CHANNELS)}
LIP_SYNC = [
    i for name, i in C.items() if name not in pp.UPPER_FACE_CHANNELS | pp.MOUTH_CORNER_CHANNELS
]


@pytest.fixture(scope="module")
def post() -> pp.Postprocessor:
    return pp.Postprocessor(CHANNELS, VISEMES)


def raw(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    visemes = rng.random((rows, len(VISEMES)), dtype=np.float32)
    return {
        "BLENDSHAPES_RAW": rng.random((rows, len(CHANNELS)), dtype=np.float32) * 0.5,
        "VISEMES_RAW": visemes / visemes.sum(axis=1, keepdims=True),
    }


def run(post: pp.Postprocessor, *requests: dict[str, np.ndarray]) -> np.ndarray:
    for request in requests:
        assert post.validate(request) is None
    return post.apply(post.collate(list(requests)))[0]


def emotion(name: str, rows: int = 1, value: float = 1.0) -> np.ndarray:
    vector = np.zeros((rows, len(pp.EMOTIONS)), np.float32)
    vector[:, pp.EMOTIONS.index(name)] = value
    return vector


def test_emotions_are_in_audio2face_order() -> None:
    assert pp.EMOTIONS == (
        "amazement", "anger", "cheekiness", "disgust", "fear",
        "grief", "joy", "outofbreath", "pain", "sadness",
    )  # fmt: skip
    assert set(pp.EXPRESSION_TABLE) == set(pp.EMOTIONS)


def test_table_names_manifest_channels_only(post: pp.Postprocessor) -> None:
    named = {name for deltas in pp.EXPRESSION_TABLE.values() for name in deltas}
    assert named <= set(CHANNELS)
    assert not post.table[:, LIP_SYNC].any()


def test_table_refuses_lip_sync_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pp.EXPRESSION_TABLE, "joy", {"jawOpen": 0.5})
    with pytest.raises(ValueError, match="jawOpen"):
        pp.Postprocessor(CHANNELS, VISEMES)


def test_neutral_parameters_are_identity(post: pp.Postprocessor) -> None:
    request = raw(5)
    blendshapes, visemes = post.apply(post.collate([request]))
    np.testing.assert_array_equal(blendshapes, request["BLENDSHAPES_RAW"])
    np.testing.assert_array_equal(visemes, request["VISEMES_RAW"])


@pytest.mark.parametrize(
    ("name", "raised"),
    [
        ("joy", ["mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"]),
        ("anger", ["browDownLeft", "browDownRight"]),
        ("sadness", ["browInnerUp", "mouthFrownLeft", "mouthFrownRight"]),
        ("amazement", ["browInnerUp", "eyeWideLeft", "eyeWideRight"]),
    ],
)
def test_emotion_raises_its_expression(
    post: pp.Postprocessor, name: str, raised: list[str]
) -> None:
    request = raw(4)
    neutral = run(post, request)
    moved = run(post, {**request, "EMOTION": emotion(name, 4)})
    for channel in raised:
        assert (moved[:, C[channel]] > neutral[:, C[channel]] + 0.05).all(), channel


def test_emotion_never_touches_lip_sync_and_only_adds(post: pp.Postprocessor) -> None:
    rng = np.random.default_rng(1)
    request = raw(64, seed=1)
    request["EMOTION"] = rng.random((64, len(pp.EMOTIONS)), dtype=np.float32)
    request["EMOTION_STRENGTH"] = rng.random((64, 1), dtype=np.float32)
    neutral = run(post, raw(64, seed=1))
    moved = run(post, request)
    np.testing.assert_array_equal(moved[:, LIP_SYNC], neutral[:, LIP_SYNC])
    assert (moved >= neutral).all() and (moved <= 1.0).all()


def test_emotion_strength_scales_and_zero_is_neutral(post: pp.Postprocessor) -> None:
    request = {**raw(1), "EMOTION": emotion("joy")}
    smile = C["mouthSmileLeft"]
    weak = run(post, {**request, "EMOTION_STRENGTH": np.full((1, 1), 0.3, np.float32)})
    strong = run(post, request)
    off = run(post, {**request, "EMOTION_STRENGTH": np.zeros((1, 1), np.float32)})
    assert off[0, smile] == request["BLENDSHAPES_RAW"][0, smile]
    assert off[0, smile] < weak[0, smile] < strong[0, smile]


def test_rounded_lips_fade_mouth_corner_expressions(post: pp.Postprocessor) -> None:
    request = raw(2)
    request["BLENDSHAPES_RAW"][:, C["mouthPucker"]] = [0.0, 1.0]
    request["BLENDSHAPES_RAW"][:, C["mouthFunnel"]] = 0.0
    out = run(post, {**request, "EMOTION": emotion("joy", 2)})
    gained = out - run(post, request)
    assert gained[0, C["mouthSmileLeft"]] > 0.3
    assert gained[1, C["mouthSmileLeft"]] == 0.0
    assert gained[1, C["cheekSquintLeft"]] > 0.3  # the upper face still shows joy


def test_multiplier_offset_clamp_threshold(post: pp.Postprocessor) -> None:
    request = raw(3)
    base = request["BLENDSHAPES_RAW"]
    width = len(CHANNELS)
    multiplier = np.full((3, width), 1.5, np.float32)
    multiplier[:, C["jawOpen"]] = 0.0
    out = run(post, {**request, "CHANNEL_MULTIPLIER": multiplier})
    np.testing.assert_allclose(out, np.clip(base * multiplier, 0, 1), atol=1e-7)

    offset = np.full((3, width), 0.25, np.float32)
    out = run(post, {**request, "CHANNEL_OFFSET": offset})
    np.testing.assert_allclose(out, np.clip(base + 0.25, 0, 1), atol=1e-7)

    clamp = np.tile(np.float32([0.1, 0.3]), (3, 1))
    out = run(post, {**request, "CLAMP": clamp})
    np.testing.assert_allclose(out, np.clip(base, 0.1, 0.3), atol=1e-7)

    threshold = np.full((3, 1), 0.2, np.float32)
    out = run(post, {**request, "THRESHOLD": threshold})
    np.testing.assert_array_equal(out, np.where(base < 0.2, 0.0, base))


def test_mixed_requests_collate_like_separate_calls(post: pp.Postprocessor) -> None:
    first = {**raw(2, seed=2), "EMOTION": emotion("anger", 2)}
    second = raw(3, seed=3)
    third = {**raw(1, seed=4), "THRESHOLD": np.full((1, 1), 0.3, np.float32)}
    together = run(post, first, second, third)
    apart = np.concatenate([run(post, r) for r in (first, second, third)])
    np.testing.assert_array_equal(together, apart)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EMOTION", np.zeros((2, 9), np.float32), "shape"),
        ("CHANNEL_MULTIPLIER", np.ones((1, len(CHANNELS)), np.float32), "shape"),
        ("CHANNEL_OFFSET", np.full((2, len(CHANNELS)), np.nan, np.float32), "NaN"),
        ("CLAMP", np.float32([[0.5, 0.1], [0, 1]]), "CLAMP"),
        ("THRESHOLD", np.full((2, 1), -0.1, np.float32), "THRESHOLD"),
        ("EMOTION", np.full((2, 10), 1.5, np.float32), "EMOTION"),
        ("EMOTION_STRENGTH", np.full((2, 1), -1.0, np.float32), "EMOTION_STRENGTH"),
    ],
)
def test_validate_names_the_problem(
    post: pp.Postprocessor, name: str, value: np.ndarray, message: str
) -> None:
    error = post.validate({**raw(2), name: value})
    assert error is not None and message in error


def test_validate_rejects_nan_network_output(post: pp.Postprocessor) -> None:
    request = raw(2)
    request["BLENDSHAPES_RAW"][1, 3] = np.nan
    assert "NaN" in (post.validate(request) or "")
