"""`--workers N`: N gateway processes on one port, kept running by the process that started them.

Each worker binds its own listening socket with SO_REUSEPORT, and the kernel spreads new
connections over the workers; a worker that dies takes only its own connections with it. The
supervisor makes a run directory for the instance with the host-wide session table
(`gateway.stores.host`), prometheus_client's multiprocess files and its own state for
`/health` (`gateway.stores.workers_state`), and removes it at exit.

A worker that exits on its own (crashed, killed) is started again (`gateway.processes.restarts`:
at once, then with a growing delay) while the others serve on untouched; its session slots
are free at once (the table frees the records of a process that is gone), and its shared-memory
region and live metrics are removed. A worker that exits too often is a crash loop: it is
no longer restarted, which the log and `/health` say, and the supervisor exits with an error
once no worker is left. SIGTERM or SIGINT stops every worker (each drains: `gateway.drain`);
SIGHUP is passed on to every worker (the tenants file is read again). A worker dies with the
supervisor even when that is killed outright; what the supervisor then leaves behind is removed
by the next gateway to start (`gateway.processes.leftovers`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

from gateway.metrics import MULTIPROC_DIR_VARIABLE
from gateway.processes.leftovers import remove_regions_of, run_dir_prefix
from gateway.processes.reload_signal import reload_signal_held, take_reload_signal
from gateway.processes.restarts import Restarts, how_it_ended
from gateway.processes.server import serve
from gateway.settings import Settings
from gateway.stores.host import HostSessionStore, create_table
from gateway.stores.workers_state import (
    WORKERS_STATE_VARIABLE,
    WorkersState,
    write_workers_state,
)

WORKER_STOP_TIMEOUT_S = 10.0  # after the drain: uvicorn's own shutdown before a kill
PR_SET_PDEATHSIG = 1  # linux/prctl.h

Worker = multiprocessing.process.BaseProcess


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until a signal (status 0) or until none is left (1)."""
    run_dir = Path(tempfile.mkdtemp(prefix=run_dir_prefix(os.getpid())))
    try:
        table = run_dir / "sessions"
        create_table(table, settings.max_sessions)
        (run_dir / "metrics").mkdir()
        # The workers inherit both variables.
        os.environ[MULTIPROC_DIR_VARIABLE] = str(run_dir / "metrics")
        os.environ[WORKERS_STATE_VARIABLE] = str(run_dir / "workers.json")
        supervisor = Supervisor(settings, table, run_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_cleanly)
        try:
            take_reload_signal(lambda signum, frame: supervisor.forward(signum))
            return supervisor.run()
        finally:
            supervisor.stop(settings.drain_s + WORKER_STOP_TIMEOUT_S)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds through `supervise`, which stops the workers


class Supervisor:
    """The worker slots, each with its process (None while it waits for a restart)."""

    def __init__(self, settings: Settings, table: Path, run_dir: Path) -> None:
        self.settings = settings
        self.table = table
        self.run_dir = run_dir
        # spawn: each worker imports prometheus_client afresh, with the variable set
        self.context = multiprocessing.get_context("spawn")
        slots = range(settings.workers)
        self.workers: dict[int, Worker | None] = dict.fromkeys(slots)
        self.restarts = {slot: Restarts() for slot in slots}
        self.due: dict[int, float] = dict.fromkeys(slots, 0.0)  # slot -> when to start it
        self.crash_loop = False
        self.last_exit = ""

    def run(self) -> int:
        while self.workers or self.due:
            self._start_due()
            self._publish()
            running = {w.sentinel: slot for slot, w in self.workers.items() if w is not None}
            wait_s = max(0.0, min(self.due.values()) - time.monotonic()) if self.due else None
            for sentinel in multiprocessing.connection.wait(list(running), wait_s):
                self._ended(running[sentinel])  # type: ignore[index]  # sentinels are ints
        print("gateway: no worker left; stopping", file=sys.stderr, flush=True)
        return 1

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in [slot for slot, at in self.due.items() if at <= now]:
            del self.due[slot]
            worker = self.context.Process(
                target=run_worker,
                args=(self.settings, self.table, os.getpid()),
                name=f"worker-{slot}",
            )
            with reload_signal_held():  # a SIGHUP before the worker takes it would end it
                worker.start()
            self.workers[slot] = worker

    def _ended(self, slot: int) -> None:
        worker = self.workers[slot]
        assert worker is not None
        worker.join()  # reaped: the session table sees its PID gone and frees its slots
        assert worker.pid is not None
        self.last_exit = f"worker {worker.pid} {how_it_ended(worker.exitcode)}"
        remove_regions_of(worker.pid, tracked=True)
        # its live gauges leave the sums
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
        delay = self.restarts[slot].exited(time.monotonic())
        if delay is None:
            del self.workers[slot]
            self.crash_loop = True
            message = f"crash loop ({self.restarts[slot].describe_loop()}): not restarted"
        else:
            self.workers[slot] = None
            self.due[slot] = time.monotonic() + delay
            message = "restarting it" + (f" in {delay:g} s" if delay else "")
        print(f"gateway: {self.last_exit}; {message}", file=sys.stderr, flush=True)

    def _publish(self) -> None:
        write_workers_state(
            self.run_dir / "workers.json",
            WorkersState(
                workers=self.settings.workers,
                running=sum(w is not None and w.is_alive() for w in self.workers.values()),
                restarts=sum(r.total for r in self.restarts.values()),
                crash_loop=self.crash_loop,
                last_exit=self.last_exit,
            ),
        )

    def forward(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker is not None and worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    def stop(self, grace_s: float) -> None:
        started = [w for w in self.workers.values() if w is not None and w.pid is not None]
        for worker in started:
            if worker.is_alive():
                worker.terminate()
        deadline = time.monotonic() + grace_s
        for worker in started:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
            assert worker.pid is not None
            remove_regions_of(worker.pid, tracked=True)  # those a killed worker left


def run_worker(settings: Settings, table: Path, supervisor: int) -> None:
    """One worker: the same start-up as a single gateway, on a SO_REUSEPORT socket."""
    _die_with(supervisor)
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
