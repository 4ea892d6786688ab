"""Gateway addresses as users type them: ws://, wss://, http://, https:// or a bare host:port.

The WebSocket and the batch API share one host and port, so either kind of URL names the
gateway; each client maps it to the scheme it speaks. The ACE gRPC API has a port of its own
(`grpc_target`): a bare host:port or grpc:// is plaintext, grpcs:// (or https://, wss://) TLS.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from a2f_protocol import ACE_PORT

DEFAULT_ACE_URL = f"127.0.0.1:{ACE_PORT}"  # the ACE gRPC API of a gateway on this machine
_WEBSOCKET = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_GRPC_TLS = {"grpc": False, "http": False, "ws": False, "grpcs": True, "https": True, "wss": True}


def websocket_url(url: str) -> str:
    """`url` with a ws:// or wss:// scheme."""
    return _with_scheme(url, _WEBSOCKET)


def http_url(url: str) -> str:
    """`url` with an http:// or https:// scheme."""
    return _with_scheme(url, _HTTP)


def with_path(url: str, path: str) -> str:
    """`url`'s host with `path` under its own path prefix (a gateway behind a path-routing
    proxy keeps it), and without its query: `http://h:8765/a/?x=1` + `/v1/animate` is
    `http://h:8765/a/v1/animate`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, query="", fragment=""))


def grpc_target(url: str) -> tuple[str, bool]:
    """(`host:port` as gRPC dials it, whether it speaks TLS); the port defaults to the ACE
    API's own."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else "grpc://" + text)
    tls = _GRPC_TLS.get(parts.scheme.lower())
    if tls is None:
        raise ValueError(f"unsupported URL {url!r}: use host:port, grpc:// or grpcs://")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} names no host")
    if parts.path.strip("/") or parts.query:
        raise ValueError(f"URL {url!r}: a gRPC address has no path or query")
    try:
        port = parts.port or ACE_PORT
    except ValueError as exc:
        raise ValueError(f"URL {url!r} has a bad port: {exc}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", tls


def _with_scheme(url: str, schemes: dict[str, str]) -> str:
    text = url.strip()
    if "://" not in text:  # "127.0.0.1:8765" would otherwise parse as scheme "127.0.0.1"
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(
            f"unsupported URL {url!r}: use ws://, wss://, http://, https:// or host:port"
        )
    if not parts.hostname:
        raise ValueError(f"URL {url!r} names no host")
    try:
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as exc:
        raise ValueError(f"URL {url!r} has a bad port: {exc}") from None
    return urlunsplit(parts._replace(scheme=scheme))
