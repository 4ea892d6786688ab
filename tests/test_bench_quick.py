"""`make bench QUICK=1` end to end: real Triton, real gateway, one level of real-time streams
over the WebSocket and over NVIDIA's gRPC API, unpaced gRPC streams, then uploads through
`POST /v1/animate` beside streams of another tenant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_bench_loses_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,  # the quick mode's promise: under 3 minutes
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "quick: ok" in done.stdout
    assert "| grpc | 30 |" in done.stdout and "| grpc-unpaced | 30 |" in done.stdout
    # what a frame costs, by process and by Triton's models, and what it moves to Triton
    assert "CPU us per frame, triton at 30 fps" in done.stdout
    assert "a2f_net" in done.stdout and "bytes per frame" in done.stdout
