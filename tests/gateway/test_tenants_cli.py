"""The tenants CLI and the file it writes, without a gateway: list, add, add-key, set, unset,
rotate, revoke, remove, the schema version, atomic and locked writes, one-line mistakes. That a
rotated key works against a running gateway is in test_tenants.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.tenancy.cli import main as tenants_cli
from gateway.tenancy.tenants import (
    SCHEMA_VERSION,
    TenantDirectory,
    TenantsFileError,
    load_tenants,
)


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(list(argv))
    return out.getvalue().strip()


def minted(line: str) -> tuple[str, str]:
    """The key id and key of the CLI's one line about a new key."""
    return line.split("key id ")[1].split(" ")[0].rstrip(","), line.rsplit(" ", 1)[1]


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str]:
    """Exit code and stderr of a CLI run that fails: one line, never a traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        tenants_cli(list(argv))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return exited.value.code, err


def listed(path: Path) -> dict[str, dict[str, object]]:
    return dict(json.loads(cli("list", str(path), "--json")))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tenants.toml"


def test_list_shows_limits_unset_ones_and_dated_keys_never_hashes(path: Path) -> None:
    key_id, key = minted(
        cli("add", str(path), "acme", "--max-sessions", "3", "--origin", "https://a.example")
    )
    cli("add", str(path), "ops", "--admin")
    tenants = listed(path)
    acme = tenants["acme"]
    assert acme["max_sessions"] == 3 and acme["allowed_origins"] == ["https://a.example"]
    assert acme["audio_seconds_per_minute"] is None and acme["batch_max_bytes"] is None  # unset
    assert acme["admin"] is False and tenants["ops"]["admin"] is True
    [entry] = acme["keys"]  # type: ignore[misc]
    assert entry["id"] == key_id and entry["revoked"] is None
    assert entry["created"].endswith("Z")
    text = cli("list", str(path))
    assert "audio_seconds_per_minute: unset (no limit)" in text
    assert f"{key_id}  created {entry['created']}" in text
    file = load_tenants(path)
    for shown in (text, json.dumps(tenants)):
        assert key not in shown and file.tenants["acme"].keys[0].sha256 not in shown
        assert file.ticket_secret is not None and file.ticket_secret not in shown
    assert key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a new file is private
    path.chmod(0o640)  # as an operator may set it for a gateway in the file's group
    cli("set", str(path), "ops", "--max-sessions", "1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a replaced one keeps its mode
    assert sorted(p.name for p in path.parent.iterdir()) == [".tenants.toml.lock", "tenants.toml"]


def test_add_on_an_existing_tenant_is_refused_and_add_key_adds_one(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_id, first = minted(cli("add", str(path), "acme", "--max-sessions", "3"))
    before = path.read_text()
    code, err = refused(capsys, "add", str(path), "acme", "--max-sessions", "9")
    assert code == 1 and "exists" in err and "add-key" in err and "rotate" in err
    assert path.read_text() == before
    second_id, second = minted(cli("add-key", str(path), "acme"))
    directory = TenantDirectory(load_tenants(path))
    assert {first_id, second_id} == directory.key_ids
    for key in (first, second):
        identity = directory.identify(key)
        assert identity is not None and identity.tenant_id == "acme"
        assert identity.tenant.max_sessions == 3  # limits kept
    assert refused(capsys, "add-key", str(path), "nobody")[0] == 1


def test_set_and_unset_change_limits_without_minting_a_key(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli("add", str(path), "acme", "--max-sessions", "3", "--origin", "https://a.example")
    said = cli(
        "set", str(path), "acme", "--audio-seconds-per-minute", "600", "--batch-max-bytes",
        "1000", "--extensions", "channels", "--max-sessions", "5", "--admin",
    )  # fmt: skip
    assert "a2f_" not in said  # no key printed: none minted
    acme = listed(path)["acme"]
    assert len(acme["keys"]) == 1  # type: ignore[arg-type]
    assert (acme["max_sessions"], acme["audio_seconds_per_minute"]) == (5, 600.0)
    assert (acme["batch_max_bytes"], acme["extensions"], acme["admin"]) == (
        1000,
        ["channels"],
        True,
    )
    assert acme["allowed_origins"] == ["https://a.example"]  # not named: kept
    cli(
        "unset",
        str(path),
        "acme",
        "max_sessions",
        "audio-seconds-per-minute",
        "extensions",
        "admin",
    )
    acme = listed(path)["acme"]
    assert acme["max_sessions"] is None and acme["audio_seconds_per_minute"] is None
    assert acme["extensions"] == ["emotions", "channels", "postprocess", "idle"]
    assert acme["admin"] is False
    assert acme["batch_max_bytes"] == 1000 and len(acme["keys"]) == 1  # type: ignore[arg-type]
    assert "max_sessions = " not in path.read_text()  # unset: absent from the file
    before = path.read_text()
    for argv in (
        ("set", str(path), "acme"),  # nothing to set
        ("set", str(path), "nobody", "--max-sessions", "2"),
        ("unset", str(path), "acme", "keys"),
        ("set", str(path), "acme", "--max-sessions", "0"),
        ("set", str(path), "acme", "--audio-seconds-per-minute", "inf"),
        ("set", str(path), "acme", "--extensions", "emotions,telepathy"),
        ("set", str(path), "acme", "--origin", "app.example"),  # no scheme: never matches
        ("set", str(path), "acme", "--origin", "https://app.example/"),  # browsers send no /
    ):
        assert refused(capsys, *argv)[0] in (1, 2), argv
    assert path.read_text() == before


def test_rotate_keeps_the_old_key_until_it_is_revoked(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_id, old = minted(cli("add", str(path), "acme"))
    line = cli("rotate", str(path), old_id)
    new_id, new = minted(line)
    assert new_id != old_id and f"revoke {path} {old_id}" in line
    directory = TenantDirectory(load_tenants(path))
    for key in (old, new):  # both work: clients move over with no gap
        identity = directory.identify(key)
        assert identity is not None and identity.tenant_id == "acme"
    assert "revoked" in cli("revoke", str(path), old_id)
    directory = TenantDirectory(load_tenants(path))
    assert directory.identify(old) is None and directory.by_key_id(old_id) is None
    assert directory.identify(new) is not None
    keys = {entry["id"]: entry for entry in listed(path)["acme"]["keys"]}  # type: ignore[attr-defined]
    assert keys[old_id]["revoked"] is not None and keys[new_id]["revoked"] is None
    assert refused(capsys, "revoke", str(path), old_id)[0] == 1  # already
    assert refused(capsys, "rotate", str(path), old_id)[0] == 1
    assert refused(capsys, "rotate", str(path), "k-nope")[0] == 1


def test_remove_takes_a_tenant_and_its_keys(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, gone = minted(cli("add", str(path), "acme"))
    _, kept = minted(cli("add", str(path), "bravo"))
    cli("remove", str(path), "acme")
    assert list(listed(path)) == ["bravo"]
    directory = TenantDirectory(load_tenants(path))
    assert directory.identify(gone) is None and directory.identify(kept) is not None
    assert refused(capsys, "remove", str(path), "acme")[0] == 1


def test_a_newer_file_is_refused_by_version_and_an_unversioned_one_is_read(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_line = "keys = [{id = 'k-1', sha256 = '" + "0" * 64 + "'}]"
    path.write_text(f"[tenants.acme]\nmax_sessions = 2\n{key_line}\n")  # before versions and dates
    acme = load_tenants(path).tenants["acme"]
    assert acme.max_sessions == 2 and acme.keys[0].created is None
    assert listed(path)["acme"]["keys"] == [{"id": "k-1", "created": None, "revoked": None}]
    cli("add-key", str(path), "acme")  # the CLI writes it as the current version
    assert load_tenants(path).version == SCHEMA_VERSION
    newer = SCHEMA_VERSION + 1
    path.write_text(f"version = {newer}\n[tenants.acme]\nsome_future_limit = 1\n{key_line}\n")
    with pytest.raises(TenantsFileError, match=f"version {newer}.*upgrade the gateway"):
        load_tenants(path)
    code, err = refused(capsys, "add-key", str(path), "acme")
    assert code == 1 and f"version {newer}" in err
    path.write_text(f"version = {SCHEMA_VERSION}\n[tenants.acme]\nmax_session = 2\n")  # a typo
    with pytest.raises(TenantsFileError, match="max_session"):
        load_tenants(path)
    path.write_text(
        "[tenants.acme]\n" + key_line.replace("'}", "', created = 2026-01-01T00:00:00}")
    )
    with pytest.raises(TenantsFileError, match="timezone"):  # a date must say its offset
        load_tenants(path)


def test_concurrent_changes_are_all_kept(path: Path) -> None:
    cli("add", str(path), "acme")
    done = io.StringIO()

    def mint() -> None:
        with contextlib.redirect_stdout(done):
            tenants_cli(["add-key", str(path), "acme"])

    threads = [threading.Thread(target=mint) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(load_tenants(path).tenants["acme"].keys) == 9
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_mistakes_are_one_line_and_a_nonzero_exit(path: Path, tmp_path: Path) -> None:
    for argv in (
        [],
        ["bogus", str(path)],
        ["add", str(path)],  # no tenant
        ["add", str(path), "bad id with spaces"],
        ["add", str(path), "acme", "--max-sessions", "many"],
        ["list", str(tmp_path / "absent.toml")],
        ["revoke", str(tmp_path / "absent.toml"), "k-1"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.tenancy.cli", *argv],
            capture_output=True, text=True, timeout=60, env={**os.environ},
        )  # fmt: skip
        assert done.returncode != 0, argv
        assert len(done.stderr.strip().splitlines()) == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr
    assert not path.exists()
