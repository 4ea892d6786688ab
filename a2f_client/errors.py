"""Exceptions of the client library; `str()` is a one-line message fit for a CLI."""

from __future__ import annotations

import math

AUTH_CODES = ("unauthorized", "forbidden", "rate_limited")
"""`Error.code`s of a gateway refusing the caller's credentials."""
AUTH_CLOSE_CODES = {4401: "unauthorized", 4403: "forbidden", 4429: "rate_limited"}
"""The WebSocket close codes that follow those errors."""
AUTH_HTTP_STATUSES = {401: "unauthorized", 403: "forbidden"}


class A2FError(Exception):
    """Base of every client error."""


class ServerUnavailableError(A2FError):
    """Nothing answers at the URL (refused, unresolvable, timed out)."""


class ServerError(A2FError):
    """The server refused the request or reported a failure; `code` is its stable kind (the
    protocol `Error.code`, or the HTTP status as text); `retry_after_s` when the server said
    when the same request may succeed."""

    def __init__(
        self, message: str, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        if retry_after_s is not None:
            message += f" (retry in {max(1, math.ceil(retry_after_s))} s)"
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


class AuthError(ServerError):
    """The server refused the credentials (no key, a wrong or revoked one, a used ticket, an
    Origin not allowed, too many failed attempts): trying again the same way cannot help, and
    each try counts against the caller's address, so the client never retries it."""

    def __init__(
        self, message: str, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"refused ({code}): {message}", code, retry_after_s)


def server_error(
    message: str, code: str | None = None, retry_after_s: float | None = None
) -> ServerError:
    """The exception for a refusal: `AuthError` for the credential codes."""
    kind = AuthError if code in AUTH_CODES else ServerError
    return kind(message, code, retry_after_s)
