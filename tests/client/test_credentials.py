"""Credentials and refusals in the client, without a server: where a key, a ticket and a CA file
go, what a message may show, and which refusals a stream gives up on."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from a2f_client.credentials import Credentials, has_ticket, redacted
from a2f_client.errors import AuthError, ServerError, server_error
from a2f_client.streaming import _resumable


def test_the_key_comes_from_the_argument_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("A2F_API_KEY", "a2f_env")
    assert Credentials.resolve().headers() == {"Authorization": "Bearer a2f_env"}
    assert Credentials.resolve("a2f_arg").headers() == {"Authorization": "Bearer a2f_arg"}
    monkeypatch.delenv("A2F_API_KEY")
    assert Credentials.resolve().headers() == {}


def test_a_ticket_goes_in_the_query_and_never_into_messages() -> None:
    address = Credentials(ticket="t+1/x").websocket_address("wss://h:1/?ticket=old&a=b")
    assert has_ticket(address) and "old" not in address and "a=b" in address
    assert "t%2B1%2Fx" in address  # encoded: a ticket is opaque text
    assert redacted(address) == "wss://h:1/?a=b&ticket=<redacted>"
    assert Credentials().websocket_address("ws://h:1/") == "ws://h:1/"


def test_ca_file_and_insecure_make_the_tls_context(
    self_signed_certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    assert Credentials().ssl_context() is None  # the library's defaults
    context = Credentials(ca_file=self_signed_certificate[0]).ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    loose = Credentials(insecure=True).ssl_context()
    assert loose is not None and loose.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="CA file"):
        Credentials(ca_file=tmp_path / "missing.pem").ssl_context()


def test_refusals_name_their_cause_and_when_to_retry() -> None:
    limited = server_error("Too many failed attempts; slow down", "rate_limited", 41.2)
    assert isinstance(limited, AuthError)
    assert (
        str(limited)
        == "refused (rate_limited): Too many failed attempts; slow down (retry in 42 s)"
    )
    busy = server_error("server busy", "busy", 0.3)
    assert type(busy) is ServerError and str(busy) == "server busy (retry in 1 s)"


@pytest.mark.parametrize(
    ("code", "resumed"),
    [("shutting_down", True), ("closed", True), ("unauthorized", False),
     ("forbidden", False), ("rate_limited", False), ("busy", False)],
)  # fmt: skip
def test_a_stream_resumes_after_a_drain_or_a_cut_never_after_a_refusal(
    code: str, resumed: bool
) -> None:
    assert _resumable(server_error("x", code)) is resumed
