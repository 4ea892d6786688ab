"""Response formats: written and read back, Live Link Face layout, format negotiation."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from a2f_protocol.export_formats import (
    EXPORT_FORMATS,
    LIVE_LINK_ROTATIONS,
    FrameBlock,
    StreamError,
    choose_format,
    live_link_order,
    make_encoder,
    parse_a2fb,
    parse_jsonl,
    parse_live_link_csv,
    timecode,
)
from gateway.model_info import ModelInfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INFO = ModelInfo.load(PROJECT_ROOT / "model_repository")
ALL = INFO.blendshapes + INFO.visemes


def blocks(fps: Fraction, frames: int = 25, width: int = len(ALL)) -> list[FrameBlock]:
    rng = np.random.default_rng(0)
    out, first = [], 0
    for size in (7, 1, frames - 8):
        stamps = np.array(
            [k * 16_000 * fps.denominator // fps.numerator for k in range(first, first + size + 1)]
        )
        out.append(
            FrameBlock(first, stamps.astype(np.int64), rng.random((size, width), dtype=np.float32))
        )
        first += size
    return out


def render(kind: str, channels: tuple[str, ...], fps: Fraction, parts: list[FrameBlock]) -> bytes:
    encoder = make_encoder(kind, channels, INFO.blendshapes, fps)  # type: ignore[arg-type]
    count = sum(p.weights.shape[0] for p in parts)
    return encoder.header() + b"".join(map(encoder.block, parts)) + encoder.trailer(count)


def parse(kind: str, data: bytes, channels: tuple[str, ...], fps: Fraction):
    if kind == "jsonl":
        return parse_jsonl(data.splitlines())
    if kind == "csv":
        return parse_live_link_csv(data.decode(), INFO.blendshapes, fps)
    return parse_a2fb(data, channels)


@pytest.mark.parametrize("kind", EXPORT_FORMATS)
@pytest.mark.parametrize("fps", [Fraction(60), Fraction(30000, 1001)])
@pytest.mark.parametrize("channels", [ALL, INFO.blendshapes, INFO.visemes, ("jawOpen", "aa")])
def test_round_trip(kind: str, fps: Fraction, channels: tuple[str, ...]) -> None:
    parts = blocks(fps, width=len(channels))
    animation = parse(kind, render(kind, channels, fps, parts), channels, fps)
    weights = np.concatenate([p.weights for p in parts])
    np.testing.assert_allclose(animation.select(channels), weights, atol=1e-7)
    np.testing.assert_array_equal(animation.frame_indices, np.arange(weights.shape[0]))
    exact = np.concatenate([p.timestamps[:-1] for p in parts])
    if kind == "csv":  # timecodes carry milliseconds of a frame only
        assert np.max(np.abs(animation.timestamps - exact)) <= 16
    else:
        np.testing.assert_array_equal(animation.timestamps, exact)


def test_csv_is_live_link_face_layout() -> None:
    text = render("csv", INFO.blendshapes, Fraction(60), blocks(Fraction(60), width=52)).decode()
    header, first = text.splitlines()[:2]
    columns = header.split(",")
    assert columns[:2] == ["Timecode", "BlendShapeCount"]
    names = columns[2:54]
    assert names[:3] == ["EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft"]
    # Live Link Face's own order: these pairs Right-first, the rest as ARKit.
    assert names[15:18] == ["JawRight", "JawLeft", "JawOpen"]
    assert names[21:23] == ["MouthRight", "MouthLeft"]
    assert names[-1] == "TongueOut"
    assert tuple(columns[54:]) == LIVE_LINK_ROTATIONS
    assert first.startswith("00:00:00:00.000,61,")
    assert len(first.split(",")) == 63


def test_live_link_order_only_swaps_the_two_pairs() -> None:
    order = live_link_order(INFO.blendshapes)
    assert sorted(order) == sorted(INFO.blendshapes)
    moved = [a for a, b in zip(order, INFO.blendshapes, strict=True) if a != b]
    assert sorted(moved) == ["jawLeft", "jawRight", "mouthLeft", "mouthRight"]


@pytest.mark.parametrize(
    ("index", "fps", "text"),
    [
        (0, Fraction(60), "00:00:00:00.000"),
        (59, Fraction(60), "00:00:00:59.000"),
        (60 * 3661 + 7, Fraction(60), "01:01:01:07.000"),
        (1, Fraction(30000, 1001), "00:00:00:01.001"),
        (30, Fraction(30000, 1001), "00:00:01:00.030"),
    ],
)
def test_timecode(index: int, fps: Fraction, text: str) -> None:
    assert timecode(index, fps) == text


def test_jsonl_first_line_names_the_channels_and_errors_surface() -> None:
    data = render("jsonl", ("jawOpen", "aa"), Fraction(60), blocks(Fraction(60), width=2))
    assert data.splitlines()[0] == (
        b'{"type":"header","channels":["jawOpen","aa"],'
        b'"frame_rate":{"numerator":60,"denominator":1},"sampling_rate":16000}'
    )
    encoder = make_encoder("jsonl", ("jawOpen",), INFO.blendshapes, Fraction(60))
    with pytest.raises(StreamError, match="Triton went away"):
        parse_jsonl([encoder.header(), encoder.error("Triton went away")])
    with pytest.raises(StreamError, match="incomplete"):
        parse_jsonl(data.splitlines()[:-1])


@pytest.mark.parametrize(
    ("explicit", "accept", "expected"),
    [
        (None, None, "jsonl"),
        (None, "text/csv", "csv"),
        (None, "application/octet-stream", "a2fb"),
        (None, "text/html, text/csv;q=0.9", "csv"),
        (None, "*/*", "jsonl"),
        ("a2fb", "text/csv", "a2fb"),
        ("CSV", None, "csv"),
        ("ndjson", None, "jsonl"),
    ],
)
def test_choose_format(explicit: str | None, accept: str | None, expected: str) -> None:
    assert choose_format(explicit, accept) == expected


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="jsonl, csv, a2fb"):
        choose_format("xml", None)
