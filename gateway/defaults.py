"""Names every layer shares."""

from __future__ import annotations

DEFAULT_TENANT = ""  # the one tenant of a gateway without a tenants file
