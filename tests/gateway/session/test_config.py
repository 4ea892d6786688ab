"""StartSession validation: server match, channel selection, emotions, postprocess."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from a2f_protocol.messages import (
    FrameRate,
    PostProcess,
    ProtocolError,
    SessionOptions,
    StartSession,
)
from gateway.model_info import ModelInfo
from gateway.session.config import ChannelSelection, ServerProfile, SessionConfig

INFO = ModelInfo.load(Path(__file__).resolve().parents[3] / "model_repository")
PROFILE = ServerProfile("a2f", Fraction(60), SessionOptions(True, "SkinTongue"))


def test_names_come_from_the_model_repository() -> None:
    assert len(INFO.blendshapes) == 52 and INFO.blendshapes[0] == "eyeBlinkLeft"
    assert len(INFO.visemes) == 15
    assert INFO.emotions[0] == "amazement" and len(INFO.emotions) == 10


@pytest.mark.parametrize(
    ("spec", "count", "groups"),
    [(None, 52, [("arkit", 52)]), ("visemes", 15, [("visemes", 15)]),
     ("all", 67, [("arkit", 52), ("visemes", 15)]),
     (["aa", "jawOpen", "tongueOut", "sil"], 4, [("visemes", 1), ("arkit", 2), ("visemes", 1)])],
)  # fmt: skip
def test_channel_selection(spec: object, count: int, groups: list[tuple[str, int]]) -> None:
    selection = ChannelSelection.resolve(spec, INFO)  # type: ignore[arg-type]
    assert len(selection.names) == selection.indices.size == count
    assert [(g.name, g.count) for g in selection.groups] == groups
    every = INFO.blendshapes + INFO.visemes
    assert [every[i] for i in selection.indices] == list(selection.names)


@pytest.mark.parametrize("spec", ["faces", ["jawOpen", "nope"], ["jawOpen", "jawOpen"]])
def test_bad_channel_selection(spec: object) -> None:
    with pytest.raises(ProtocolError):
        ChannelSelection.resolve(spec, INFO)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "request_",
    [StartSession(), StartSession(fps=60), StartSession(frame_rate=FrameRate(120, 2)),
     StartSession(model="./a2f/", options=SessionOptions(True, "skin_tongue"))],
)  # fmt: skip
def test_matching_requests_are_accepted(request_: StartSession) -> None:
    config = SessionConfig.from_start(request_, PROFILE, INFO)
    assert config.parameters == {} and config.blinks and config.input_rate == 16000


@pytest.mark.parametrize(
    ("request_", "text"),
    [(StartSession(model="other"), "Requested model does not match server model"),
     (StartSession(fps=30), "Requested frame_rate 30/1 does not match server 60/1"),
     (StartSession(frame_rate=FrameRate(30000, 1001)), "30000/1001 does not match"),
     (StartSession(options=SessionOptions(False)), "options.use_gpu_solver does not match server"),
     (StartSession(options=SessionOptions(execution_option="Skin")), "execution_option"),
     (StartSession(emotions={"glee": 1.0}), "unknown emotions: glee"),
     (StartSession(postprocess=PostProcess(multipliers={"aa": 2.0})), "unknown blendshape"),
     (StartSession(postprocess=PostProcess(clamp=(1.0, 0.0))), "min <= max")],
)  # fmt: skip
def test_mismatches_are_refused(request_: StartSession, text: str) -> None:
    with pytest.raises(ProtocolError, match=text):
        SessionConfig.from_start(request_, PROFILE, INFO)


def test_parameters_follow_the_model_order() -> None:
    request = StartSession(
        emotions={"joy": 0.5, "amazement": 1.0},
        postprocess=PostProcess(multipliers={"jawOpen": 2.0}, offsets={"tongueOut": 0.1},
                                clamp=(0.0, 0.8), threshold=0.05, smoothing=0.5),
        sample_rate=48000, blinks=False, seed=3,
    )  # fmt: skip
    config = SessionConfig.from_start(request, PROFILE, INFO)
    p = config.parameters
    assert p["EMOTION"][INFO.emotions.index("joy")] == 0.5 and p["EMOTION"][0] == 1.0
    assert p["EMOTION_STRENGTH"].tolist() == [1.0]
    assert p["CHANNEL_MULTIPLIER"][INFO.blendshapes.index("jawOpen")] == 2.0
    assert p["CHANNEL_MULTIPLIER"].sum() == 53.0
    np.testing.assert_allclose(p["CHANNEL_OFFSET"][-1], 0.1)
    np.testing.assert_allclose(p["CLAMP"], [0.0, 0.8])
    assert (config.smoothing, config.input_rate, config.blinks, config.seed) == (
        0.5,
        48000,
        False,
        3,
    )
