"""Rejection log lines: one per kind and interval, no tracebacks, uvicorn's records mapped."""

from __future__ import annotations

import logging

import pytest

from gateway.drivers.rejections import RejectionLog, UvicornRejections


def test_one_line_per_kind_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rejections = RejectionLog(logging.getLogger("test.rejections"), 10.0, lambda: now[0])
    with caplog.at_level(logging.INFO, "test.rejections"):
        for _ in range(100):
            rejections.report("too_slow", "client too slow")
        rejections.report("idle_timeout", "no message for 60 s")
        now[0] = 11.0
        rejections.report("too_slow", "client too slow")
    assert [r.getMessage() for r in caplog.records] == [
        "client too slow",
        "no message for 60 s",
        "client too slow (99 more like it since the last report)",
    ]


def test_uvicorn_tracebacks_become_one_line(caplog: pytest.LogCaptureFixture) -> None:
    uvicorn_log = logging.getLogger("test.uvicorn")
    rejections = RejectionLog(logging.getLogger("test.rejections"), 10.0, lambda: 0.0)
    uvicorn_log.addFilter(UvicornRejections(rejections))
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            try:
                b"\xff".decode()
            except UnicodeDecodeError:
                uvicorn_log.exception("Invalid UTF-8 sequence received from client.")
        uvicorn_log.info("something else")
    assert [(r.name, r.exc_info) for r in caplog.records] == [
        ("test.rejections", None),
        ("test.uvicorn", None),
    ]
    assert caplog.records[0].getMessage() == "rejected text frame not UTF-8 (closed 1007)"
