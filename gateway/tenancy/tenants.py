"""The tenants file: who may connect, with which keys, within which limits.

A TOML file (`--tenants_file`) of one table per tenant. Keys are stored as SHA-256 hashes
only: API keys are long random strings (see `gateway.tenancy.cli`), so a fast hash is as
good as a slow one against guessing, and a leaked file gives no key away. A presented key is
hashed and compared with every stored hash in constant time, so timing says nothing about
which key (or how much of one) matched.

    ticket_secret = "64 hex chars"   # signs browser tickets; shared by every gateway using the file

    [tenants.acme]
    max_sessions = 4                 # concurrent sessions (absent: only --max_sessions applies)
    audio_seconds_per_minute = 600   # streamed + batch audio (absent: unlimited)
    batch_max_bytes = 104857600      # POST /v1/animate body (absent: --batch_max_bytes)
    extensions = ["emotions", "channels", "postprocess"]  # StartSession extensions allowed
    allowed_origins = ["https://app.acme.example"]        # browser Origins accepted
    admin = false                    # an admin key sees every tenant's sessions and /metrics
    keys = [{id = "k-3f9a", sha256 = "..."}]
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Extension = Literal["emotions", "channels", "postprocess"]
EXTENSIONS: tuple[Extension, ...] = ("emotions", "channels", "postprocess")
# Tenant ids name metrics labels and session-table records (32 bytes there).
TenantId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
KeyId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class KeyEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: KeyId
    sha256: Sha256


class Tenant(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One tenant's keys and limits (`None`: no limit of the tenant's own)."""

    keys: list[KeyEntry] = msgspec.field(default_factory=list)
    max_sessions: Annotated[int, Meta(gt=0)] | None = None
    audio_seconds_per_minute: Annotated[float, Meta(gt=0)] | None = None
    batch_max_bytes: Annotated[int, Meta(gt=0)] | None = None
    extensions: list[Extension] = msgspec.field(default_factory=lambda: list(EXTENSIONS))
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    admin: bool = False


class TenantsFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tenants: dict[TenantId, Tenant] = msgspec.field(default_factory=dict)
    ticket_secret: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None


class TenantsFileError(ValueError):
    """The tenants file cannot be read or is invalid; the text says where."""


class Identity(msgspec.Struct, frozen=True):
    """Who a request is: a tenant, through one of its keys."""

    tenant_id: str
    key_id: str
    tenant: Tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_tenants(path: Path) -> TenantsFile:
    try:
        data = tomllib.loads(path.read_text())
        tenants = msgspec.convert(data, TenantsFile)
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantsFileError(f"tenants file {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise TenantsFileError(f"tenants file {path}: {exc}") from exc
    ids = [key.id for tenant in tenants.tenants.values() for key in tenant.keys]
    if len(ids) != len(set(ids)):
        raise TenantsFileError(f"tenants file {path}: a key id is used twice")
    return tenants


class TenantDirectory:
    """The tenants of one file, looked up by key."""

    def __init__(self, tenants: TenantsFile) -> None:
        self.file = tenants
        self._keys = [
            (bytes.fromhex(key.sha256), Identity(tenant_id, key.id, tenant))
            for tenant_id, tenant in tenants.tenants.items()
            for key in tenant.keys
        ]
        self.key_ids = frozenset(identity.key_id for _, identity in self._keys)

    def identify(self, key: str) -> Identity | None:
        """The tenant whose key this is. Every stored hash is compared, each in constant
        time, so the time taken depends on the number of keys alone."""
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, identity in self._keys:
            if hmac.compare_digest(stored, digest):
                found = identity
        return found

    def by_key_id(self, key_id: str) -> Identity | None:
        return next((identity for _, identity in self._keys if identity.key_id == key_id), None)
