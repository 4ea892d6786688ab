"""A redis-server that the gateways of one host share (`make cluster`, the tests): Debian's
binary on loopback, nothing saved (a restart on the same port starts empty), stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from a2f_triton.processes import LOOPBACK, LaunchError, accepts_connections, running

START_TIMEOUT_S = 30.0


def redis_address(port: int) -> str:
    """The `--redis_url` of the redis-server `run_redis(port, ...)` starts."""
    return f"redis://{LOOPBACK}:{port}/0"


@contextmanager
def run_redis(port: int, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """redis-server on loopback `port`, accepting connections, for the block; its log in
    `run_dir`."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if binary is None:
        raise LaunchError("redis-server is not installed: `make cluster` installs it (apt-get)")
    command = [
        binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", str(run_dir),
    ]  # fmt: skip
    with running(
        command,
        partial(accepts_connections, LOOPBACK, port),
        name="redis-server",
        timeout_s=START_TIMEOUT_S,
        log=run_dir / "redis.log",
    ) as process:
        yield process
