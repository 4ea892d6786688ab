"""`--demo_tenant` is checked at start-up: it needs a tenants file naming that tenant with a key
(the demo's tickets are issued on it) and the page's origin among its allowed origins."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import Settings
from gateway.tenancy.gatekeeper import startup_problem
from gateway.tenancy.tenants import hash_key
from gateway.web.demo import demo_open

KEY = f'keys = [{{id = "d-1", sha256 = "{hash_key("demo-key")}"}}]\n'


def problem(tmp_path: Path, tenants: str | None) -> str | None:
    path = tmp_path / "tenants.toml"
    if tenants is not None:
        path.write_text(tenants)
    file = str(path) if tenants is not None else ""
    return startup_problem(Settings(tenants_file=file, demo_tenant="demo"))


def test_demo_tenant_needs_a_tenants_file(tmp_path: Path) -> None:
    assert "needs --tenants_file" in (problem(tmp_path, None) or "")


def test_demo_tenant_needs_the_tenant_a_key_and_an_origin(tmp_path: Path) -> None:
    origin = 'allowed_origins = ["http://127.0.0.1:8765"]\n'
    for tenants in (
        "[tenants.other]\n" + KEY,
        "[tenants.demo]\n" + origin,
        "[tenants.demo]\n" + KEY,
    ):
        assert "--demo_tenant demo" in (problem(tmp_path, tenants) or ""), tenants
    assert problem(tmp_path, "[tenants.demo]\n" + origin + KEY) is None


def test_with_a_tenants_file_the_demo_is_served_only_for_a_demo_tenant() -> None:
    assert demo_open(Settings())
    assert not demo_open(Settings(tenants_file="tenants.toml"))
    assert demo_open(Settings(tenants_file="tenants.toml", demo_tenant="demo"))
