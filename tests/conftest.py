"""Shared fixtures: free loopback ports, one real embedded Triton server per test session and
real gateway processes (`python -m gateway`) on it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "triton"))  # launch.py is a script dir, not a package

from launch import EmbeddedTriton, free_port  # noqa: E402


def embedded_triton(run_dir: Path, **options: object) -> EmbeddedTriton:
    return EmbeddedTriton(
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        run_dir=run_dir,
        **options,
    )


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    """The real tritonserver on the project's model repository, shared by the whole session."""
    with embedded_triton(tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return PROJECT_ROOT / "tests" / "fixtures"


# -- the gateway -------------------------------------------------------------------------------

GATEWAY_START_TIMEOUT_S = 60.0
GATEWAY_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GatewayProcess:
    """A running `python -m gateway`; `url` is the WebSocket root, `http` the HTTP base."""

    url: str
    http: str
    process: subprocess.Popen[bytes]


@contextmanager
def run_gateway(grpc_url: str, *flags: str, log: Path) -> Iterator[GatewayProcess]:
    """A gateway on `grpc_url` with `flags`, ready (its `/ready` answered 200) until exit;
    always stopped (terminated, killed if it lingers) when the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "gateway", "--port", str(port), "--triton-url", grpc_url]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, *flags], cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    gateway = GatewayProcess(f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{gateway.http}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(timeout=GATEWAY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def start_gateway(
    triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Start gateways with the given flags; all of them stop at the end of the test session."""
    logs = tmp_path_factory.mktemp("gateway")
    with ExitStack() as stack:

        def start(*flags: str) -> GatewayProcess:
            log = logs / f"gateway-{len(list(logs.iterdir()))}.log"
            return stack.enter_context(run_gateway(triton.grpc_url, *flags, log=log))

        yield start


@pytest.fixture(scope="session")
def gateway(start_gateway: GatewayFactory) -> GatewayProcess:
    """The default gateway (60 fps)."""
    return start_gateway()


@pytest.fixture(scope="session")
def speech_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "speech_16k.wav"
