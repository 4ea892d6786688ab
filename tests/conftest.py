"""Shared fixtures: free loopback ports and one real embedded Triton server per test session."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "triton"))  # launch.py is a script dir, not a package

from launch import EmbeddedTriton  # noqa: E402


def free_port() -> int:
    """A port nothing listens on now; a running `make serve` keeps its own ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
