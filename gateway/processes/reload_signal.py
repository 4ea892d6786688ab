"""SIGHUP means "read the tenants file again", and must never stop a process.

Its default action ends a process, and a child keeps that default from its start until it
installs its own handling. So a parent blocks SIGHUP while it starts a child (`held`): the
child inherits the blocked mask through fork and exec, and unblocks it once it handles or
ignores the signal (`take`). A SIGHUP sent in between waits, pending, instead of killing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers


@contextmanager
def reload_signal_held() -> Iterator[None]:
    """Block SIGHUP in this thread for the block: children started in it inherit it blocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def take_reload_signal(handler: Handler) -> None:
    """Handle SIGHUP with `handler` (or ignore it: `signal.SIG_IGN`) from now on, and take
    any that arrived while it was blocked."""
    signal.signal(signal.SIGHUP, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
