"""`--workers N`: N gateway processes on one port, run by the process that started them.

Each worker binds its own listening socket with SO_REUSEPORT, and the kernel spreads new
connections over the workers. The supervisor makes a run directory for the instance with the
host-wide session table (`gateway.stores.host`) and prometheus_client's multiprocess
files, and removes it at exit. SIGTERM or SIGINT stops every worker (each drains: `gateway.drain`). When one worker exits on
its own the supervisor stops the others and exits with an error: a half-sized instance would
keep serving quietly, whereas its own supervisor (systemd, a container runtime) restarts the
whole set. A worker dies with the supervisor even when that is killed outright.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gateway.metrics import MULTIPROC_DIR_VARIABLE
from gateway.processes.server import serve
from gateway.settings import Settings
from gateway.stores.host import HostSessionStore, create_table

WORKER_STOP_TIMEOUT_S = 10.0  # after the drain: uvicorn's own shutdown before a kill
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until a signal (status 0) or a worker's exit (1)."""
    run_dir = Path(tempfile.mkdtemp(prefix="a2f-gateway-"))
    try:
        table = run_dir / "sessions"
        create_table(table, settings.max_sessions)
        (run_dir / "metrics").mkdir()
        os.environ[MULTIPROC_DIR_VARIABLE] = str(run_dir / "metrics")  # the workers inherit it
        # spawn: each worker imports prometheus_client afresh, with the variable set
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(
                target=run_worker, args=(settings, table, os.getpid()), name=f"worker-{n}"
            )
            for n in range(settings.workers)
        ]
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_cleanly)
        # SIGHUP reloads the tenants file: every worker is told (none of them dies of it).
        signal.signal(signal.SIGHUP, lambda signum, frame: _forward(workers, signum))
        try:
            for worker in workers:
                worker.start()
            ready = multiprocessing.connection.wait([worker.sentinel for worker in workers])
            ended = next(worker for worker in workers if worker.sentinel in ready)
            ended.join()  # the sentinel may signal an exit before the process can be reaped
            print(
                f"gateway worker {ended.pid} exited with code {ended.exitcode}; stopping",
                file=sys.stderr,
                flush=True,
            )
            return 1
        finally:
            _stop(workers, settings.drain_s + WORKER_STOP_TIMEOUT_S)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds through `supervise`, which stops the workers


def _forward(workers: Sequence[multiprocessing.process.BaseProcess], signum: int) -> None:
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signum)


def _stop(workers: Sequence[multiprocessing.process.BaseProcess], grace_s: float) -> None:
    started = [worker for worker in workers if worker.pid is not None]
    for worker in started:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + grace_s
    for worker in started:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()


def run_worker(settings: Settings, table: Path, supervisor: int) -> None:
    """One worker: the same start-up as a single gateway, on a SO_REUSEPORT socket."""
    _die_with(supervisor)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app listens for it (a reload)
    serve(settings, reuseport_socket(settings.host, settings.port), HostSessionStore(table))


def _die_with(supervisor: int) -> None:
    """SIGTERM (a graceful stop) to this process when the supervisor dies, however it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request above
        raise SystemExit(0)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
