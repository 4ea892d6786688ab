"""Child servers of the service runner, the tests and the benchmarks: start one, wait until it
answers, stop it by PID. Nothing here knows which server it runs."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 20.0
POLL_INTERVAL_S = 0.2


class LaunchError(RuntimeError):
    """A server could not be found, set up or brought to readiness."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (tests and benchmarks run beside a `make serve`)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the launcher dies, so a
    crashed or killed parent (a test runner included) never leaves an orphaned server."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(
    command: list[str], log: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`command` with its output appended to `log` (inherited when None), no stdin."""
    # Unbuffered, so that a log read after a failed start holds the last words.
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    if log is None:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, env=environment, preexec_fn=die_with_parent
        )
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            preexec_fn=die_with_parent,
        )


def terminate(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, a grace period for in-flight requests, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def answers_ok(url: str) -> bool:
    """`url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def accepts_connections(host: str, port: int) -> bool:
    """Something listens on `host:port` now (for servers without an HTTP readiness route)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    timeout_s: float,
    log: Path | None = None,
) -> None:
    """Poll `ready` until it holds; a child that exits or stays unready raises `LaunchError`
    with the end of its log."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise LaunchError(
                f"{name} exited with code {process.returncode} during start-up; "
                f"last log lines:\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{name} not ready after {timeout_s:.0f} s; last log lines:\n{log_tail(log)}"
            )
        time.sleep(POLL_INTERVAL_S)


@contextmanager
def running(
    command: list[str],
    ready: Callable[[], bool],
    *,
    name: str,
    timeout_s: float,
    log: Path | None = None,
    grace_s: float = STOP_GRACE_S,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` started and ready for the block; always stopped by PID when it ends."""
    process = spawn(command, log, env)
    try:
        wait_ready(process, ready, name=name, timeout_s=timeout_s, log=log)
        yield process
    finally:
        terminate(process, grace_s)
