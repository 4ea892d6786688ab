"""JSON control messages: reference-compatible layout, extension fields, error texts."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from a2f_protocol.messages import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    POSTPROCESS_RANGE,
    SMOOTHING,
    UNIT,
    ChannelGroup,
    EndSession,
    Error,
    FrameRate,
    ProtocolError,
    SessionEnded,
    SessionOptions,
    SessionStarted,
    SetEmotion,
    StartSession,
    decode_client_message,
    decode_json,
    decode_server_message,
    encode_message,
)


def test_reference_start_session_decodes() -> None:
    text = json.dumps(
        {
            "type": "StartSession",
            "model": "_data/generated/audio2face-sdk/samples/data/mark/model.json",
            "fps": 60,
            "options": {"use_gpu_solver": True, "execution_option": "SkinTongue"},
        }
    )
    message = decode_client_message(text)
    assert isinstance(message, StartSession)
    assert message.fps == 60 and message.options == SessionOptions(True, "SkinTongue")
    assert message.blinks is True and message.channels is None


def test_extension_fields_decode() -> None:
    message = decode_client_message(
        b'{"type":"StartSession","frame_rate":{"numerator":30000,"denominator":1001},'
        b'"emotions":{"joy":0.5},"emotion_strength":0.8,"sample_rate":48000,'
        b'"postprocess":{"multipliers":{"jawOpen":1.2},"clamp":[0,0.9],"smoothing":0.3},'
        b'"channels":["jawOpen","aa"],"blinks":false,"seed":7}'
    )
    assert isinstance(message, StartSession)
    assert message.frame_rate == FrameRate(30000, 1001)
    assert message.postprocess is not None and message.postprocess.clamp == (0.0, 0.9)
    assert message.channels == ["jawOpen", "aa"] and message.seed == 7


def test_end_session_and_set_emotion() -> None:
    assert decode_client_message('{"type":"EndSession"}') == EndSession()
    assert decode_client_message('{"type":"EndSession","session_id":"ab"}') == EndSession("ab")
    assert decode_client_message('{"type":"SetEmotion","emotions":{"anger":1}}') == SetEmotion(
        {"anger": 1.0}
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "Invalid JSON"),
        ('{"type":"Dance"}', "`$.type`"),
        ("{}", "missing required field `type`"),
        ('{"type":"StartSession","fps":0}', "`$.fps`"),
        ('{"type":"StartSession","fps":"60"}', "`$.fps`"),
        ('{"type":"StartSession","sample_rate":4000}', "`$.sample_rate`"),
        ('{"type":"StartSession","options":{"turbo":true}}', "unknown field `turbo`"),
        ('{"type":"StartSession","emotions":{"joy":2}}', "emotions.joy must lie in [0, 1]"),
        ('{"type":"StartSession","postprocess":{"smoothing":1}}', "smoothing must lie in [0, 1)"),
        ('{"type":"EndSession","session_id":3}', "`$.session_id`"),
    ],
)
def test_invalid_messages_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(text)
    assert fragment in str(caught.value)


def test_session_started_layout_matches_reference_order() -> None:
    message = SessionStarted(
        session_id="0f",
        model="a2f",
        options=SessionOptions(True, "SkinTongue"),
        sampling_rate=16000,
        frame_rate=FrameRate(60, 1),
        weight_count=1,
        channels=["jawOpen"],
        channel_groups=[ChannelGroup("arkit", 1)],
    )
    data = json.loads(encode_message(message))
    assert list(data) == [
        "type",
        "protocol",
        "session_id",
        "model",
        "options",
        "sampling_rate",
        "frame_rate",
        "weight_count",
        "channels",
        "channel_groups",
    ]
    assert data["protocol"] == {"version": 1}
    assert data["frame_rate"] == {"numerator": 60, "denominator": 1}
    assert decode_server_message(encode_message(message)) == message


def test_server_messages_encode() -> None:
    assert encode_message(Error("x")) == b'{"type":"Error","message":"x"}'
    assert json.loads(encode_message(Error("x", "busy")))["code"] == "busy"
    assert encode_message(SessionEnded("ab")) == b'{"type":"SessionEnded","session_id":"ab"}'


# -- hostile input: bounded before parsing, every number a finite float32 ---------------------


def test_deep_json_is_an_invalid_message_not_a_recursion_error() -> None:
    deep = '{"type":"EndSession","x":' + "[" * 1000 + "]" * 1000 + "}"
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(deep)
    assert caught.value.code == "invalid_message"
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in str(caught.value)
    with pytest.raises(ProtocolError):
        decode_json("[" * 5000)


def test_brackets_inside_strings_do_not_nest() -> None:
    text = '{"type":"EndSession","session_id":"' + '\\"[{' * 500 + '"}'
    assert decode_client_message(text) == EndSession('"[{' * 500)
    allowed = (
        '{"type":"EndSession","x":' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    )
    assert decode_client_message(allowed) == EndSession()


def test_json_over_the_size_limit_is_too_large() -> None:
    text = '{"type":"EndSession","x":"' + "a" * MAX_JSON_BYTES + '"}'
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(text)
    assert caught.value.code == "too_large"
    assert f"exceeds the {MAX_JSON_BYTES}-byte limit" in str(caught.value)


@pytest.mark.parametrize(
    ("message", "text"),
    [({"postprocess": {"multipliers": {"jawOpen": 1e39}}},
      "postprocess.multipliers.jawOpen must lie in [-1000, 1000], got 1e+39"),
     ({"postprocess": {"offsets": {"jawOpen": -1e39}}}, "postprocess.offsets.jawOpen must lie in"),
     ({"postprocess": {"clamp": [0, 3.5e38]}}, "postprocess.clamp must lie in [-1000, 1000]"),
     ({"postprocess": {"threshold": -0.5}}, "postprocess.threshold must lie in [0, 1]"),
     ({"emotions": {"joy": 1e300}}, "emotions.joy must lie in [0, 1]"),
     ({"emotion_strength": -1}, "emotion_strength must lie in [0, 1], got -1.0")],
)  # fmt: skip
def test_out_of_range_numbers_name_the_valid_range(message: dict[str, object], text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client_message(json.dumps({"type": "StartSession", **message}))
    assert caught.value.code == "invalid_message"
    assert text in str(caught.value)


def test_the_same_bounds_hold_for_converted_fields() -> None:
    """The batch API builds a StartSession from text fields: NaN and infinity are refused
    there too (JSON cannot even spell them)."""
    for raw in ("nan", "inf", "-inf", "1e39"):
        with pytest.raises(msgspec.ValidationError, match=r"emotion_strength must lie in \[0, 1\]"):
            msgspec.convert({"emotion_strength": raw}, StartSession, strict=False)
    with pytest.raises(msgspec.ValidationError, match=r"emotions\.joy"):
        msgspec.convert({"emotions": {"joy": float("nan")}}, SetEmotion)


def test_bounds() -> None:
    assert 1.0 in UNIT and 1.0 not in SMOOTHING and float("nan") not in POSTPROCESS_RANGE
    assert str(SMOOTHING) == "[0, 1)" and str(POSTPROCESS_RANGE) == "[-1000, 1000]"
    assert np.isfinite(np.float32(POSTPROCESS_RANGE.high * 2 + POSTPROCESS_RANGE.high))
