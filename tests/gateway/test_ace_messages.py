"""The gRPC driver's messages and statuses: pure, no server."""

from __future__ import annotations

import grpc
import numpy as np
from nvidia_audio2face_3d.messages_pb2 import (
    A2F3DAnimationDataStream,
    EmotionAggregate,
    EmotionWithTimeCode,
)

from gateway.drivers import ace_messages as out


def test_error_kinds_map_to_the_nims_status_codes() -> None:
    assert out.status_of("busy") == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert out.status_of("quota") == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert out.status_of("unauthorized") == grpc.StatusCode.UNAUTHENTICATED
    assert out.status_of("forbidden") == grpc.StatusCode.PERMISSION_DENIED
    assert out.status_of("idle_timeout") == grpc.StatusCode.DEADLINE_EXCEEDED
    assert out.status_of("inference") == grpc.StatusCode.UNAVAILABLE  # Triton lost
    assert out.status_of("shutting_down") == grpc.StatusCode.UNAVAILABLE
    assert out.status_of("invalid_audio") == grpc.StatusCode.INVALID_ARGUMENT
    assert out.status_of(None) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_retry_hint_goes_in_the_text_and_the_trailing_metadata() -> None:
    assert out.status_details("no", None) == ("no", ())
    text, trailing = out.status_details("Server busy", 2.5)
    assert text == "Server busy (retry after 2.5 s)"
    assert trailing == (("retry-after-s", "2.5"),)


def test_a_frame_packs_its_emotions_under_the_url_nvidias_clients_unpack() -> None:
    keyframe = EmotionWithTimeCode(time_code=1.0, emotion={"joy": 1.0})
    message = out.AnimationFrames().frame(
        1.0, np.array([0.5, 0.25], np.float32), b"\1\0", [keyframe], {"joy": 1.0}
    )
    data = message.animation_data
    packed = data.metadata["emotion_aggregate"]
    assert packed.type_url == out.EMOTION_AGGREGATE_URL
    assert packed.type_url.endswith("/nvidia_ace.emotion_aggregate.v1.EmotionAggregate")
    aggregate = EmotionAggregate()
    aggregate.ParseFromString(packed.value)
    assert list(aggregate.input_emotions) == [keyframe]
    assert dict(aggregate.a2f_smoothed_output[0].emotion) == {"joy": 1.0}
    assert not aggregate.a2e_output
    assert list(data.skel_animation.blend_shape_weights[0].values) == [0.5, 0.25]
    assert data.audio.audio_buffer == b"\1\0"


def test_each_frame_of_a_stream_says_only_its_own_time_weights_audio_and_emotions() -> None:
    frames = out.AnimationFrames()
    keyframe = EmotionWithTimeCode(time_code=0.0, emotion={"joy": 1.0})
    first = frames.frame(0.0, np.array([0.5], np.float32), b"\1\0", [keyframe], {"joy": 1.0})
    first_bytes = first.SerializeToString()
    second = frames.frame(1 / 30, np.array([0.25], np.float32), b"\2\0", [], {"anger": 0.5})
    aggregate = EmotionAggregate()
    aggregate.ParseFromString(second.animation_data.metadata["emotion_aggregate"].value)
    assert not aggregate.input_emotions  # the keyframe took effect at the first frame only
    smoothed = aggregate.a2f_smoothed_output
    assert len(smoothed) == 1 and dict(smoothed[0].emotion) == {"anger": 0.5}
    assert smoothed[0].time_code == 1 / 30
    weights = second.animation_data.skel_animation.blend_shape_weights
    assert len(weights) == 1 and list(weights[0].values) == [0.25]
    assert weights[0].time_code == second.animation_data.audio.time_code == 1 / 30
    assert second.animation_data.audio.audio_buffer == b"\2\0"
    # one message, refilled: what was written for the first frame was its own
    first_again = A2F3DAnimationDataStream.FromString(first_bytes)
    assert list(first_again.animation_data.skel_animation.blend_shape_weights[0].values) == [0.5]
