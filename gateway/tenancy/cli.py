"""Tenants, their keys and their limits, changed while the service runs.

    python -m gateway.tenancy.cli add tenants.toml acme --max-sessions 4 --origin https://app.acme.example
    python -m gateway.tenancy.cli list tenants.toml
    python -m gateway.tenancy.cli set tenants.toml acme --audio-seconds-per-minute 600
    python -m gateway.tenancy.cli unset tenants.toml acme max_sessions
    python -m gateway.tenancy.cli add-key tenants.toml acme
    python -m gateway.tenancy.cli rotate tenants.toml k-3f9a
    python -m gateway.tenancy.cli revoke tenants.toml k-3f9a
    python -m gateway.tenancy.cli remove tenants.toml acme

A new key is printed once: only its hash is written and it cannot be recovered. Every change
rewrites the file whole and atomically, and running gateways pick it up within
--tenants_reload_s (or at once on SIGHUP): new keys and limits apply to new requests, and
connections on a revoked key or a removed tenant end.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import msgspec

from gateway.tenancy.tenants import (
    EXTENSIONS,
    UNSET,
    KeyEntry,
    Tenant,
    TenantsFile,
    TenantsFileError,
    hash_key,
    instant_text,
    load_tenants,
    locked,
    now,
    write_tenants,
)

KEY_PREFIX = "a2f_"
LIMITS = (
    "max_sessions",
    "audio_seconds_per_minute",
    "batch_max_bytes",
    "extensions",
    "allowed_origins",
    "admin",
)


class CliError(Exception):
    """An operator's mistake: said in one line, exit 1."""


def new_key() -> tuple[str, str]:
    """A key id (public, appears in logs) and the key itself (secret)."""
    return f"k-{secrets.token_hex(4)}", KEY_PREFIX + secrets.token_urlsafe(32)


def change(
    path: Path, edit: Callable[[TenantsFile], tuple[TenantsFile, str]], create: bool = False
) -> str:
    """Read the file, apply `edit` and write the result, under the file's lock."""
    with locked(path):
        if create and not path.exists():
            tenants = TenantsFile(ticket_secret=secrets.token_hex(32))
        else:
            tenants = load_tenants(path)
        updated, said = edit(tenants)
        write_tenants(path, updated)
    return said


def _with(tenants: TenantsFile, tenant_id: str, tenant: Tenant | None) -> TenantsFile:
    """The file with one tenant replaced, added (at the end) or, as `None`, removed."""
    if tenant is None:
        kept = {name: entry for name, entry in tenants.tenants.items() if name != tenant_id}
        return msgspec.structs.replace(tenants, tenants=kept)
    return msgspec.structs.replace(tenants, tenants={**tenants.tenants, tenant_id: tenant})


def _tenant(tenants: TenantsFile, tenant_id: str, path: Path) -> Tenant:
    if tenant_id not in tenants.tenants:
        raise CliError(f"no tenant {tenant_id!r} in {path} (see: list)")
    return tenants.tenants[tenant_id]


def _owner(tenants: TenantsFile, key_id: str, path: Path) -> tuple[str, Tenant, KeyEntry]:
    for tenant_id, tenant in tenants.tenants.items():
        for key in tenant.keys:
            if key.id == key_id:
                return tenant_id, tenant, key
    raise CliError(f"no key {key_id!r} in {path} (see: list)")


def _limits(args: argparse.Namespace) -> dict[str, object]:
    given = {name: getattr(args, name) for name in LIMITS}
    return {name: value for name, value in given.items() if value is not None}


def _minted(tenant_id: str, key_id: str, key: str, note: str = "") -> str:
    # The key is the last word of the line: scripts take it from there.
    return f"tenant {tenant_id}, key id {key_id}{note}, key (shown once): {key}"


# -- commands ----------------------------------------------------------------------------------


