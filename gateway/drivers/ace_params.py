"""The NIM's stream header and emotion keyframes as the session core's requests.

NVIDIA's Audio2Face-3D NIM configures a stream with one `AudioWithEmotionStreamHeader`: the
audio format, face parameters (strengths, offsets and smoothing per face region), blendshape
multipliers and offsets by UpperCamelCase name, emotion parameters and emotion
post-processing parameters. This module turns that into the `StartSession` the connection core
validates, plus the names of what it could not honour (sent to the client as a `Status`
WARNING: nothing is ignored silently), and keyframes into `SetEmotion`s.

Face regions, for the NIM's per-region strengths: the upper face is the eyes, brows, cheek
squints and nose; the lower face the jaw, mouth and cheek puff; the skin every channel but the
tongue. This model has one tongue shape (`TongueOut`); the NIM's other tongue shapes and its
tongue offsets have nothing to act on here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from nvidia_ace.audio_pb2 import AudioHeader
from nvidia_audio2face_3d.messages_pb2 import AudioWithEmotionStreamHeader, EmotionWithTimeCode

from a2f_protocol.messages import POSTPROCESS_RANGE, PostProcess, ProtocolError, StartSession
from gateway.model_info import ModelInfo

MIN_SAMPLE_RATE = 16_000  # the NIM's accepted input rates
MAX_SAMPLE_RATE = 144_000
BITS_PER_SAMPLE = 16

UPPER_FACE = ("eye", "brow", "cheekSquint", "noseSneer")
LOWER_FACE = ("jaw", "mouth", "cheekPuff")
TONGUE = ("tongue",)
EYELIDS = ("eyeBlinkLeft", "eyeBlinkRight")
LIPS_CLOSED = "mouthClose"

# Face parameters the NIM documents that act on nothing a blendshape model outputs.
MESH_ONLY = {
    "faceMaskLevel": "the upper/lower face boundary is fixed by channel here",
    "faceMaskSoftness": "the upper/lower face boundary is fixed by channel here",
    "tongueHeightOffset": "no tongue mesh (TongueOut is the only tongue shape)",
    "tongueDepthOffset": "no tongue mesh (TongueOut is the only tongue shape)",
}
# Emotion settings of the NIM's Audio2Emotion stage, which this service does not have: the
# emotions a stream gets are the ones its client gives.
AUDIO2EMOTION_ONLY = (
    "emotion_contrast",
    "live_blend_coef",
    "enable_preferred_emotion",
    "preferred_emotion_strength",
)


# Our extension among the face parameters (`face_params.integer_params`): 1 asks for idle
# frames through the stream's pauses (the WebSocket's StartSession `idle`), 0 or absent not.
IDLE_FRAMES = "idleFrames"


def nim_name(channel: str) -> str:
    """The NIM's spelling of an ARKit channel: `jawOpen` -> `JawOpen`."""
    return channel[:1].upper() + channel[1:]


@dataclass(frozen=True, slots=True)
class StreamSetup:
    """What a stream header asks for, as the core's request, and what it could not honour."""

    start: StartSession
    sample_rate: int
    max_emotions: int | None
    warnings: tuple[str, ...]


def check_audio_header(header: AudioHeader) -> int:
    """The header's sample rate, or `ProtocolError` for audio the NIM does not take."""
    if header.audio_format != AudioHeader.AUDIO_FORMAT_PCM:
        raise ProtocolError("audio_header.audio_format must be AUDIO_FORMAT_PCM", "invalid_audio")
    if header.channel_count != 1:
        raise ProtocolError(
            f"audio_header.channel_count must be 1 (mono), got {header.channel_count}",
            "invalid_audio",
        )
    if header.bits_per_sample != BITS_PER_SAMPLE:
        raise ProtocolError(
            f"audio_header.bits_per_sample must be {BITS_PER_SAMPLE}, got {header.bits_per_sample}",
            "invalid_audio",
        )
    rate = int(header.samples_per_second)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            f"audio_header.samples_per_second must lie in [{MIN_SAMPLE_RATE}, "
            f"{MAX_SAMPLE_RATE}], got {rate}",
            "invalid_audio",
        )
    return rate


