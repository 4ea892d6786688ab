"""The gateway as a child process (`python -m gateway`), ready before anyone talks to it: used by
`make serve`, the tests and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from a2f_triton.processes import LOOPBACK, accepts_connections, answers_ok, free_port, running

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0  # after its drain (`--drain_s`): uvicorn's own shutdown


@dataclass(frozen=True)
class GatewayProcess:
    """A running gateway; `url` is the WebSocket root, `http` the HTTP base, `grpc` the
    gRPC target (`host:port`) when it serves the gRPC API."""

    url: str
    http: str
    process: subprocess.Popen[bytes]
    grpc: str | None = None


@contextmanager
def run_gateway(
    triton_url: str | Sequence[str],
    *flags: str,
    host: str = LOOPBACK,
    port: int | None = None,
    log: Path | None = None,
    drain_s: float = 0.0,
    grpc_port: int = 0,
) -> Iterator[GatewayProcess]:
    """A gateway on `triton_url` (or several endpoints) with `flags` (any `python -m gateway`
    flag), on a free port unless given one, ready (`/ready` answered 200) for the block,
    stopped by PID after it; the stop waits `drain_s` (the gateway's own `--drain_s`) longer
    for sessions to finish. Its gRPC API is on `grpc_port`, off unless given one (so no two
    gateways of a test run reach for the NIM's port)."""
    port = free_port() if port is None else port
    # A wildcard bind answers on loopback too; probe and hand out that.
    address = LOOPBACK if host in ("0.0.0.0", "") else host
    # With its own certificate (possibly self-signed) it is ready once it accepts connections.
    tls = any(flag.startswith(("--ssl_certfile", "--ssl-certfile")) for flag in flags)
    http = f"{'https' if tls else 'http'}://{address}:{port}"
    urls = [triton_url] if isinstance(triton_url, str) else list(triton_url)
    command = [
        sys.executable, "-m", "gateway", "--host", host, "--port", str(port),
        "--grpc_port", str(grpc_port),
        *(flag for url in urls for flag in ("--triton-url", url)), *flags,
    ]  # fmt: skip
    with running(
        command,
        partial(accepts_connections, address, port)
        if tls
        else partial(answers_ok, f"{http}/ready"),
        name="gateway",
        timeout_s=START_TIMEOUT_S,
        log=log,
        grace_s=drain_s + STOP_GRACE_S,
    ) as process:
        grpc = f"{address}:{grpc_port}" if grpc_port else None
        yield GatewayProcess(f"{'wss' if tls else 'ws'}://{address}:{port}/", http, process, grpc)