def add(args: argparse.Namespace) -> str:
    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        if args.tenant in tenants.tenants:
            raise CliError(
                f"tenant {args.tenant!r} exists: add-key gives it another key, rotate replaces "
                "one, set changes its limits"
            )
        key_id, key = new_key()
        first = KeyEntry(key_id, hash_key(key), now())
        tenant = msgspec.structs.replace(Tenant(keys=[first]), **_limits(args))
        return _with(tenants, args.tenant, tenant), _minted(args.tenant, key_id, key)

    return change(args.file, edit, create=True)


def add_key(args: argparse.Namespace) -> str:
    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant = _tenant(tenants, args.tenant, args.file)
        key_id, key = new_key()
        keys = [*tenant.keys, KeyEntry(key_id, hash_key(key), now())]
        updated = _with(tenants, args.tenant, msgspec.structs.replace(tenant, keys=keys))
        return updated, _minted(args.tenant, key_id, key)

    return change(args.file, edit)


def rotate(args: argparse.Namespace) -> str:
    """A new key beside an old one: both work until the old one is revoked, so that clients
    can move over without a moment in which neither key is accepted."""

    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant_id, tenant, old = _owner(tenants, args.key_id, args.file)
        if old.revoked is not None:
            raise CliError(f"key {old.id} is revoked already: add-key {tenant_id} for a new one")
        key_id, key = new_key()
        keys = [*tenant.keys, KeyEntry(key_id, hash_key(key), now())]
        updated = _with(tenants, tenant_id, msgspec.structs.replace(tenant, keys=keys))
        note = f" (replaces {old.id}, valid until: revoke {args.file} {old.id})"
        return updated, _minted(tenant_id, key_id, key, note)

    return change(args.file, edit)


def revoke(args: argparse.Namespace) -> str:
    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant_id, tenant, old = _owner(tenants, args.key_id, args.file)
        if old.revoked is not None:
            raise CliError(f"key {old.id} was revoked at {_instant(old.revoked)}")
        keys = [
            msgspec.structs.replace(key, revoked=now()) if key.id == old.id else key
            for key in tenant.keys
        ]
        updated = _with(tenants, tenant_id, msgspec.structs.replace(tenant, keys=keys))
        return updated, f"key {old.id} of tenant {tenant_id} revoked (its sessions end)"

    return change(args.file, edit)


def set_limits(args: argparse.Namespace) -> str:
    limits = _limits(args)
    if not limits:
        raise CliError("nothing to set: give a limit (see: set --help)")

    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant = msgspec.structs.replace(_tenant(tenants, args.tenant, args.file), **limits)
        said = ", ".join(f"{name} {_shown(name, value)}" for name, value in limits.items())
        return _with(tenants, args.tenant, tenant), f"tenant {args.tenant}: {said}"

    return change(args.file, edit)


def unset_limits(args: argparse.Namespace) -> str:
    defaults = Tenant()
    names = [name.replace("-", "_") for name in args.limits]
    if unknown := [name for name in names if name not in LIMITS]:
        raise CliError(f"no limit {unknown[0]!r}: one of {', '.join(LIMITS)}")

    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant = _tenant(tenants, args.tenant, args.file)
        tenant = msgspec.structs.replace(
            tenant, **{name: getattr(defaults, name) for name in names}
        )
        said = ", ".join(f"{name} {_shown(name, getattr(tenant, name))}" for name in names)
        return _with(tenants, args.tenant, tenant), f"tenant {args.tenant}: {said}"

    return change(args.file, edit)


def remove(args: argparse.Namespace) -> str:
    def edit(tenants: TenantsFile) -> tuple[TenantsFile, str]:
        tenant = _tenant(tenants, args.tenant, args.file)
        said = f"tenant {args.tenant} removed, keys and all: {len(tenant.keys)} (its sessions end)"
        return _with(tenants, args.tenant, None), said

    return change(args.file, edit)


class KeyListing(msgspec.Struct):
    id: str
    created: str | None
    revoked: str | None


def _instant(value: datetime | None) -> str | None:
    return None if value is None else instant_text(value)


def listing(tenants: TenantsFile) -> dict[str, dict[str, object]]:
    """Every tenant's limits (`None`: unset) and keys (no hashes), as `list --json` prints."""
    return {
        tenant_id: {
            **{name: getattr(tenant, name) for name in LIMITS},
            "keys": [
                KeyListing(key.id, _instant(key.created), _instant(key.revoked))
                for key in tenant.keys
            ],
        }
        for tenant_id, tenant in tenants.tenants.items()
    }


