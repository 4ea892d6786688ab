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

from a2f_triton.processes import LOOPBACK, answers_ok, free_port, running

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class GatewayProcess:
    """A running gateway; `url` is the WebSocket root, `http` the HTTP base."""

    url: str
    http: str
    process: subprocess.Popen[bytes]


@contextmanager
def run_gateway(
    triton_url: str | Sequence[str],
    *flags: str,
    host: str = LOOPBACK,
    port: int | None = None,
    log: Path | None = None,
) -> Iterator[GatewayProcess]:
    """A gateway on `triton_url` (or several endpoints) with `flags` (any `python -m gateway`
    flag), on a free port unless given one, ready (`/ready` answered 200) for the block,
    stopped by PID after it."""
    port = free_port() if port is None else port
    # A wildcard bind answers on loopback too; probe and hand out that.
    address = LOOPBACK if host in ("0.0.0.0", "") else host
    http = f"http://{address}:{port}"
    urls = [triton_url] if isinstance(triton_url, str) else list(triton_url)
    command = [
        sys.executable, "-m", "gateway", "--host", host, "--port", str(port),
        *(flag for url in urls for flag in ("--triton-url", url)), *flags,
    ]  # fmt: skip
    with running(
        command,
        partial(answers_ok, f"{http}/ready"),
        name="gateway",
        timeout_s=START_TIMEOUT_S,
        log=log,
        grace_s=STOP_GRACE_S,
    ) as process:
        yield GatewayProcess(f"ws://{address}:{port}/", http, process)
