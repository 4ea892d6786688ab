"""Metrics of the batch API, taken around its route: requests by status, time to the response's
last byte, and bytes in and out. An ASGI middleware sees every outcome the same way, the
errors Litestar answers for the handler included, without touching the handler."""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from gateway.services import Services


class BatchMetrics(MiddlewareProtocol):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        services: Services = scope["litestar_app"].state.services
        metrics = services.metrics
        started = time.perf_counter()
        status = 500  # unless a response starts: the connection broke first
        received = sent = 0

        async def counted_receive() -> ReceiveMessage:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            metrics.batch_requests.labels(str(status)).inc()
            metrics.batch_seconds.observe(time.perf_counter() - started)
            metrics.batch_bytes.labels("in").inc(received)
            metrics.batch_bytes.labels("out").inc(sent)
