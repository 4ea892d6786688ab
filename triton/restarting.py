"""A gateway kept running by the runners (`make serve`, `make cluster`), as their watchdog keeps
Triton running: when it exits on its own (crashed, killed) it is started again on the same
port, at once the first time and after a growing delay when it keeps exiting; a crash loop
(`gateway.processes.restarts`) stops the runner with one line. SIGHUP is passed on to it (the
tenants file is read again), and held while a new one starts, so that none ends of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType

from a2f_triton.gateway_process import GatewayProcess
from a2f_triton.processes import LaunchError

from gateway.processes.reload_signal import reload_signal_held, take_reload_signal
from gateway.processes.restarts import Restarts, how_it_ended


class RestartingGateway:
    """`start()` (a `run_gateway(...)`) entered for the block, and again after each exit: call
    `check` periodically; `current` is the gateway running now."""

    def __init__(self, start: Callable[[], AbstractContextManager[GatewayProcess]]) -> None:
        self._start = start
        self._restarts = Restarts()
        self._stack = ExitStack()
        self._current: GatewayProcess | None = None

    @property
    def current(self) -> GatewayProcess:
        assert self._current is not None, "not started"
        return self._current

    def __enter__(self) -> RestartingGateway:
        self._launch()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._current = None
        self._stack.close()

    def _launch(self) -> None:
        with reload_signal_held():  # until it is ready: a SIGHUP waits, then goes to it
            self._current = self._stack.enter_context(self._start())

    def check(self) -> None:
        """Start the gateway again if it has exited; `LaunchError` on a crash loop."""
        code = self.current.process.poll()
        if code is None:
            return
        ended = f"gateway {self.current.process.pid} {how_it_ended(code)}"
        delay = self._restarts.exited(time.monotonic())
        if delay is None:
            raise LaunchError(f"{ended}: a crash loop ({self._restarts.describe_loop()})")
        print(f"{ended}; restarting it", file=sys.stderr, flush=True)
        # Stopped as a process group: workers and helpers of a gateway killed outright go too
        # (whatever they leave, the new gateway removes as it starts).
        self._current = None
        self._stack.close()
        time.sleep(delay)
        self._stack = ExitStack()
        self._launch()
        print(f"gateway ready again on {self.current.http}", flush=True)

    def forward(self, signum: int) -> None:
        """Send `signum` to the gateway, if one runs."""
        if self._current is not None and self._current.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._current.process.pid, signum)


def forward_reloads(gateways: list[RestartingGateway]) -> None:
    """From now on, SIGHUP to this runner goes to each of `gateways` (as they are then)."""
    take_reload_signal(lambda signum, frame: [g.forward(signum) for g in gateways])
