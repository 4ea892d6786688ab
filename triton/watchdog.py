"""Restart the embedded Triton when its model stops answering (`make serve` runs this).

A python-backend stub that dies (killed, out of memory) is never restarted by Triton, and the
server and its models keep reporting ready while every request fails or hangs. The watchdog
runs the gateway's own health probe (`gateway.inference.triton_client.TritonClient.probe`: a one-window
inference through the ensemble) and, after `failures` probes in a row fail, or as soon as the
server process is gone, restarts Triton on the same ports; the gateway's channel reconnects by
itself. A few failures in a row, each with a generous deadline, are needed before a restart, so
that a merely overloaded server is not restarted under its load.
"""

from __future__ import annotations

import asyncio
import sys

from a2f_triton.launch import EmbeddedTriton
from a2f_triton.repository import ENSEMBLE

from gateway.inference.contract import ProbeError
from gateway.inference.triton_client import TritonClient

RESTART_GRACE_S = 2.0  # a server whose model is broken has no in-flight work worth waiting for


class Watchdog:
    """Call `check` periodically from the launcher's main thread."""

    def __init__(self, server: EmbeddedTriton, *, failures: int, probe_timeout_s: float) -> None:
        self.server = server
        self.failures = failures
        self.probe_timeout_s = probe_timeout_s
        self._failed = 0
        # One event loop and one gRPC channel for the watchdog's life; the channel reconnects
        # to a restarted server by itself.
        self._loop = asyncio.Runner()
        self._client: TritonClient | None = None

    def check(self) -> None:
        """One probe; restart the server when it has failed `failures` times in a row."""
        code = self.server.exit_code
        if code is not None:
            reason, self._failed = f"tritonserver exited with code {code}", self.failures
        else:
            reason = self._loop.run(self._probe())
            self._failed = 0 if reason is None else self._failed + 1
        if reason is None or self._failed < self.failures:
            return
        print(f"triton: {reason}; restarting it", file=sys.stderr, flush=True)
        self.server.stop(RESTART_GRACE_S)
        self.server.start()
        self._failed = 0
        print(f"triton ready again on {self.server.grpc_url}", flush=True)

    def close(self) -> None:
        if self._client is not None:
            self._loop.run(self._client.close())
        self._loop.close()

    async def _probe(self) -> str | None:
        if self._client is None:
            self._client = TritonClient(self.server.grpc_url, ENSEMBLE, self.probe_timeout_s)
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                await self._client.probe()
        except ProbeError as exc:
            return f"probe failed: {exc}"
        except TimeoutError:
            return f"probe: no answer within {self.probe_timeout_s:g} s"
        return None
