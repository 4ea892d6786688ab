"""The API docs against the real gateway: `/schema` renders in headless Chromium from the
gateway's own assets (no request leaves loopback), and the OpenAPI document describes
`POST /v1/animate` (parameters, request media types, response formats, errors) and the
security schemes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from a2f_triton.gateway_process import GatewayProcess

from a2f_protocol.export_formats import MEDIA_TYPES
from tests.browser import CHROMIUM, chromium


def openapi(gateway: GatewayProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{gateway.http}/schema/openapi.json", timeout=10) as reply:
        document: dict[str, Any] = json.load(reply)
    return document


def test_animate_is_documented_with_its_parameters_bodies_responses_and_errors(
    gateway: GatewayProcess,
) -> None:
    document = openapi(gateway)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "name": "X-API-Key",
        "in": "header",
        "description": schemes["apiKey"]["description"],
    }
    animate = document["paths"]["/v1/animate"]["post"]
    names = {parameter["name"] for parameter in animate["parameters"]}
    assert {"format", "fps", "frame_rate", "emotions", "channels", "params", "Accept"} <= names
    bodies = animate["requestBody"]["content"]
    assert {"audio/wav", "application/octet-stream", "multipart/form-data"} <= set(bodies)
    assert "file" in bodies["multipart/form-data"]["schema"]["required"]
    responses = animate["responses"]
    assert set(responses["200"]["content"]) == set(MEDIA_TYPES.values())
    assert "X-A2F-Frame-Count" in responses["200"]["headers"]
    assert {"401", "403", "413", "415", "422", "429", "503"} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
    assert {"bearer": []} in animate["security"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (make test installs it)")
def test_schema_renders_offline_from_the_gateways_own_assets(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    with chromium(tmp_path / "profile") as page:
        page.command("Network.enable")
        page.goto(f"{gateway.http}/schema")
        # Redoc has drawn the operations once the animate endpoint's path is on the page.
        page.wait_for("document.body.innerText.includes('/v1/animate')", timeout_s=30)
        requested = [
            event["params"]["request"]["url"]
            for event in page.events
            if event.get("method") == "Network.requestWillBeSent"
        ]
        assert requested and all(url.startswith((gateway.http, "data:")) for url in requested), (
            requested
        )
        assert page.errors() == []
        page.screenshot("schema.png")
