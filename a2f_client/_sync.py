"""Run an async iterator on a private event loop in a thread and iterate it synchronously."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class _Done:
    """The producer finished."""


_DONE = _Done()


def iterate_in_thread(
    make: Callable[[], AsyncGenerator[T, None]], buffer: int = 256
) -> Iterator[T]:
    """Items of `make()` as they come; its exception is re-raised here. Leaving the loop early
    stops the producer (it sees the stop flag at its next item)."""
    items: queue.Queue[T | _Failure | _Done] = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def put(item: T | _Failure | _Done) -> bool:
        # Bounded queue: a slow consumer slows the producer (and so the server) down.
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    async def produce() -> None:
        iterator = make()
        try:
            async for item in iterator:
                if not await asyncio.to_thread(put, item):
                    return
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            put(_Failure(exc))
            return
        finally:
            await iterator.aclose()
        put(_DONE)

    worker = threading.Thread(target=lambda: asyncio.run(produce()), daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
