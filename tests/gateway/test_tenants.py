"""Tenants against the real gateway and Triton: keys, tickets, origins, isolation, quotas, key
reload, secure-by-default binds, TLS, and limits shared through a real redis-server by 2 workers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from a2f_triton.gateway_process import GatewayProcess
from a2f_triton.processes import free_port, running
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from a2f_protocol.frames import pack_push_audio
from gateway.tenancy.cli import main as tenants_cli

ORIGIN_A = "https://a.example"
RELOAD_S = "0.2"
WAIT_S = 15.0


def add_key(path: Path, tenant: str, *flags: str) -> tuple[str, str]:
    """A new key of `tenant` (created if new): its id and the key, from the CLI's one line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(["add", str(path), tenant, *flags])
    line = out.getvalue().strip()
    key_id = line.split("key id ")[1].split(",")[0]
    return key_id, line.rsplit(" ", 1)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def http(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def reply(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    await ws.send(message)
    while True:
        answer = await asyncio.wait_for(ws.recv(), 20)
        if isinstance(answer, str):
            return json.loads(answer)


START = json.dumps({"type": "StartSession", "blinks": False})


async def refusal(url: str, **options: Any) -> tuple[dict[str, Any], int | None]:
    """The Error and close code of a connection the gateway refuses."""
    async with connect(url, **options) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return error, ws.close_code


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, _ = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    return pcm


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    keys = {
        "a": add_key(path, "acme", "--max-sessions", "2", "--origin", ORIGIN_A)[1],
        "b": add_key(
            path,
            "bravo",
            "--max-sessions",
            "3",
            "--extensions",
            "channels",
            "--batch-max-bytes",
            "1000",
        )[1],
        "c": add_key(path, "charlie", "--audio-seconds-per-minute", "2")[1],
        "admin": add_key(path, "ops", "--admin")[1],
    }
    return {"path": path, "keys": keys}


@pytest.fixture(scope="module")
def gateway(start_gateway, tenants: dict[str, Any]) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(
        "--tenants_file", str(tenants["path"]), "--tenants_reload_s", RELOAD_S,
        "--ticket_ttl_s", "3", "--trusted_proxies", "127.0.0.1",
    )  # fmt: skip


def test_missing_bad_and_wrong_origin_credentials_are_refused(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    key = tenants["keys"]["a"]

    async def run() -> None:
        error, code = await refusal(gateway.url)
        assert (error["code"], code) == ("unauthorized", 4401)
        error, code = await refusal(gateway.url, additional_headers=bearer("a2f_nope"))
        assert (error["code"], code) == ("unauthorized", 4401)
        error, code = await refusal(
            gateway.url, additional_headers={"X-API-Key": key}, origin="https://evil.example"
        )
        assert (error["code"], code) == ("forbidden", 4403)
        async with connect(
            gateway.url, additional_headers={"X-API-Key": key}, origin=ORIGIN_A
        ) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"

    asyncio.run(run())
    assert http(f"{gateway.http}/sessions")[0] == 401
    status, headers, _ = http(f"{gateway.http}/sessions", bearer("a2f_nope"))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert (
        http(f"{gateway.http}/sessions", {**bearer(key), "Origin": "https://evil.example"})[0]
        == 403
    )
    assert http(f"{gateway.http}/sessions", {**bearer(key), "Origin": ORIGIN_A})[0] == 200
    assert http(f"{gateway.http}/v1/animate", data=b"x")[0] == 401
    assert http(f"{gateway.http}/metrics", bearer(key))[0] == 403  # admin only
    assert http(f"{gateway.http}/health")[0] == 200  # probes stay open


def test_tickets_are_single_use_and_expire(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    key = tenants["keys"]["b"]

    def ticket() -> str:
        status, _, body = http(f"{gateway.http}/v1/tickets", bearer(key), data=b"")
        assert status == 201, body
        return str(json.loads(body)["ticket"])

    async def run() -> None:
        fresh = ticket()
        async with connect(f"{gateway.url}?ticket={fresh}") as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"
        error, code = await refusal(f"{gateway.url}?ticket={fresh}")
        assert (error["code"], code) == ("unauthorized", 4401) and "used" in error["message"]
        stale = ticket()
        await asyncio.sleep(3.5)
        error, code = await refusal(f"{gateway.url}?ticket={stale}")
        assert code == 4401 and "expired" in error["message"]
        error, code = await refusal(f"{gateway.url}?ticket={fresh[:-2]}xx")
        assert code == 4401 and "invalid" in error["message"]

    asyncio.run(run())
    assert http(f"{gateway.http}/v1/tickets", data=b"")[0] == 401
    assert http(f"{gateway.http}/sessions?ticket={ticket()}")[0] == 401  # WebSocket only


def test_tenants_see_only_their_own_sessions(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    keys = tenants["keys"]

    def visible(key: str) -> set[str]:
        status, _, body = http(f"{gateway.http}/sessions", bearer(key))
        assert status == 200
        return {s["session_id"] for s in json.loads(body)["sessions"]}

    async def run() -> None:
        async with (
            connect(gateway.url, additional_headers=bearer(keys["a"])) as a,
            connect(gateway.url, additional_headers=bearer(keys["b"])) as b,
        ):
            a_id = (await reply(a, START))["session_id"]
            b_id = (await reply(b, START))["session_id"]
            assert a_id in visible(keys["a"]) and b_id not in visible(keys["a"])
            assert b_id in visible(keys["b"]) and a_id not in visible(keys["b"])
            assert {a_id, b_id} <= visible(keys["admin"])
            # B naming A's session ends nothing of A's.
            wrong = await reply(b, json.dumps({"type": "EndSession", "session_id": a_id}))
            assert wrong["code"] == "session_mismatch"
            assert a_id in visible(keys["admin"])

    asyncio.run(run())
    # Each tenant sees its own session limit (null: none of its own); an admin the host's.
    limits = {
        name: json.loads(http(f"{gateway.http}/sessions", bearer(keys[name]))[2])["max_sessions"]
        for name in ("a", "c", "admin")
    }
    assert limits["a"] == 2 and limits["c"] is None and isinstance(limits["admin"], int)


def test_session_and_audio_quotas(gateway, tenants, speech: np.ndarray, fixtures_dir: Path) -> None:  # type: ignore[no-untyped-def]
    keys = tenants["keys"]

    async def run() -> None:
        async with AsyncExitStack() as stack:
            opened = [
                await stack.enter_async_context(
                    connect(gateway.url, additional_headers=bearer(keys["a"]))
                )
                for _ in range(3)
            ]
            assert (await reply(opened[0], START))["type"] == "SessionStarted"
            assert (await reply(opened[1], START))["type"] == "SessionStarted"
            over = await reply(opened[2], START)
            assert over["code"] == "quota" and over["retry_after_s"] > 0
            # Another tenant is unaffected.
            async with connect(gateway.url, additional_headers=bearer(keys["b"])) as other:
                assert (await reply(other, START))["type"] == "SessionStarted"
            await reply(opened[0], json.dumps({"type": "EndSession"}))
            assert (await reply(opened[2], START))["type"] == "SessionStarted"

        # charlie: 2 s of audio a minute. Refused audio leaves the session usable.
        async with connect(gateway.url, additional_headers=bearer(keys["c"]), max_size=None) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"
            await ws.send(pack_push_audio(0, speech[:24000]))  # 1.5 s: fits
            refused = await reply(ws, pack_push_audio(24000, speech[24000:40000]))  # 1 s more
            assert refused["code"] == "quota" and 0 < refused["retry_after_s"] <= 60
            ended = await reply(ws, json.dumps({"type": "EndSession"}))
            assert ended["type"] == "SessionEnded"

    asyncio.run(run())
    wav = (fixtures_dir / "speech_16k.wav").read_bytes()  # longer than charlie's minute
    assert http(f"{gateway.http}/v1/animate", bearer(keys["b"]), data=wav)[0] == 413
    status, headers, _ = http(f"{gateway.http}/v1/animate", bearer(keys["c"]), data=wav)
    assert status == 429 and int(headers["retry-after"]) >= 1
    metrics = http(f"{gateway.http}/metrics", bearer(keys["admin"]))[2].decode()
    assert 'a2f_quota_rejections_total{quota="sessions",tenant="acme"}' in metrics


def test_extensions_a_tenant_may_not_use_are_forbidden(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with connect(gateway.url, additional_headers=bearer(tenants["keys"]["b"])) as ws:
            start = {"type": "StartSession", "postprocess": {"smoothing": 0.5}}
            refused = await reply(ws, json.dumps(start))
            assert refused["code"] == "forbidden" and "postprocess" in refused["message"]
            idle = await reply(ws, json.dumps({"type": "StartSession", "idle": True}))
            assert idle["code"] == "forbidden" and "idle" in idle["message"]
            started = await reply(ws, json.dumps({"type": "StartSession", "channels": "all"}))
            assert started["type"] == "SessionStarted"
            emotion = {"type": "SetEmotion", "emotions": {"joy": 1.0}}
            assert (await reply(ws, json.dumps(emotion)))["code"] == "forbidden"

    asyncio.run(run())
    status, _, body = http(
        f"{gateway.http}/v1/animate?emotions=joy:1",
        bearer(tenants["keys"]["b"]),
        data=b"x",
    )
    assert status == 403, body


def accepted(gateway: GatewayProcess, key: str) -> None:
    """Wait until a key the CLI just wrote is accepted (the gateway reloads the file)."""
    deadline = time.monotonic() + WAIT_S
    while http(f"{gateway.http}/sessions", bearer(key))[0] != 200:
        assert time.monotonic() < deadline, "new key never accepted"
        time.sleep(0.25)  # each try is a failed attempt for the per-address limit


def test_keys_reload_without_restart_and_revoked_sessions_end(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    path: Path = tenants["path"]
    key_id, key = add_key(path, "delta")
    accepted(gateway, key)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(["rotate", str(path), key_id])
    rotated = out.getvalue().strip().rsplit(" ", 1)[1]
    accepted(gateway, rotated)

    async def run() -> None:
        async with connect(gateway.url, additional_headers=bearer(key)) as ws:  # still valid
            assert (await reply(ws, START))["type"] == "SessionStarted"
            tenants_cli(["revoke", str(path), key_id])
            error = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            assert (error["type"], error["code"]) == ("Error", "unauthorized")
            assert "revoked" in error["message"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4401
        error, code = await refusal(gateway.url, additional_headers=bearer(key))
        assert code == 4401
        async with connect(gateway.url, additional_headers=bearer(rotated)) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"

    asyncio.run(run())
    gateway.process.send_signal(signal.SIGHUP)  # reloads (nothing changed); never stops it
    time.sleep(0.5)
    assert gateway.process.poll() is None
    assert http(f"{gateway.http}/sessions", bearer(tenants["keys"]["a"]))[0] == 200


def away_from_a_minute_end() -> None:
    """Failed attempts are counted per calendar minute: start a count where it cannot reset."""
    into = time.time() % 60
    if into > 50:
        time.sleep(60.5 - into)


def test_failed_attempts_are_rate_limited_per_forwarded_address(gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    attacker = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}  # the last hop is the client
    away_from_a_minute_end()
    for _ in range(20):
        assert http(f"{gateway.http}/sessions", {**attacker, **bearer("a2f_guess")})[0] == 401
    status, headers, _ = http(
        f"{gateway.http}/sessions", {**attacker, **bearer(tenants["keys"]["a"])}
    )
    assert status == 429 and int(headers["retry-after"]) >= 1
    other = {"X-Forwarded-For": "203.0.113.8", **bearer(tenants["keys"]["a"])}
    assert http(f"{gateway.http}/sessions", other)[0] == 200


def test_public_bind_without_tenants_file_refuses_to_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "--tenants_file" in done.stderr


# -- TLS -----------------------------------------------------------------------------------------


def test_wss_with_a_self_signed_certificate_and_its_audit_lines(
    triton, speech, self_signed_certificate, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cert, key = self_signed_certificate
    context = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    command = [
        sys.executable, "-m", "gateway", "--port", str(port), "--triton-url", triton.grpc_url,
        "--grpc_port", "0", "--ssl_certfile", str(cert), "--ssl_keyfile", str(key),
    ]  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/ready", context=context) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def run() -> None:
        async with connect(f"wss://127.0.0.1:{port}/", ssl=context, max_size=None) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"
            await ws.send(pack_push_audio(0, speech[:16000]))
            assert (await reply(ws, json.dumps({"type": "EndSession"})))["type"] == "SessionEnded"

    log = tmp_path / "gateway.log"
    with running(command, ready, name="gateway", timeout_s=60, log=log):
        asyncio.run(run())
        with pytest.raises(urllib.error.URLError):  # an untrusting client is turned away
            urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=10)
    audit = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith('{"log":"a2f.audit",')
    ]
    start, end = (line for line in audit if line["event"] in ("session_start", "session_end"))
    assert start["session_id"] == end["session_id"] and end["client"] == "127.0.0.1"
    assert (end["audio_seconds"], end["frames"], end["errors"]) == (1.0, 60, 0)


# -- limits shared by 2 workers through Redis ----------------------------------------------------


def test_quotas_and_failed_attempts_hold_across_two_workers_sharing_redis(
    start_gateway, redis_url, speech, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tenants.toml"
    _, key = add_key(path, "acme", "--max-sessions", "2", "--audio-seconds-per-minute", "2")
    _, admin = add_key(path, "ops", "--admin")
    gateway = start_gateway(
        "--workers", "2", "--redis_url", redis_url, "--tenants_file", str(path),
        "--auth_failures_per_minute", "4",
    )  # fmt: skip

    def workers_of(ids: set[str]) -> dict[str, int]:
        report = json.loads(http(f"{gateway.http}/sessions", bearer(admin))[2])
        return {
            s["session_id"]: s["worker_pid"] for s in report["sessions"] if s["session_id"] in ids
        }

    async def run() -> None:
        async with AsyncExitStack() as stack:
            live: dict[str, ClientConnection] = {}
            deadline = time.monotonic() + 60
            while True:  # one session on each worker (connections land on either at random)
                ws = await stack.enter_async_context(
                    connect(gateway.url, additional_headers=bearer(key), max_size=None)
                )
                started = await reply(ws, START)
                assert started["type"] == "SessionStarted", started
                live[started["session_id"]] = ws
                if len(live) < 2:
                    continue
                if len(set(workers_of(set(live)).values())) == 2:
                    break
                assert time.monotonic() < deadline, "every session landed on one worker"
                ended = live.popitem()[1]
                await reply(ended, json.dumps({"type": "EndSession"}))
            for _ in range(4):  # whichever worker takes it, the tenant's third session waits
                extra = await stack.enter_async_context(
                    connect(gateway.url, additional_headers=bearer(key))
                )
                assert (await reply(extra, START))["code"] == "quota"
            first, second = live.values()
            await first.send(pack_push_audio(0, speech[:24000]))  # 1.5 s on one worker
            assert isinstance(await asyncio.wait_for(first.recv(), 20), bytes)  # counted
            refused = await reply(second, pack_push_audio(0, speech[:16000]))  # 1 s on the other
            assert refused["code"] == "quota"

    asyncio.run(run())
    away_from_a_minute_end()
    for _ in range(4):  # spread over both workers by the kernel
        assert http(f"{gateway.http}/sessions", bearer("a2f_guess"))[0] == 401
    for _ in range(4):  # whichever worker answers, this address has used its minute's attempts
        assert http(f"{gateway.http}/sessions", bearer(admin))[0] == 429
    gateway.process.terminate()
    assert gateway.process.wait(15) == 0


def test_unknown_option_values_stop_the_cli_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.tenancy.cli", "revoke", str(tmp_path / "none.toml"), "k-1"],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1


def test_docs_need_a_key_unless_made_public(gateway, start_gateway, tenants) -> None:  # type: ignore[no-untyped-def]
    key = tenants["keys"]["a"]
    for page in ("/schema", "/schema/openapi.json", "/schema/swagger"):
        status, headers, _ = http(f"{gateway.http}{page}")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), page
        assert http(f"{gateway.http}{page}", bearer(key))[0] == 200, page
    public = start_gateway("--tenants_file", str(tenants["path"]), "--public_docs")
    assert http(f"{public.http}/schema/openapi.json")[0] == 200
    assert http(f"{public.http}/sessions")[0] == 401  # only the docs are public
