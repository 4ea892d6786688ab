"""Exceptions of the client library; `str()` is a one-line message fit for a CLI."""

from __future__ import annotations


class A2FError(Exception):
    """Base of every client error."""


class ServerUnavailableError(A2FError):
    """Nothing answers at the URL (refused, unresolvable, timed out)."""


class ServerError(A2FError):
    """The server refused the request or reported a failure; `code` is its stable kind (the
    protocol `Error.code`, or the HTTP status as text)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
