"""Gateway settings: environment variables (`A2F_*`), overridden by command-line flags.

Flag names follow the reference server (`--host`, `--port`, `--max_sessions`, `--fps`,
`--model`); dashed spellings are accepted too. Validated once at start-up.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import msgspec

from a2f_protocol import ACE_FPS, ACE_PORT, DEFAULT_PORT
from a2f_protocol.params import parse_frame_rate

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:  # "" (every interface) and other names are not loopback
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the gateway is configured with."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_sessions: int = 16  # for the whole host, all workers together
    workers: int = 1  # gateway processes sharing the port (gateway.processes.workers)
    fps: str = "60"  # integer or exact ratio like "30000/1001"
    model: str = "a2f"  # Triton ensemble the gateway calls; StartSession.model must match
    # Triton endpoints (gRPC host:port), used as a pool: health-checked, least-loaded first, a
    # failed request retried once on another (gateway.inference.endpoint_pool).
    triton_urls: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:8001"])
    model_repository: Path = PROJECT_ROOT / "model_repository"
    # The a2f_net version whose manifest the gateway reads (0: the highest), the one its
    # Tritons serve: the same A2F_MODEL_VERSION as theirs (`make serve` passes its own on).
    model_version: int = 0
    max_queued_frames: int = 4096  # per connection; when full, the client's audio waits
    send_timeout_s: float = 10.0  # a batch of frames stuck this long in the socket: too slow
    send_buffer_bytes: int = 256 * 1024  # socket + transport send buffer per connection
    # Triton requests merging sessions' frames; 0: one per PushAudio. 2 pipelines one request
    # in the gateway with one in Triton (BENCHMARKS.md: 40 streams against 20 with 1).
    merge_in_flight: int = 2
    # A new request leaves at most once a tick unless one is full (gateway.inference.dispatcher).
    dispatch_tick_ms: float = 4.0
    request_max_frames: int = 64  # frames per Triton request
    session_request_frames: int = 16  # one session's share of a request; a backlog is sliced
    triton_timeout_s: float = 10.0  # deadline of every Triton call
    # Admission by capacity (gateway.inference.admission): a new session gets `busy` while the p95
    # dispatch latency of live real-time frames over the last 2 s is above this; 0: off.
    busy_latency_ms: float = 50.0
    # Fair share (gateway.inference.fair_share): while the p95 dispatch latency of the frames of tenants
    # within their share is above this, tenants over their share are throttled; 0: off.
    fair_latency_ms: float = 12.0
    # Uploads beside streams (gateway.inference.bulk_share): while the p95 dispatch latency of
    # live frames (last second) is above this, uploads' frames are slowed; 0: off.
    upload_latency_ms: float = 12.0
    # Window audio through a shared-memory region when Triton's URL is loopback
    # (gateway.inference.shared_inputs); off: always inside the gRPC request.
    triton_shared_memory: bool = True
    use_gpu_solver: bool = True  # reported in SessionStarted.options for reference clients
    execution_option: str = "SkinTongue"  # our channels cover skin and tongue together
    # Lift quiet speech before the model (gateway.session.level; its ENABLED_BY_DEFAULT, which
    # this layer cannot import, says why it is off); off: the model hears every client at the
    # level it sends.
    normalise_level: bool = False
    log_level: str = "info"
    batch_max_bytes: int = 1 << 30  # POST /v1/animate request body limit (413 beyond)
    batch_max_seconds: float = 7200.0  # POST /v1/animate audio duration limit (413 beyond)
    drain_s: float = 30.0  # on SIGTERM: how long open sessions may go on (gateway.drain)
    # Tenants (gateway.tenancy.tenants): keys, limits, origins. Without a file the gateway is open and
    # must then listen on loopback only, unless insecure_open says otherwise.
    tenants_file: str = ""
    insecure_open: bool = False
    # /schema and its viewers answer without a key even with a tenants file.
    public_docs: bool = False
    tenants_reload_s: float = 1.0  # how often the tenants file is checked for changes
    redis_url: str = (
        ""  # sessions and quotas shared by processes/hosts (gateway.stores.redis_store)
    )
    ticket_ttl_s: float = 30.0  # browser tickets (POST /v1/tickets) expire this soon
    # The tenant whose quotas bound the public demo page (/demo); with a tenants file the page
    # is served only when this names a tenant, and gets its tickets on that tenant's first key.
    demo_tenant: str = ""
    auth_failures_per_minute: int = 20  # per client address and minute; then 429 / 4429
    trusted_proxies: str = ""  # comma-separated peers whose X-Forwarded-For is believed
    audit_client_address: str = "full"  # in audit lines: full, network (/24, /48) or none
    ssl_certfile: str = ""  # serve https:// and wss:// with this certificate (PEM)
    ssl_keyfile: str = ""
    idle_timeout_s: float = 60.0  # a connection that sends no message this long is closed
    handshake_timeout_s: float = 10.0  # an HTTP request head (WebSocket upgrade) must arrive
    # Each Triton endpoint is probed this often (server and model ready, contract, a one-window
    # inference through the ensemble), each probe with its own short deadline: a hung Triton
    # leaves the pool within interval + timeout.
    triton_probe_interval_s: float = 1.0
    triton_probe_timeout_s: float = 2.0
    # NVIDIA's Audio2Face-3D gRPC API (gateway.drivers.ace_server) on this port of `host`, the
    # NIM's own by default, so NIM clients work unchanged; 0: off. Streams at `grpc_fps`, the
    # NIM's rate, whatever `fps` the WebSocket uses. TLS with the certificate flags above;
    # `ssl_client_ca` (PEM) makes gRPC require client certificates signed by it (mTLS).
    grpc_port: int = ACE_PORT
    grpc_fps: str = str(ACE_FPS)
    ssl_client_ca: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")
        if not 0 <= self.grpc_port < 65536 or self.grpc_port == self.port:
            raise ValueError(f"grpc_port {self.grpc_port} out of range or the HTTP port")
        limits = (
            self.max_sessions,
            self.max_queued_frames,
            self.send_timeout_s,
            self.send_buffer_bytes,
            self.request_max_frames,
            self.session_request_frames,
            self.triton_timeout_s,
        )
        if min(limits) <= 0:
            raise ValueError(
                "max_sessions, max_queued_frames, send_timeout_s, send_buffer_bytes, "
                "request_max_frames, session_request_frames and triton_timeout_s must be positive"
            )
        if (
            min(self.drain_s, self.busy_latency_ms, self.fair_latency_ms, self.upload_latency_ms)
            < 0
        ):
            raise ValueError(
                "drain_s, busy_latency_ms, fair_latency_ms and upload_latency_ms must not be "
                "negative"
            )
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.model_version < 0:
            raise ValueError("model_version must not be negative (0: the highest)")
        if min(self.idle_timeout_s, self.handshake_timeout_s) <= 0:
            raise ValueError("idle_timeout_s and handshake_timeout_s must be positive")
        if not self.triton_urls or not all(url.strip() for url in self.triton_urls):
            raise ValueError("triton_urls needs at least one host:port and no empty entry")
        if len(set(self.triton_urls)) != len(self.triton_urls):
            raise ValueError("triton_urls lists an endpoint twice")
        if self.triton_probe_interval_s <= 0 or self.triton_probe_timeout_s <= 0:
            raise ValueError("triton_probe_interval_s and triton_probe_timeout_s must be positive")
        self.frame_rate  # noqa: B018 (validates the fps text)
        self.grpc_frame_rate  # noqa: B018

    @property
    def frame_rate(self) -> Fraction:
        return _frame_rate("fps", self.fps)

    @property
    def grpc_frame_rate(self) -> Fraction:
        return _frame_rate("grpc_fps", self.grpc_fps)


def _frame_rate(name: str, text: str) -> Fraction:
    try:
        return parse_frame_rate(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",")]


_FROM_TEXT: dict[object, Callable[[str], object]] = {
    str: str, int: int, float: float, Path: Path, bool: _parse_bool, list[str]: _parse_list,
}  # fmt: skip
# The option table, read off the Struct: a new setting is one line there. A field of a type
# missing above fails here, at import, rather than at some later start-up.
_FIELDS = msgspec.structs.fields(Settings)
_PARSE = {field.name: _FROM_TEXT[field.type] for field in _FIELDS}


def _is_list(field: msgspec.structs.FieldInfo) -> bool:
    return bool(field.type == list[str])


def _flag_name(field: msgspec.structs.FieldInfo) -> str:
    """A list is a repeatable flag named for one item (`--triton_url` for `triton_urls`)."""
    return field.name.removesuffix("s") if _is_list(field) else field.name


def _flags(name: str) -> list[str]:
    """The reference server's spelling (`--max_sessions`), then the dashed one."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def _environment_name(name: str) -> str:
    return f"A2F_{name.upper()}"


