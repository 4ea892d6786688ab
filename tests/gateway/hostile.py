"""Hostile client input and what the protocol promises for it (a2f_protocol/PROTOCOL.md).

Each case is a list of steps: something to send and the documented answer, an `Error` code
(the connection goes on) or a close code (the connection ends). Cases are drawn from a seeded
`random.Random`, so a failure names a seed that replays it.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from a2f_protocol.frames import MAX_MESSAGE_BYTES, TRANSPORT_MAX_MESSAGE_BYTES, pack_push_audio
from a2f_protocol.messages import MAX_JSON_BYTES, MAX_JSON_DEPTH


@dataclass(frozen=True)
class RawText:
    """A text frame with this payload as is (not necessarily UTF-8)."""

    payload: bytes


Payload = str | bytes | RawText


@dataclass(frozen=True)
class Step:
    send: Payload
    expect: str | int | None  # an Error code, "SessionStarted", a close code, or no answer


def masked_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One final client frame written by hand (client libraries refuse to send bad text)."""
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


START = json.dumps({"type": "StartSession", "blinks": False})
STARTED = Step(START, "SessionStarted")


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.printable, k=size))


def bad_json(rng: random.Random) -> list[Step]:
    text = rng.choice(["{", "[1,", '{"type":', "nul", '{"type":"StartSession",}'])
    return [Step(text + _text(rng, rng.randrange(0, 64)).replace("}", ""), "invalid_message")]


def deep_json(rng: random.Random) -> list[Step]:
    depth = rng.randrange(MAX_JSON_DEPTH + 1, 5000)
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    inner = opener * depth + "1" + closer * depth
    return [Step('{"type":"EndSession","x":' + inner + "}", "invalid_message")]


def wrong_types(rng: random.Random) -> list[Step]:
    field, value = rng.choice(
        [("fps", "60"), ("sample_rate", [16000]), ("emotions", [1]), ("blinks", "yes"),
         ("postprocess", 3), ("channels", 7), ("seed", 1.5), ("frame_rate", "30000/1001"),
         ("options", [])]
    )  # fmt: skip
    return [Step(json.dumps({"type": "StartSession", field: value}), "invalid_message")]


def huge_numbers(rng: random.Random) -> list[Step]:
    huge = rng.choice([1e39, -1e39, 3.5e38, 1e300, -1e300, 1e4, -1e4])  # outside every range
    message = rng.choice(
        [{"postprocess": {"multipliers": {"jawOpen": huge}}},
         {"postprocess": {"offsets": {"jawOpen": huge}}},
         {"postprocess": {"clamp": [min(huge, -2000.0), max(huge, 2000.0)]}},
         {"postprocess": {"threshold": huge}}, {"emotions": {"joy": huge}},
         {"emotion_strength": huge}, {"sample_rate": -int(abs(huge) % 1e9) - 1},
         {"fps": -1}, {"seed": -1}, {"fps": 10**30}]
    )  # fmt: skip
    return [Step(json.dumps({"type": "StartSession", **message}), "invalid_message")]


def unknown_names(rng: random.Random) -> list[Step]:
    return rng.choice(
        [[Step(json.dumps({"type": "Dance"}), "invalid_message")],
         [Step(json.dumps({"type": "StartSession", "emotions": {"glee": 1}}), "invalid_emotion")],
         [Step(json.dumps({"type": "StartSession", "channels": ["nose"]}), "invalid_channels")],
         [STARTED, Step(json.dumps({"type": "SetEmotion", "emotions": {"x": 0}}), "invalid_emotion")]]
    )  # fmt: skip


def out_of_order(rng: random.Random) -> list[Step]:
    audio = pack_push_audio(0, np.zeros(160, np.int16))
    return rng.choice(
        [[Step(json.dumps({"type": "EndSession"}), "no_session")],
         [Step(audio, "no_session")],
         [Step(json.dumps({"type": "SetEmotion"}), "no_session")],
         [STARTED, Step(START, "session_exists")],
         [STARTED, Step(json.dumps({"type": "EndSession", "session_id": "x"}), "session_mismatch")],
         [STARTED, Step(pack_push_audio(-rng.randrange(1, 1 << 40), [1]), "negative_index")],
         [STARTED, Step(audio, None), Step(pack_push_audio(rng.randrange(0, 160), [1]), "out_of_order")],
         [STARTED, Step(pack_push_audio(160_001 + rng.randrange(1 << 40), [1]), "gap_too_large")]]
    )  # fmt: skip


def odd_binary(rng: random.Random) -> list[Step]:
    data = rng.choice(
        [b"", rng.randbytes(rng.randrange(1, 8)), rng.randbytes(8 + 2 * rng.randrange(50) + 1)]
    )
    return (
        [STARTED, Step(data, "invalid_audio")] if rng.random() < 0.5 else [Step(data, "no_session")]
    )


def invalid_utf8(rng: random.Random) -> list[Step]:
    junk = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b'{"type":"\xfe"}'])
    return [Step(RawText(junk + rng.randbytes(rng.randrange(0, 16)) + b"\xff"), 1007)]


def oversized(rng: random.Random) -> list[Step]:
    return rng.choice(
        [[Step('{"type":"EndSession","x":"' + "a" * MAX_JSON_BYTES + '"}', "too_large")],
         [STARTED, Step(bytes(8) + bytes(MAX_MESSAGE_BYTES), "too_large")],
         [Step(bytes(TRANSPORT_MAX_MESSAGE_BYTES + 2), 1009)]]
    )  # fmt: skip


# Case makers and how often each is drawn (huge frames are rare: they cost the host, not us).
CASES: list[tuple[Callable[[random.Random], list[Step]], int]] = [
    (bad_json, 10), (deep_json, 10), (wrong_types, 10), (huge_numbers, 10),
    (unknown_names, 8), (out_of_order, 10), (odd_binary, 8), (invalid_utf8, 5), (oversized, 1),
]  # fmt: skip


def draw(rng: random.Random) -> tuple[str, list[Step]]:
    """A random case: its name and its steps."""
    makers, weights = zip(*CASES, strict=True)
    maker = rng.choices(makers, weights)[0]
    return maker.__name__, maker(rng)
