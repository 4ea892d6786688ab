"""The API documentation under `/schema`, readable offline: Swagger UI with its scripts and
style served by the gateway from `docs_assets/` (`make docs-assets` fetches them from npm;
NOTICE holds their licence), no font or icon from a CDN, and the OpenAPI document's security
schemes."""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router

DOCS_ASSETS = Path(__file__).with_name("docs_assets")
_ASSETS_PATH = "/schema/assets"

# The credentials every authenticated entry point takes when there is a tenants file
# (gateway.tenancy.gatekeeper); without one, nothing is asked.
SECURITY_COMPONENTS = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API key of the tenants file: `Authorization: Bearer <key>`.",
        ),
        "apiKey": SecurityScheme(
            type="apiKey",
            name="X-API-Key",
            security_scheme_in="header",
            description="The same API key in `X-API-Key`.",
        ),
    }
)
SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at `/schema` and `/schema/swagger`, the document at `/schema/openapi.json`."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{_ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{_ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{_ASSETS_PATH}/swagger-ui-standalone-preset.js",
        path=["/", "/swagger"],
        favicon="<link rel='icon' href='data:,'>",
    )
    return [swagger, JsonRenderPlugin()]


def docs_assets_router() -> Router:
    """The viewer's script: a public library, served without a key even where `/schema` needs
    one (a browser cannot add a key to a script's request)."""
    return create_static_files_router(
        path=_ASSETS_PATH, directories=[DOCS_ASSETS], name="docs_assets", include_in_schema=False
    )
