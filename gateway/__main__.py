"""`python -m gateway [flags]`: serve the gateway with uvicorn (see `--help`)."""

from __future__ import annotations

import sys

import uvicorn

from gateway.app import create_app
from gateway.protocol.frames import MAX_MESSAGE_BYTES
from gateway.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The sans-I/O websockets protocol awaits socket drain on send: real backpressure.
        ws="websockets-sansio",
        ws_max_size=MAX_MESSAGE_BYTES,  # larger messages are refused with close code 1009
        ws_per_message_deflate=False,  # PCM and float frames barely compress
    )


if __name__ == "__main__":
    main(sys.argv[1:])