def _shown(name: str, value: object) -> str:
    if value is None:
        return f"unset ({UNSET[name]})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) if value else "none"
    return str(value)


def list_tenants(args: argparse.Namespace) -> str:
    tenants = load_tenants(args.file)
    if args.json:
        return msgspec.json.encode(listing(tenants)).decode()
    lines = []
    for tenant_id, tenant in tenants.tenants.items():
        lines.append(f"tenant {tenant_id}")
        lines += [f"  {name}: {_shown(name, getattr(tenant, name))}" for name in LIMITS]
        lines.append("  keys:" if tenant.keys else "  keys: none")
        for key in tenant.keys:
            created = _instant(key.created) or "unknown"
            revoked = "" if key.revoked is None else f"  revoked {_instant(key.revoked)}"
            lines.append(f"    {key.id}  created {created}{revoked}")
    return "\n".join(lines) if lines else f"no tenants in {args.file}"


# -- arguments ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Mistakes in the arguments are one line too, not the usage and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"  # argparse names the type in its message
    return parse


# argparse names these types by their function's name in its messages ("invalid origin value").
def origin(text: str) -> str:
    """An Origin as browsers send it (`https://app.example[:port]`): anything else, a bare
    host or a trailing slash, would never match and refuse every browser in silence."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(text)
    if text != f"{parts.scheme}://{parts.netloc}":
        raise ValueError(text)
    return text


def extensions(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in EXTENSIONS]:
        raise ValueError(unknown[0])
    return names


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-sessions",
        type=_positive(int),
        metavar="N",
        help=f"concurrent sessions (unset: {UNSET['max_sessions']})",
    )
    parser.add_argument(
        "--audio-seconds-per-minute",
        type=_positive(float),
        metavar="S",
        help=f"streamed and batch audio per calendar minute (unset: {UNSET['audio_seconds_per_minute']})",
    )
    parser.add_argument(
        "--batch-max-bytes",
        type=_positive(int),
        metavar="BYTES",
        help=f"POST /v1/animate body (unset: {UNSET['batch_max_bytes']})",
    )
    parser.add_argument(
        "--origin",
        dest="allowed_origins",
        action="append",
        type=origin,
        metavar="ORIGIN",
        help="allowed browser Origin (repeatable; replaces the list; unset: none)",
    )
    parser.add_argument(
        "--extensions",
        type=extensions,
        metavar="NAMES",
        help=f"StartSession extensions allowed, comma-separated (default: {','.join(EXTENSIONS)})",
    )
    parser.add_argument(
        "--admin",
        action=argparse.BooleanOptionalAction,
        help="an admin key sees every tenant's sessions and /metrics",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m gateway.tenancy.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], str], help: str, *names: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
        sub.add_argument("file", type=Path, metavar="FILE", help="the tenants file (TOML)")
        for positional in names:
            sub.add_argument(positional, metavar=positional.upper())
        sub.set_defaults(run=run)
        return sub

    listed = command("list", list_tenants, "tenants, their limits and keys (no hashes)")
    listed.add_argument("--json", action="store_true", help="one JSON object (null: unset)")
    _limit_flags(command("add", add, "a new tenant and its first key (printed once)", "tenant"))
    command("add-key", add_key, "another key for a tenant (printed once)", "tenant")
    command("rotate", rotate, "a new key beside KEY_ID, which works until revoked", "key_id")
    command("revoke", revoke, "refuse a key from now on (its sessions end)", "key_id")
    _limit_flags(command("set", set_limits, "change a tenant's limits", "tenant"))
    unset = command("unset", unset_limits, "a tenant's limits back to unset (or default)", "tenant")
    unset.add_argument("limits", nargs="+", metavar="limit", help=", ".join(LIMITS))
    command("remove", remove, "a tenant and its keys (its sessions end)", "tenant")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        print(args.run(args))
    except (CliError, TenantsFileError, OSError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
