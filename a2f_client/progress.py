"""A one-line stderr progress bar (no dependency): `[#####.....]  45%  12.3 s / 27.0 s`."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
MIN_INTERVAL_S = 0.1


class ProgressBar:
    """Redraws in place; silent when disabled (e.g. stderr is not a terminal)."""

    def __init__(self, total_s: float, *, enabled: bool, out: TextIO = sys.stderr) -> None:
        self.total_s = total_s
        self.enabled = enabled
        self.out = out
        self._drawn = 0.0
        self._fraction = 0.0

    def update(self, fraction: float) -> None:
        self._fraction = min(max(fraction, 0.0), 1.0)
        now = time.monotonic()
        if self.enabled and now - self._drawn >= MIN_INTERVAL_S:
            self._drawn = now
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.out.write("\n")
            self.out.flush()

    def _draw(self) -> None:
        filled = int(self._fraction * WIDTH)
        done = self._fraction * self.total_s
        self.out.write(
            f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {self._fraction:4.0%}"
            f"  {done:.1f} s / {self.total_s:.1f} s"
        )
        self.out.flush()
