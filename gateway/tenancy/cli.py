"""`python -m gateway.tenancy.cli`: add a tenant or a key (printed once), revoke a key.

    python -m gateway.tenancy.cli add tenants.toml acme --max-sessions 4 --origin https://app.acme.example
    python -m gateway.tenancy.cli revoke tenants.toml k-3f9a

The file is rewritten whole (to a temporary file, then renamed over the old one), so a gateway
reloading it never reads half a file. Only the key's hash is written; the key itself is printed
once and cannot be recovered.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gateway.tenancy.tenants import (
    EXTENSIONS,
    KeyEntry,
    Tenant,
    TenantsFile,
    TenantsFileError,
    hash_key,
    load_tenants,
)

KEY_PREFIX = "a2f_"


def new_key() -> tuple[str, str]:
    """A key id (public, appears in logs) and the key itself (secret)."""
    return f"k-{secrets.token_hex(4)}", KEY_PREFIX + secrets.token_urlsafe(32)


def render(tenants: TenantsFile) -> str:
    """The file as TOML (JSON strings and arrays are valid TOML values)."""
    lines = ["# open-a2f tenants: keys are SHA-256 hashes (gateway.tenancy.tenants)."]
    if tenants.ticket_secret is not None:
        lines.append(f"ticket_secret = {json.dumps(tenants.ticket_secret)}")
    for tenant_id, tenant in tenants.tenants.items():
        lines += ["", f"[tenants.{json.dumps(tenant_id)}]"]
        for name, value in msgspec.structs.asdict(tenant).items():
            if value is None:
                continue
            if name == "keys":
                entries = ", ".join(
                    f"{{id = {json.dumps(key.id)}, sha256 = {json.dumps(key.sha256)}}}"
                    for key in value
                )
                lines.append(f"keys = [{entries}]")
            else:
                lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write(path: Path, tenants: TenantsFile) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render(tenants))
    scratch.replace(path)


def add(args: argparse.Namespace) -> str:
    path: Path = args.file
    tenants = load_tenants(path) if path.exists() else TenantsFile()
    key_id, key = new_key()
    old = tenants.tenants.get(args.tenant, Tenant())
    limits = {
        name: value
        for name, value in (
            ("max_sessions", args.max_sessions),
            ("audio_seconds_per_minute", args.audio_seconds_per_minute),
            ("batch_max_bytes", args.batch_max_bytes),
            ("allowed_origins", args.origin or None),
            ("extensions", args.extensions),
            ("admin", args.admin or None),
        )
        if value is not None
    }
    keys = [*old.keys, KeyEntry(key_id, hash_key(key))]
    tenant = msgspec.structs.replace(old, keys=keys, **limits)
    updated = TenantsFile(
        tenants={**tenants.tenants, args.tenant: tenant},
        ticket_secret=tenants.ticket_secret or secrets.token_hex(32),
    )
    try:  # the same checks as loading: a bad tenant id or origin never reaches the file
        msgspec.convert(msgspec.to_builtins(updated), TenantsFile)
    except msgspec.ValidationError as exc:
        raise TenantsFileError(str(exc)) from exc
    write(path, updated)
    return f"tenant {args.tenant}, key id {key_id}, key (shown once): {key}"


def revoke(args: argparse.Namespace) -> str:
    tenants = load_tenants(args.file)
    found = False
    kept: dict[str, Tenant] = {}
    for tenant_id, tenant in tenants.tenants.items():
        keys = [key for key in tenant.keys if key.id != args.key_id]
        found |= len(keys) != len(tenant.keys)
        kept[tenant_id] = msgspec.structs.replace(tenant, keys=keys)
    if not found:
        raise TenantsFileError(f"no key {args.key_id!r} in {args.file}")
    write(args.file, msgspec.structs.replace(tenants, tenants=kept))
    return f"key {args.key_id} revoked"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.tenancy.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add a tenant, or a key to one; prints the key")
    adding.add_argument("file", type=Path)
    adding.add_argument("tenant")
    adding.add_argument("--max-sessions", type=int)
    adding.add_argument("--audio-seconds-per-minute", type=float)
    adding.add_argument("--batch-max-bytes", type=int)
    adding.add_argument("--origin", action="append", help="allowed browser Origin (repeatable)")
    adding.add_argument(
        "--extensions",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help=f"StartSession extensions allowed, comma-separated (default: {','.join(EXTENSIONS)})",
    )
    adding.add_argument("--admin", action="store_true", help="sees every tenant's sessions")
    adding.set_defaults(run=add)
    revoking = commands.add_parser("revoke", help="remove a key (live sessions on it end)")
    revoking.add_argument("file", type=Path)
    revoking.add_argument("key_id")
    revoking.set_defaults(run=revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        print(args.run(args))
    except (TenantsFileError, OSError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
