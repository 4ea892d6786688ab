"""The text syntax of session parameters, shared by the batch API's query fields and the CLI.

`channels=arkit|visemes|all|name,name,...`, `emotions=joy:0.8,anger:0.1` (or a JSON object),
`frame_rate=30000/1001`. Each parser raises `ValueError` with a message fit for a user.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Final, Literal

from a2f_protocol.messages import ProtocolError, decode_json

ChannelPreset = Literal["arkit", "visemes", "all"]
CHANNEL_PRESETS: Final[tuple[ChannelPreset, ...]] = ("arkit", "visemes", "all")
"""Named channel sets: the 52 ARKit blendshapes, the 15 visemes, or both (ARKit first)."""

EMOTIONS_SYNTAX = "joy:0.8,anger:0.2 or a JSON object"


def preset_channels(
    preset: ChannelPreset, blendshapes: Sequence[str], visemes: Sequence[str]
) -> tuple[str, ...]:
    """The channel names a preset stands for, in weight order."""
    if preset == "arkit":
        return tuple(blendshapes)
    if preset == "visemes":
        return tuple(visemes)
    return (*blendshapes, *visemes)


def channel_preset(name: str) -> ChannelPreset | None:
    """`name` as a preset, or None when it names none."""
    return next((preset for preset in CHANNEL_PRESETS if preset == name), None)


def parse_channels(text: str) -> ChannelPreset | list[str]:
    """A preset name as is, anything else as a comma-separated list of channel names."""
    spec = text.strip()
    preset = channel_preset(spec)
    if preset is not None:
        return preset
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError("channels must be arkit, visemes, all or name,name,...")
    return names


def parse_emotions(text: str) -> dict[str, float]:
    """`joy:0.8,anger:0.2` or a JSON object of `{emotion: weight}`."""
    spec = text.strip()
    if spec.startswith("{"):
        try:
            value = decode_json(spec)
        except ProtocolError as exc:
            raise ValueError(f"emotions is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"emotions must look like {EMOTIONS_SYNTAX}")
        return value
    emotions: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, weight = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"emotions must look like {EMOTIONS_SYNTAX}, got {item!r}")
        try:
            emotions[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"emotion weight must be a number, got {item!r}") from None
    if not emotions:
        raise ValueError(f"emotions must look like {EMOTIONS_SYNTAX}")
    return emotions


def parse_frame_rate(text: str) -> Fraction:
    """`60`, `30000/1001` or `29.97` as an exact positive rate."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"frame rate must look like 30 or 30000/1001, got {text!r}") from exc
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {text!r}")
    return rate
