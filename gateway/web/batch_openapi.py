"""The OpenAPI description of `POST /v1/animate`: its query parameters, the request's media
types, each response format and the errors. The handler reads its body and fields itself
(raw file or multipart, any audio type), so Litestar cannot infer any of this from its
signature; `AnimateOperation` fills it in."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)

from a2f_protocol.export_formats import EXPORT_FORMATS, MEDIA_TYPES
from gateway.web.docs import SECURITY

_TEXT = Schema(type=OpenAPIType.STRING)
_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)

# name, schema, description: the StartSession fields a batch request may carry (as query
# fields, multipart form fields, or together as `params`), and `format`.
_FIELDS: list[tuple[str, Schema, str]] = [
    (
        "format",
        Schema(type=OpenAPIType.STRING, enum=list(EXPORT_FORMATS)),
        "Response format; else the first known `Accept` type; else `jsonl`.",
    ),
    ("fps", Schema(type=OpenAPIType.INTEGER, minimum=1), "Frames per second (any rate)."),
    ("frame_rate", _TEXT, "Exact frame rate as a ratio, e.g. `30000/1001`."),
    (
        "emotions",
        _TEXT,
        "Emotion weights in [0, 1]: `joy:0.8,anger:0.1` or a JSON object; names: amazement, "
        "anger, cheekiness, disgust, fear, grief, joy, outofbreath, pain, sadness.",
    ),
    ("emotion_strength", Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1), "In [0, 1]."),
    (
        "channels",
        _TEXT,
        "`arkit` (52, default), `visemes` (15), `all` (67) or comma-separated channel names.",
    ),
    ("blinks", Schema(type=OpenAPIType.BOOLEAN), "Natural eye blinks (default true)."),
    ("seed", Schema(type=OpenAPIType.INTEGER, minimum=0), "Seed of the blink generator."),
    (
        "postprocess",
        _TEXT,
        "JSON `{multipliers, offsets, clamp, threshold, smoothing}` as in StartSession.",
    ),
    ("model", _TEXT, "Must equal the server's model if given."),
    ("params", _TEXT, "A JSON object of any of these fields, instead of single fields."),
]

_FORM = Schema(
    type=OpenAPIType.OBJECT,
    required=["file"],
    properties={name: schema for name, schema, _ in [("file", _BINARY, ""), *_FIELDS]},
)
_REQUEST = RequestBody(
    required=True,
    description="The audio file (WAV, FLAC, OGG/Vorbis; any sample rate; stereo is "
    "downmixed) as the whole body with any Content-Type, or as the `file` part of a form.",
    content={
        "audio/wav": OpenAPIMediaType(schema=_BINARY),
        "audio/flac": OpenAPIMediaType(schema=_BINARY),
        "audio/ogg": OpenAPIMediaType(schema=_BINARY),
        "application/octet-stream": OpenAPIMediaType(schema=_BINARY),
        "multipart/form-data": OpenAPIMediaType(schema=_FORM),
    },
)

_FORMAT_DESCRIPTIONS = {
    "jsonl": "JSON lines: a `header` line (channels, frame rate), `frames` lines, an `end` "
    "line with the frame count; a failure after the start is an `error` line.",
    "csv": "Live Link Face CSV: `Timecode,BlendShapeCount,<ARKit names>,<rotations>`.",
    "a2fb": "The WebSocket protocol's A2FB BlendshapeFrame messages, back to back.",
}
_HEADERS = {
    "X-A2F-Channels": "Channel names in weight order, comma separated.",
    "X-A2F-Frame-Rate": "Frame rate as `numerator/denominator`.",
    "X-A2F-Frame-Count": "Frames the body will hold.",
    "X-A2F-Duration": "Audio duration in seconds.",
}
_RETRY_AFTER: dict[str, OpenAPIHeader | Reference] = {
    "Retry-After": OpenAPIHeader(schema=_TEXT, description="Seconds to wait.")
}
_ERROR = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "status_code": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING, description="What was wrong."),
    },
)


def _error(description: str, retry: bool = False) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=_ERROR)},
        headers=_RETRY_AFTER if retry else None,
    )


_RESPONSES = {
    "200": OpenAPIResponse(
        description="The animation, streamed while Triton computes it.",
        headers={
            name: OpenAPIHeader(schema=_TEXT, description=text) for name, text in _HEADERS.items()
        },
        content={
            MEDIA_TYPES[kind]: OpenAPIMediaType(schema=_BINARY if kind == "a2fb" else _TEXT)
            for kind in EXPORT_FORMATS
        },
    ),
    "401": _error("No key, or a bad or revoked one (with a tenants file)."),
    "403": _error("Origin not allowed, or a parameter the tenant may not use."),
    "413": _error("Body or audio duration over the tenant's or the server's limit."),
    "415": _error("Not a supported audio format."),
    "422": _error("Bad parameters, or a corrupt, truncated or empty file."),
    "429": _error("The tenant's audio quota is spent, or too many failed attempts.", retry=True),
    "503": _error("Triton not ready, or the host busy (see Retry-After).", retry=True),
}


@dataclass
class AnimateOperation(Operation):
    """`POST /v1/animate` as the handler really takes and answers it."""

    def __post_init__(self) -> None:
        self.parameters = [
            Parameter(name=name, param_in="query", schema=schema, description=text)
            for name, schema, text in _FIELDS
        ]
        self.parameters.append(
            Parameter(
                name="Accept",
                param_in="header",
                schema=_TEXT,
                description="Picks the format when `format` is absent: "
                + ", ".join(
                    f"`{MEDIA_TYPES[k]}` ({k}: {_FORMAT_DESCRIPTIONS[k]})" for k in EXPORT_FORMATS
                ),
            )
        )
        self.request_body = _REQUEST
        self.responses = dict(_RESPONSES)
        self.security = SECURITY