def _environment_names(field: msgspec.structs.FieldInfo) -> list[str]:
    """A list also reads its one-item name (`A2F_TRITON_URL`), the spelling of older releases."""
    names = [_environment_name(field.name)]
    return [*names, _environment_name(_flag_name(field))] if _is_list(field) else names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway", description="Audio2Face-3D compatible WebSocket gateway"
    )
    add_settings_arguments(parser)
    return parser


def add_settings_arguments(
    parser: argparse._ActionsContainer, exclude: Collection[str] = ()
) -> None:
    """One option per Settings field, named after it, but the fields in `exclude`; absent
    options leave the field alone. Runners that pass these flags on to the gateway (`make
    serve`) add them too, so that their --help lists them and a mistake fails at once."""
    for field in _FIELDS:
        if field.name in exclude:
            continue
        options: dict[str, object] = (
            {"action": argparse.BooleanOptionalAction}
            if field.type is bool
            else {"action": "append", "type": str}
            if _is_list(field)
            else {"type": _PARSE[field.name]}
        )
        default = field.default_factory() if _is_list(field) else field.default
        parser.add_argument(
            *_flags(_flag_name(field)),
            dest=field.name,
            default=argparse.SUPPRESS,
            help=f"env {_environment_name(field.name)}, default {default}"
            + (" (repeatable; the variable is comma separated)" if _is_list(field) else ""),
            # A per-field choice of `action` or `type`; argparse's overloads cannot see that.
            **options,  # type: ignore[arg-type]
        )


def _from_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> dict[str, object]:
    values: dict[str, object] = {}
    for field in _FIELDS:
        name = next((name for name in _environment_names(field) if name in environ), None)
        if name is not None:
            try:
                values[field.name] = _PARSE[field.name](environ[name])
            except ValueError:
                parser.error(f"{name}: invalid {field.type.__name__} value: {environ[name]!r}")
    return values


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from `A2F_<FIELD>` environment variables, then flags; a bad value exits with a
    one-line usage error (argparse's), not a traceback."""
    parser = _parser()
    values = _from_environment(parser, os.environ if environ is None else environ)
    values |= vars(parser.parse_args(argv))
    try:
        # Values were parsed per field type above; msgspec re-checks them at construction.
        return Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:  # the cross-field checks of Settings.__post_init__
        parser.error(str(exc))
