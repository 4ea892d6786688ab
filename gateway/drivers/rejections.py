"""One log line per kind of rejected input, rate-limited, never a traceback.

The gateway's own closes (too slow, idle, inference) report here, and so do the rejections
uvicorn logs itself: a text frame that is not UTF-8 (uvicorn closes with 1007 and logs an
ERROR with a traceback for each one) or a request that is not HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.drivers.log_throttle import RateLimiter

REPORT_INTERVAL_S = 10.0

# uvicorn's (and websockets') messages for input it refused, and what we call that input.
UVICORN_REJECTIONS = {
    "Invalid UTF-8 sequence received from client.": "text frame not UTF-8 (closed 1007)",
    "Invalid HTTP request received.": "invalid HTTP request (400)",
    "Unsupported upgrade request.": "unsupported HTTP upgrade",
    "opening handshake failed": "WebSocket handshake failed",
}


class RejectionLog:
    """`report(kind, line)` logs `line` if no line of that kind was logged in the last
    `interval_s`, with the number of lines of the kind left out since."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.limiter = RateLimiter(interval_s)
        self.clock = clock

    def report(self, kind: str, line: str) -> None:
        skipped = self.limiter.allow(kind, self.clock())
        if skipped is None:
            return
        more = f" ({skipped} more like it since the last report)" if skipped else ""
        self.logger.warning("%s%s", line, more)


class UvicornRejections(logging.Filter):
    """On uvicorn's logger: its rejection records become `RejectionLog` lines."""

    def __init__(self, rejections: RejectionLog) -> None:
        super().__init__()
        self.rejections = rejections

    def filter(self, record: logging.LogRecord) -> bool:
        kind = UVICORN_REJECTIONS.get(str(record.msg))
        if kind is None:
            return True
        self.rejections.report(kind, f"rejected {kind}")
        return False


REJECTIONS = RejectionLog(logging.getLogger("gateway.drivers.rejections"))
"""The process's one rejection log (rate limits are per process)."""


def quiet_uvicorn_rejections() -> None:
    """Route uvicorn's per-input rejection records through `REJECTIONS`."""
    logging.getLogger("uvicorn.error").addFilter(UvicornRejections(REJECTIONS))
