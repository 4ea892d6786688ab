"""Child servers of the service runner, the tests and the benchmarks: start one, wait until it
answers, stop it by PID. Nothing here knows which server it runs."""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
    """`command` with its output appended to `log` (inherited when None), no stdin, leading
    a process group of its own that its children (Triton's python-backend stubs) join."""
    # Unbuffered, so that a log read after a failed start holds the last words.
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    with contextlib.ExitStack() as stack:
        sink = None if log is None else stack.enter_context(log.open("ab"))
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=None if sink is None else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            preexec_fn=die_with_parent,
            process_group=0,
        )


def terminate(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, a grace period for in-flight requests, then SIGKILL; then whatever is left of
    its process group. A server killed outright (or stopped past its grace) cannot stop its own
    children: python-backend stubs re-parented to init would live on, holding shared memory."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # A group with the child's id exists only if the child led it (as `spawn` makes it), and
    # the kernel keeps that id from being reused while any member lives: only our child's
    # leftovers are reached.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def port_in_use(host: str, port: int) -> str | None:
    """None when `host:port` can be listened on; else why not, in a few words: a busy port
    names the process listening there when this user may see it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"{host}:{port}: {exc.strerror}"
    holder = _listener(port)
    return f"port {port} is in use" + (f" by pid {holder[0]} ({holder[1]})" if holder else "")


def _listener(port: int) -> tuple[int, str] | None:
    """The first process with a socket listening on `port` (any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (process / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(process.name), (process / "comm").read_text().strip()
    return None


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """`LaunchError` naming the first busy port (`ports` maps what would listen to its port):
    called before anything starts, so a second instance changes nothing of the first."""
    for what, port in ports.items():
        busy = port_in_use(host, port)
        if busy is not None:
            raise LaunchError(f"{busy}; {what} cannot listen there")


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
