"""Batch API fixtures: the real gateway subprocess on the real embedded Triton.

The gateway fixtures live in tests/gateway/conftest.py; a conftest cannot import another
conftest by name, so they are loaded from that file and re-exported here (one definition).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"

_spec = importlib.util.spec_from_file_location(
    "gateway_fixtures", PROJECT_ROOT / "tests" / "gateway" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_gateway_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _gateway_fixtures  # dataclasses look their module up
_spec.loader.exec_module(_gateway_fixtures)

GatewayProcess = _gateway_fixtures.GatewayProcess
start_gateway = _gateway_fixtures.start_gateway
gateway = _gateway_fixtures.gateway


@pytest.fixture(scope="session")
def speech_path() -> Path:
    return FIXTURES / "speech_16k.wav"
