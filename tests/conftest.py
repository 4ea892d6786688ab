"""Shared fixtures: free loopback ports, one real embedded Triton server per test session and
real gateway processes (`python -m gateway`) on it."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import free_port
from a2f_triton.redis_server import redis_address, run_redis

from a2f_protocol import ACE_PORT

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def embedded_triton(run_dir: Path, **options: object) -> EmbeddedTriton:
    return EmbeddedTriton(
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        run_dir=run_dir,
        **options,
    )


@pytest.fixture(scope="session", autouse=True)
def default_grpc_port_taken() -> Iterator[None]:
    """Hold the ACE API's default port for the whole run, so a test that forgets to give a
    gateway its own gRPC port fails here every time rather than on whichever host happens to
    have 52000 in use (a `make serve`, a CI neighbour)."""
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", ACE_PORT))
            holder.listen()
        except OSError:
            pass  # already taken by someone else: the same effect
        yield


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    """The real tritonserver on the project's model repository, shared by the whole session."""
    with embedded_triton(tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return PROJECT_ROOT / "tests" / "fixtures"


# -- the gateway -------------------------------------------------------------------------------

GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def start_gateway(
    triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Start gateways with the given flags; all of them stop at the end of the test session."""
    logs = tmp_path_factory.mktemp("gateway")
    with ExitStack() as stack:

        def start(*flags: str, grpc_port: int = 0) -> GatewayProcess:
            """`grpc_port`: the ACE gRPC API's (0: off)."""
            log = logs / f"gateway-{len(list(logs.iterdir()))}.log"
            # Admission by capacity and fair share act on measured latency, which a shared test
            # host cannot promise; they are tested as policies, and where asked for by flag.
            flags = ("--busy_latency_ms", "0", "--fair_latency_ms", "0", *flags)
            gateway = run_gateway(triton.grpc_url, *flags, grpc_port=grpc_port, log=log)
            return stack.enter_context(gateway)

        yield start


@pytest.fixture(scope="session")
def gateway(start_gateway: GatewayFactory) -> GatewayProcess:
    """The default gateway (60 fps)."""
    return start_gateway()


@pytest.fixture(scope="session")
def speech_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "speech_16k.wav"


@pytest.fixture(scope="session")
def self_signed_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, as the README makes one:
    (certificate, key), PEM."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def redis_server(port: int, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real redis-server (`make test` installs it) on loopback `port`, nothing saved (so a
    restart on the same port starts empty), stopped by PID after the block."""
    with run_redis(port, run_dir) as process:
        yield process


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the test session, on a free port."""
    port = free_port()
    with redis_server(port, tmp_path_factory.mktemp("redis")):
        yield redis_address(port)


def listed_sessions(http: str, pid: int | None = None) -> set[str]:
    """The ids of the sessions a gateway's `/sessions` lists (with a shared store: every
    gateway's), or of those the process `pid` serves."""
    with urllib.request.urlopen(f"{http}/sessions", timeout=10) as response:
        sessions = json.loads(response.read())["sessions"]
    return {s["session_id"] for s in sessions if pid is None or s["worker_pid"] == pid}
