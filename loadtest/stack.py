"""The measured processes every benchmark starts the same way: an embedded Triton, a gateway
with a tenants file for the scenarios between tenants, and `loadtest.drive` load generators
whose one JSON line is the result. Files go to `RUN_DIR`."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import die_with_parent, free_port, terminate

from gateway import grpc_runtime
from gateway.tenancy.cli import main as tenants_cli
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


def new_key(path: Path, tenant: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(["add", str(path), tenant])
    return out.getvalue().strip().rsplit(" ", 1)[1]


def bearer(key: str) -> tuple[str, str]:
    """`loadtest.drive`'s flag for an API key."""
    return "--header", f"Authorization: Bearer {key}"


@contextmanager
def tenants_stack(
    name: str, tenants: tuple[str, ...], fps: int, repository: Path
) -> Iterator[tuple[EmbeddedTriton, GatewayProcess, list[str]]]:
    """Triton and one gateway with a tenants file of `tenants`, and one key of each."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = RUN_DIR / f"{name}-tenants.toml"
    path.unlink(missing_ok=True)
    keys = [new_key(path, tenant) for tenant in tenants]
    flags = [
        "--fps", str(fps), "--max_sessions", "4096", "--log_level", "warning",
        "--model-repository", str(repository),
        "--tenants_file", str(path), "--audit_client_address", "none",
    ]  # fmt: skip
    with (
        triton_server(dynamic_batching=True, repository=repository) as triton,
        run_gateway(triton.grpc_url, *flags, log=RUN_DIR / f"{name}-gateway.log") as gateway,
    ):
        yield triton, gateway, keys


def start_driver(
    url: str,
    streams: int,
    fps: int,
    args: argparse.Namespace,
    *flags: str,
    driver: str = "loadtest.drive",
) -> subprocess.Popen[bytes]:
    """`loadtest.drive` (or `driver`, `loadtest.drive_ace`) for `args.seconds` of `streams`
    real-time streams, in its own process."""
    command = [
        sys.executable, "-m", driver, "--url", url, "--streams", str(streams),
        "--fps", str(fps), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        "--audio", str(args.audio), "--model-repository", str(args.model_repository), *flags,
    ]  # fmt: skip
    env = grpc_runtime.environment()  # the ACE driver's gRPC client as the gateway's
    return subprocess.Popen(command, stdout=subprocess.PIPE, env=env, preexec_fn=die_with_parent)


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
