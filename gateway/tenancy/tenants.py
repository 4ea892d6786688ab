"""The tenants file: who may connect, with which keys, within which limits.

A TOML file (`--tenants_file`) of one table per tenant, written by `gateway.tenancy.cli`. Keys
are stored as SHA-256 hashes only: API keys are long random strings (see the CLI), so a fast
hash is as good as a slow one against guessing, and a leaked file gives no key away. A
presented key is hashed and compared with every stored hash in constant time, so timing says
nothing about which key (or how much of one) matched.

    version = 1                      # the file's schema (absent: 1)
    ticket_secret = "64 hex chars"   # signs browser tickets; shared by every gateway using the file

    [tenants.acme]
    max_sessions = 4                 # concurrent sessions (absent: only --max_sessions applies)
    audio_seconds_per_minute = 600   # streamed + batch audio (absent: no limit)
    batch_max_bytes = 104857600      # POST /v1/animate body (absent: --batch_max_bytes)
    extensions = ["emotions", "channels", "postprocess", "idle"]  # StartSession's (absent: all)
    allowed_origins = ["https://app.acme.example"]        # browser Origins (absent: none)
    admin = false                    # an admin key sees every tenant's sessions and /metrics
    keys = [
      {id = "k-3f9a", sha256 = "...", created = 2026-12-01T09:00:00Z},
      {id = "k-0b1c", sha256 = "...", created = 2026-11-02T09:00:00Z, revoked = 2026-12-01T09:05:00Z},
    ]

Unknown fields are refused rather than ignored: a misspelled limit (`max_session = 4`) would
otherwise leave a tenant unlimited without a word. So a new field is a new `version`, and a
gateway refuses a file newer than it reads with a message that says so, instead of failing on
the first field it does not know.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import stat
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

SCHEMA_VERSION: Final = 1  # raise it with every new field (see the module's docstring)
Extension = Literal["emotions", "channels", "postprocess", "idle"]
EXTENSIONS: tuple[Extension, ...] = ("emotions", "channels", "postprocess", "idle")
# Tenant ids name metrics labels and session-table records (32 bytes there).
TenantId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
KeyId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Instant = Annotated[datetime, Meta(tz=True)]
# What a limit a tenant leaves unset means (the CLI's list and the README say the same).
UNSET = {
    "max_sessions": "only the host's --max_sessions",
    "audio_seconds_per_minute": "no limit",
    "batch_max_bytes": "the host's --batch_max_bytes",
}


class KeyEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: KeyId
    sha256: Sha256
    created: Instant | None = None  # None: written before keys carried dates
    # A revoked key is refused; it stays listed (with when) so that its id, which audit lines
    # name, is never given to another key.
    revoked: Instant | None = None


class Tenant(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One tenant's keys and limits (`None`: no limit of the tenant's own, see `UNSET`)."""

    keys: list[KeyEntry] = msgspec.field(default_factory=list)
    max_sessions: Annotated[int, Meta(gt=0)] | None = None
    audio_seconds_per_minute: Annotated[float, Meta(gt=0)] | None = None
    batch_max_bytes: Annotated[int, Meta(gt=0)] | None = None
    extensions: list[Extension] = msgspec.field(default_factory=lambda: list(EXTENSIONS))
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    admin: bool = False


class TenantsFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    version: Literal[1] = SCHEMA_VERSION
    ticket_secret: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    tenants: dict[TenantId, Tenant] = msgspec.field(default_factory=dict)


class TenantsFileError(ValueError):
    """The tenants file cannot be read or is invalid; the text says where."""


class Identity(msgspec.Struct, frozen=True):
    """Who a request is: a tenant, through one of its keys."""

    tenant_id: str
    key_id: str
    tenant: Tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def now() -> datetime:
    """The time a key is created or revoked, to the second (as the file keeps it)."""
    return datetime.now(UTC).replace(microsecond=0)


def instant_text(value: datetime) -> str:
    """An instant as the file writes it (a TOML offset date-time, UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _newer(data: dict[str, object]) -> int | None:
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


def parse_tenants(text: str, where: str) -> TenantsFile:
    """A tenants file's text, checked: `TenantsFileError` names `where` and what is wrong."""
    try:
        data = tomllib.loads(text)
        if (version := _newer(data)) is not None:
            raise TenantsFileError(
                f"tenants file {where} is version {version}, this gateway reads version "
                f"{SCHEMA_VERSION}: upgrade the gateway (or keep the file at version "
                f"{SCHEMA_VERSION})"
            )
        tenants = msgspec.convert(data, TenantsFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise TenantsFileError(f"tenants file {where}: {exc}") from exc
    ids = [key.id for tenant in tenants.tenants.values() for key in tenant.keys]
    if len(ids) != len(set(ids)):
        raise TenantsFileError(f"tenants file {where}: a key id is used twice")
    return tenants


def load_tenants(path: Path) -> TenantsFile:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantsFileError(f"tenants file {path}: {exc}") from exc
    return parse_tenants(text, str(path))


# -- writing (the CLI) -------------------------------------------------------------------------


def _value(value: object) -> str:
    """One TOML value: JSON strings, numbers, booleans and arrays are TOML too."""
    if isinstance(value, datetime):
        return instant_text(value)
    return json.dumps(value)


def render(tenants: TenantsFile) -> str:
    lines = [
        "# open-a2f tenants (gateway.tenancy.tenants), written by python -m gateway.tenancy.cli:",
        "# keys are SHA-256 hashes; comments are not kept when the CLI writes the file.",
        f"version = {tenants.version}",
    ]
    if tenants.ticket_secret is not None:
        lines.append(f"ticket_secret = {_value(tenants.ticket_secret)}")
    for tenant_id, tenant in tenants.tenants.items():
        lines += ["", f"[tenants.{_value(tenant_id)}]"]
        for name, value in msgspec.structs.asdict(tenant).items():
            if name != "keys" and value is not None:
                lines.append(f"{name} = {_value(value)}")
        lines.append("keys = [")
        for key in tenant.keys:
            fields = ", ".join(
                f"{name} = {_value(value)}"
                for name, value in msgspec.structs.asdict(key).items()
                if value is not None
            )
            lines.append(f"  {{{fields}}},")
        lines.append("]")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held while the file is read, changed and written, so that two CLI runs at once do not
    lose each other's change (the lock is a sibling file: the file itself is replaced)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_tenants(path: Path, tenants: TenantsFile) -> None:
    """Replace the file whole: a temporary file renamed over it, so that a gateway reloading it
    reads the old file or the new one, never half of one. What it writes is checked as a
    gateway would read it first. A new file is private (0600); a replaced one keeps its mode
    and, where allowed, its owner, so that a gateway running as another user still reads it."""
    text = render(tenants)
    parse_tenants(text, str(path))
    try:
        old: os.stat_result | None = path.stat()
    except FileNotFoundError:
        old = None
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            if old is not None:
                os.fchmod(out.fileno(), stat.S_IMODE(old.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(out.fileno(), old.st_uid, old.st_gid)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)


# -- reading (the gateway) ---------------------------------------------------------------------


class TenantDirectory:
    """The tenants of one file, looked up by their keys that are not revoked."""

    def __init__(self, tenants: TenantsFile) -> None:
        self.file = tenants
        self._keys = [
            (bytes.fromhex(key.sha256), Identity(tenant_id, key.id, tenant))
            for tenant_id, tenant in tenants.tenants.items()
            for key in tenant.keys
            if key.revoked is None
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
