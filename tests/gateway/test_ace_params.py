"""The NIM's stream header as the core's StartSession: pure, no server."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from nvidia_ace.audio_pb2 import AudioHeader
from nvidia_audio2face_3d.messages_pb2 import (
    AudioWithEmotionStreamHeader,
    BlendShapeParameters,
    EmotionParameters,
    EmotionPostProcessingParameters,
    EmotionWithTimeCode,
    FaceParameters,
)

from a2f_protocol.messages import ProtocolError
from gateway.drivers.ace_params import keyframe_emotions, nim_name, stream_setup, strongest
from gateway.model_info import ModelInfo

MODEL = ModelInfo.load(Path(__file__).resolve().parents[2] / "model_repository")
FPS = Fraction(30)


def header(rate: int = 16_000, **fields: object) -> AudioWithEmotionStreamHeader:
    audio = AudioHeader(
        audio_format=AudioHeader.AUDIO_FORMAT_PCM,
        channel_count=1,
        samples_per_second=rate,
        bits_per_sample=16,
    )
    return AudioWithEmotionStreamHeader(audio_header=audio, **fields)  # type: ignore[arg-type]


def test_a_bare_header_asks_for_a_plain_session() -> None:
    setup = stream_setup(header(44_100), MODEL, FPS)
    assert setup.sample_rate == 44_100
    assert setup.start.sample_rate == 44_100
    assert setup.start.postprocess is None and setup.start.emotions is None
    assert setup.warnings == ()


def test_the_nims_names_are_the_models_upper_camel_case() -> None:
    assert nim_name("jawOpen") == "JawOpen"
    assert [nim_name(c) for c in MODEL.blendshapes][:2] == ["EyeBlinkLeft", "EyeLookDownLeft"]


def test_strengths_and_offsets_act_on_their_face_regions() -> None:
    face = FaceParameters(
        float_params={
            "skinStrength": 2.0,
            "upperFaceStrength": 0.25,
            "lowerFaceStrength": 3.0,
            "eyelidOpenOffset": 0.1,
            "lipOpenOffset": 0.2,
        }
    )
    blendshapes = BlendShapeParameters(
        bs_weight_multipliers={"JawOpen": 2.0}, bs_weight_offsets={"BrowInnerUp": 0.05}
    )
    setup = stream_setup(header(face_params=face, blendshape_params=blendshapes), MODEL, FPS)
    post = setup.start.postprocess
    assert post is not None
    assert post.multipliers["jawOpen"] == pytest.approx(2.0 * 3.0 * 2.0)
    assert post.multipliers["browInnerUp"] == pytest.approx(2.0 * 0.25)
    assert "tongueOut" not in post.multipliers  # the skin is everything but the tongue
    assert post.offsets == pytest.approx(
        {"eyeBlinkLeft": -0.1, "eyeBlinkRight": -0.1, "mouthClose": -0.2, "browInnerUp": 0.05}
    )
    assert post.clamp == (0.0, 1.0)


def test_smoothing_is_the_longer_time_constant_per_frame() -> None:
    face = FaceParameters(float_params={"upperFaceSmoothing": 0.1, "lowerFaceSmoothing": 0.05})
    setup = stream_setup(header(face_params=face), MODEL, FPS)
    assert setup.start.postprocess is not None
    assert setup.start.postprocess.smoothing == pytest.approx(math.exp(-1 / (0.1 * 30)))
    assert any("upperFaceSmoothing" in warning for warning in setup.warnings)


def test_what_has_no_meaning_here_is_named_in_a_warning() -> None:
    setup = stream_setup(
        header(
            face_params=FaceParameters(float_params={"faceMaskLevel": 0.6, "madeUp": 1.0}),
            blendshape_params=BlendShapeParameters(bs_weight_offsets={"TongueTipUp": 0.1}),
            emotion_params=EmotionParameters(live_transition_time=0.5),
            emotion_post_processing_params=EmotionPostProcessingParameters(emotion_contrast=1.0),
        ),
        MODEL,
        FPS,
    )
    text = " ".join(setup.warnings)
    for name in (
        "faceMaskLevel",
        "madeUp",
        "TongueTipUp",
        "live_transition_time",
        "emotion_contrast",
    ):
        assert name in text


def test_emotions_strength_and_the_strongest_n() -> None:
    setup = stream_setup(
        header(
            emotion_params=EmotionParameters(
                beginning_emotion={"joy": 0.9, "anger": 0.2, "fear": 0.5}
            ),
            emotion_post_processing_params=EmotionPostProcessingParameters(
                emotion_strength=0.7, max_emotions=2
            ),
        ),
        MODEL,
        FPS,
    )
    assert setup.start.emotion_strength == pytest.approx(0.7)
    assert setup.start.emotions == pytest.approx({"joy": 0.9, "anger": 0.0, "fear": 0.5})
    assert strongest({"joy": 0.1}, 0) == {"joy": 0.0}
    keyframe = EmotionWithTimeCode(time_code=1.5, emotion={"joy": 1.0, "pain": 0.5})
    assert keyframe_emotions(keyframe, 1) == {"joy": 1.0, "pain": 0.0}


@pytest.mark.parametrize(
    ("audio", "text"),
    [
        ({"channel_count": 2}, "channel_count"),
        ({"bits_per_sample": 24}, "bits_per_sample"),
        ({"samples_per_second": 8_000}, "samples_per_second"),
        ({"samples_per_second": 192_000}, "samples_per_second"),
    ],
)
def test_audio_the_nim_does_not_take_is_refused(audio: dict[str, int], text: str) -> None:
    given = header()
    for name, value in audio.items():
        setattr(given.audio_header, name, value)
    with pytest.raises(ProtocolError, match=text):
        stream_setup(given, MODEL, FPS)


def test_values_out_of_range_are_refused() -> None:
    with pytest.raises(ProtocolError, match="multipliers"):
        stream_setup(
            header(blendshape_params=BlendShapeParameters(bs_weight_multipliers={"JawOpen": 1e9})),
            MODEL,
            FPS,
        )
    with pytest.raises(ProtocolError, match="emotions"):
        stream_setup(
            header(emotion_params=EmotionParameters(beginning_emotion={"joy": 2.0})), MODEL, FPS
        )