def stream_setup(
    header: AudioWithEmotionStreamHeader, model: ModelInfo, fps: Fraction
) -> StreamSetup:
    """The session a header asks for; `ProtocolError` for what cannot be served at all."""
    rate = check_audio_header(header.audio_header)
    warnings: list[str] = []
    names = {nim_name(channel): channel for channel in model.blendshapes}
    multipliers = dict.fromkeys(model.blendshapes, 1.0)
    offsets = dict.fromkeys(model.blendshapes, 0.0)
    idle = _idle_frames(header)
    smoothing = _face_parameters(header, multipliers, offsets, fps, warnings)
    unknown: list[str] = []
    params = header.blendshape_params
    for given, into in (
        (params.bs_weight_multipliers, multipliers),
        (params.bs_weight_offsets, offsets),
    ):
        for name, value in sorted(given.items()):
            channel = names.get(name)
            if channel is None:
                unknown.append(name)
            elif into is multipliers:
                into[channel] *= value
            else:
                into[channel] += value
    if unknown:
        warnings.append(
            "blendshape_params name shapes this model does not output (its tongue is "
            f"TongueOut alone): {', '.join(sorted(set(unknown)))}"
        )
    clamp = PostProcess().clamp
    if params.HasField("enable_clamping_bs_weight") and not params.enable_clamping_bs_weight:
        clamp = (POSTPROCESS_RANGE.low, POSTPROCESS_RANGE.high)
    postprocess: PostProcess | None = None
    changed = (
        {c: m for c, m in multipliers.items() if m != 1.0},
        {c: o for c, o in offsets.items() if o != 0.0},
    )
    if changed[0] or changed[1] or clamp != PostProcess().clamp or smoothing:
        try:
            postprocess = PostProcess(changed[0], changed[1], clamp, smoothing=smoothing)
        except ValueError as exc:  # a bound of PostProcess: the client's values, named
            raise ProtocolError(str(exc), "invalid_postprocess") from exc
    emotions = dict(header.emotion_params.beginning_emotion) or None
    if header.emotion_params.HasField("live_transition_time"):
        warnings.append(
            "emotion_params.live_transition_time: emotions change at their time code here"
        )
    post = header.emotion_post_processing_params
    ignored = [name for name in AUDIO2EMOTION_ONLY if post.HasField(name)]
    if ignored:
        warnings.append(
            "no Audio2Emotion here, emotions are the ones the stream gives: "
            f"{', '.join(ignored)} have nothing to act on"
        )
    max_emotions = post.max_emotions if post.HasField("max_emotions") else None
    if max_emotions is not None and max_emotions < 0:
        raise ProtocolError("max_emotions must not be negative", "invalid_emotion")
    strength = post.emotion_strength if post.HasField("emotion_strength") else None
    try:
        start = StartSession(
            sample_rate=rate,
            emotions=None if emotions is None else strongest(emotions, max_emotions),
            emotion_strength=strength,
            postprocess=postprocess,
            idle=idle,
        )
    except ValueError as exc:
        raise ProtocolError(str(exc), "invalid_emotion") from exc
    return StreamSetup(start, rate, max_emotions, tuple(warnings))


def _face_parameters(
    header: AudioWithEmotionStreamHeader,
    multipliers: dict[str, float],
    offsets: dict[str, float],
    fps: Fraction,
    warnings: list[str],
) -> float:
    """Applies the face parameters to `multipliers`/`offsets`; returns the smoothing factor."""
    face = header.face_params
    floats = dict(face.float_params)
    strengths: dict[str, Callable[[str], bool]] = {
        "skinStrength": lambda c: not c.startswith(TONGUE),
        "upperFaceStrength": lambda c: c.startswith(UPPER_FACE),
        "lowerFaceStrength": lambda c: c.startswith(LOWER_FACE),
        "tongueStrength": lambda c: c.startswith(TONGUE),
        "blinkStrength": lambda c: c in EYELIDS,
    }
    for name, applies in strengths.items():
        if name in floats:
            value = floats.pop(name)
            for channel in multipliers:
                if applies(channel):
                    multipliers[channel] *= value
    if "eyelidOpenOffset" in floats:  # an open eyelid is a blink weight going down
        value = floats.pop("eyelidOpenOffset")
        for channel in EYELIDS:
            offsets[channel] -= value
    if "lipOpenOffset" in floats:
        offsets[LIPS_CLOSED] -= floats.pop("lipOpenOffset")
    # The NIM smooths each region with a time constant in seconds; one exponential smoothing
    # for the whole face here, with the longer of the two.
    constants = [floats.pop(n) for n in ("upperFaceSmoothing", "lowerFaceSmoothing") if n in floats]
    smoothing = 0.0
    if constants:
        if any(not math.isfinite(t) or t < 0 for t in constants):
            raise ProtocolError("face smoothing time constants must be >= 0", "invalid_postprocess")
        longest = max(constants)
        smoothing = math.exp(-1.0 / (longest * float(fps))) if longest > 0 else 0.0
        if len(set(constants)) > 1:
            warnings.append(
                f"upperFaceSmoothing/lowerFaceSmoothing: one smoothing for the whole face "
                f"here, with the longer time constant ({longest:g} s)"
            )
    mesh = sorted(name for name in floats if name in MESH_ONLY)
    if mesh:
        warnings.append(
            "face_params with nothing to act on in a blendshape model: "
            + "; ".join(f"{name} ({MESH_ONLY[name]})" for name in mesh)
        )
    unknown = (
        sorted(set(floats) - set(MESH_ONLY))
        + sorted(set(face.integer_params) - {IDLE_FRAMES})
        + sorted(face.float_array_params)
    )
    if unknown:
        warnings.append(f"face_params not known here: {', '.join(unknown)}")
    return smoothing


def _idle_frames(header: AudioWithEmotionStreamHeader) -> bool:
    value = int(header.face_params.integer_params.get(IDLE_FRAMES, 0))
    if value not in (0, 1):
        raise ProtocolError(f"face_params {IDLE_FRAMES} must be 0 or 1, got {value}")
    return value == 1


def strongest(emotions: dict[str, float], limit: int | None) -> dict[str, float]:
    """At most `limit` emotions, the strongest (the NIM's `max_emotions`); the rest are 0."""
    if limit is None or len([w for w in emotions.values() if w]) <= limit:
        return emotions
    kept = sorted(emotions, key=lambda name: emotions[name], reverse=True)[:limit]
    return {name: (weight if name in kept else 0.0) for name, weight in emotions.items()}


def keyframe_emotions(keyframe: EmotionWithTimeCode, max_emotions: int | None) -> dict[str, float]:
    """A keyframe's emotions, limited as the header says."""
    if not math.isfinite(keyframe.time_code) or keyframe.time_code < 0:
        raise ProtocolError(
            f"EmotionWithTimeCode.time_code must be a time >= 0, got {keyframe.time_code}",
            "invalid_emotion",
        )
    return strongest(dict(keyframe.emotion), max_emotions)
