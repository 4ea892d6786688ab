"""Turn a `StartSession` / `SetEmotion` request into a validated session configuration.

Pure: it checks the request against the server profile and the model's names and raises
`ProtocolError` with the client-facing text when something does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.messages import (
    ChannelGroup,
    PostProcess,
    ProtocolError,
    SessionOptions,
    StartSession,
)
from a2f_protocol.params import CHANNEL_PRESETS, channel_preset, preset_channels
from gateway.model_info import ModelInfo
from gateway.session.level import ENABLED_BY_DEFAULT

DEFAULT_SEED = 0  # fixed, so equal audio and parameters give equal frames in every session


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What the server runs; a StartSession that names something else is refused."""

    model: str
    fps: Fraction
    options: SessionOptions
    normalise_level: bool = ENABLED_BY_DEFAULT  # gateway.session.level before the model


@dataclass(frozen=True, slots=True)
class ChannelSelection:
    """Which outputs a frame carries, as indices into `blendshapes + visemes`."""

    names: tuple[str, ...]
    indices: npt.NDArray[np.intp]
    groups: tuple[ChannelGroup, ...]

    @classmethod
    def resolve(cls, spec: str | Sequence[str] | None, info: ModelInfo) -> ChannelSelection:
        """`"arkit"` (default), `"visemes"`, `"all"` or an explicit list of channel names."""
        if spec is None:
            spec = "arkit"
        if isinstance(spec, str):
            preset = channel_preset(spec)
            if preset is None:
                raise ProtocolError(
                    f"channels must be one of {list(CHANNEL_PRESETS)} or a list of channel names",
                    "invalid_channels",
                )
            names = preset_channels(preset, info.blendshapes, info.visemes)
        else:
            names = tuple(spec)
        everything = preset_channels("all", info.blendshapes, info.visemes)
        position = {name: i for i, name in enumerate(everything)}
        unknown = [n for n in names if n not in position]
        if unknown:
            raise ProtocolError(f"unknown channels: {', '.join(unknown)}", "invalid_channels")
        if len(set(names)) != len(names):
            raise ProtocolError("channels must not repeat a name", "invalid_channels")
        indices = np.array([position[n] for n in names], dtype=np.intp)
        return cls(names, indices, _groups(indices, len(info.blendshapes)))


def _groups(indices: npt.NDArray[np.intp], blendshape_count: int) -> tuple[ChannelGroup, ...]:
    # Runs of consecutive weights from one output, in weight order.
    groups: list[ChannelGroup] = []
    for index in indices.tolist():
        name = "arkit" if index < blendshape_count else "visemes"
        if groups and groups[-1].name == name:
            groups[-1].count += 1
        else:
            groups.append(ChannelGroup(name, 1))
    return tuple(groups)


def emotion_parameters(
    emotions: Mapping[str, float], strength: float | None, info: ModelInfo
) -> dict[str, npt.NDArray[np.float32]]:
    """EMOTION / EMOTION_STRENGTH tensors (one row) for the given `{name: weight}`."""
    unknown = sorted(set(emotions) - set(info.emotions))
    if unknown:
        raise ProtocolError(
            f"unknown emotions: {', '.join(unknown)} (known: {', '.join(info.emotions)})",
            "invalid_emotion",
        )
    vector = np.array([emotions.get(name, 0.0) for name in info.emotions], dtype=np.float32)
    return {
        "EMOTION": vector,
        "EMOTION_STRENGTH": np.array([1.0 if strength is None else strength], np.float32),
    }


def postprocess_parameters(
    post: PostProcess, info: ModelInfo
) -> dict[str, npt.NDArray[np.float32]]:
    """CHANNEL_MULTIPLIER / CHANNEL_OFFSET / CLAMP / THRESHOLD tensors (one row each)."""
    index = {name: i for i, name in enumerate(info.blendshapes)}
    unknown = sorted((set(post.multipliers) | set(post.offsets)) - set(index))
    if unknown:
        raise ProtocolError(
            f"postprocess names unknown blendshape channels: {', '.join(unknown)}",
            "invalid_postprocess",
        )
    low, high = post.clamp
    if low > high:
        raise ProtocolError(
            "postprocess.clamp must be [min, max] with min <= max", "invalid_postprocess"
        )
    multiplier = np.ones(len(index), np.float32)
    offset = np.zeros(len(index), np.float32)
    for name, value in post.multipliers.items():
        multiplier[index[name]] = value
    for name, value in post.offsets.items():
        offset[index[name]] = value
    return {
        "CHANNEL_MULTIPLIER": multiplier,
        "CHANNEL_OFFSET": offset,
        "CLAMP": np.array([low, high], np.float32),
        "THRESHOLD": np.array([post.threshold], np.float32),
    }


def neutral_parameters(info: ModelInfo) -> dict[str, npt.NDArray[np.float32]]:
    """Every optional ensemble input at the value that changes nothing: the rows of a session
    without parameters, in a request it shares with sessions that have some."""
    return emotion_parameters({}, None, info) | postprocess_parameters(PostProcess(), info)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a session needs, validated."""

    fps: Fraction
    input_rate: int
    channels: ChannelSelection
    parameters: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    smoothing: float = 0.0
    blinks: bool = True
    seed: int = DEFAULT_SEED
    normalise_level: bool = ENABLED_BY_DEFAULT
    idle: bool = False  # frames go on through pauses (`gateway.session.idle`)

    @classmethod
    def from_start(
        cls, request: StartSession, profile: ServerProfile, info: ModelInfo
    ) -> SessionConfig:
        check_matches_server(request, profile)
        parameters: dict[str, npt.NDArray[np.float32]] = {}
        if request.emotions is not None or request.emotion_strength is not None:
            parameters |= emotion_parameters(request.emotions or {}, request.emotion_strength, info)
        post = request.postprocess
        if post is not None:
            parameters |= postprocess_parameters(post, info)
        return cls(
            fps=profile.fps,
            input_rate=request.sample_rate or MODEL_SAMPLE_RATE,
            channels=ChannelSelection.resolve(request.channels, info),
            parameters=parameters,
            smoothing=post.smoothing if post is not None else 0.0,
            blinks=request.blinks,
            seed=DEFAULT_SEED if request.seed is None else request.seed,
            idle=request.idle,
            normalise_level=profile.normalise_level,
        )


def check_matches_server(request: StartSession, profile: ServerProfile) -> None:
    """The reference server's rule: fields a client names must equal the server's."""
    if request.model is not None and _canonical_path(request.model) != _canonical_path(
        profile.model
    ):
        raise ProtocolError("Requested model does not match server model", "mismatch")
    wanted = request.requested_frame_rate
    # Compared as rationals: 120/2 is the server's 60/1.
    if wanted is not None and wanted != profile.fps:
        raise ProtocolError(
            f"Requested frame_rate {wanted.numerator}/{wanted.denominator} does not match server "
            f"{profile.fps.numerator}/{profile.fps.denominator}",
            "mismatch",
        )
    options, served = request.options, profile.options
    if options is None:
        return
    if options.use_gpu_solver is not None and options.use_gpu_solver != served.use_gpu_solver:
        raise ProtocolError("options.use_gpu_solver does not match server", "mismatch")
    if options.execution_option is not None and _canonical_option(
        options.execution_option
    ) != _canonical_option(served.execution_option or ""):
        raise ProtocolError("options.execution_option does not match server", "mismatch")


def _canonical_path(path: str) -> str:
    text = path.strip().replace("\\", "/").rstrip("/")
    return text.removeprefix("./")


def _canonical_option(option: str) -> str:
    return "".join(c for c in option.lower() if c.isalnum())
