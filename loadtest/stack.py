"""The measured processes every benchmark starts the same way: an embedded Triton, and
`loadtest.drive` load generators whose one JSON line is the result. Files go to `RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import die_with_parent, free_port, terminate

from loadtest.accounting import PROJECT_ROOT

STOP_GRACE_S = 10.0
RUN_DIR = PROJECT_ROOT / ".run" / "bench"


def triton_server(dynamic_batching: bool, repository: Path) -> EmbeddedTriton:
    return EmbeddedTriton(
        model_repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        dynamic_batching=dynamic_batching,
        run_dir=RUN_DIR,
    )


def start_driver(
    url: str, streams: int, fps: int, args: argparse.Namespace, *flags: str
) -> subprocess.Popen[bytes]:
    """`loadtest.drive` for `args.seconds` of `streams` real-time streams, in its own process."""
    command = [
        sys.executable, "-m", "loadtest.drive", "--url", url, "--streams", str(streams),
        "--fps", str(fps), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        "--audio", str(args.audio), "--model-repository", str(args.model_repository), *flags,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=die_with_parent)


def driver_result(child: subprocess.Popen[bytes], streams: int, args: argparse.Namespace) -> dict:
    """The driver's JSON line, or `{"failed": why}`; bounded in time, the driver stopped."""
    try:
        out, _ = child.communicate(timeout=args.seconds + 60 + streams * 0.1)
    except subprocess.TimeoutExpired:
        return {"failed": "load generator timed out"}
    finally:
        terminate(child, STOP_GRACE_S)
    if child.returncode != 0 or not out.strip():
        return {"failed": f"driver exit {child.returncode}"}
    result: dict = json.loads(out.decode().strip().splitlines()[-1])
    return result
