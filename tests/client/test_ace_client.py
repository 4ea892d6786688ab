"""The client's ACE mode (`a2f_client.ace`, `a2f stream --protocol ace`) against a real gateway
with tenants serving NVIDIA's gRPC API beside the WebSocket, both at 30 fps."""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from a2f_triton.processes import free_port

from a2f_client import AuthError, ServerError, ServerUnavailableError, stream
from a2f_client.ace import AceStarted, rpc_error
from a2f_client.ace import stream as ace_stream
from a2f_client.urls import grpc_target
from a2f_protocol.export_formats import parse_live_link_csv
from gateway.drivers.ace_server import MAX_STREAMS_PER_CONNECTION
from gateway.model_info import ModelInfo
from tests.client.test_cli import PROJECT_ROOT, a2f, assert_one_line_error, closed_port
from tests.gateway.test_tenants import add_key

INFO = ModelInfo.load(PROJECT_ROOT / "model_repository")


@pytest.fixture(scope="module")
def ace_gateway(start_gateway, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(gateway with tenants at 30 fps on both protocols, a key, a key of one session at most)."""
    tenants = tmp_path_factory.mktemp("ace-client") / "tenants.toml"
    _, key = add_key(tenants, "acme")
    _, solo = add_key(tenants, "solo", "--max-sessions", "1")
    gateway = start_gateway("--fps", "30", "--tenants_file", str(tenants), grpc_port=free_port())
    return gateway, key, solo


async def collect(frames):  # type: ignore[no-untyped-def]
    return [frame async for frame in frames]


def test_ace_frames_equal_the_websocket_clients(ace_gateway, speech_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway, key, _ = ace_gateway
    started: list[AceStarted] = []
    emotions = {"joy": 0.5}
    ace = asyncio.run(
        collect(
            ace_stream(
                speech_path, gateway.grpc, api_key=key, emotions=emotions,
                multipliers={"jawOpen": 1.5}, on_started=started.append,
            )
        )
    )  # fmt: skip
    ws = asyncio.run(
        collect(
            stream(
                speech_path, gateway.url, api_key=key, emotions=emotions,
                postprocess={"multipliers": {"jawOpen": 1.5}},
            )
        )
    )  # fmt: skip
    assert started[0].channels == list(INFO.blendshapes) and started[0].fps == Fraction(30)
    assert len(ace) == len(ws) > 150
    assert [f.frame_index for f in ace] == [f.frame_index for f in ws]
    assert [f.timestamp_current for f in ace] == [f.timestamp_current for f in ws]
    assert [f.timestamp_next for f in ace] == [f.timestamp_next for f in ws]
    np.testing.assert_allclose(
        np.stack([f.weights for f in ace]), np.stack([f.weights for f in ws]), atol=1e-5
    )


def test_a_wrong_key_is_an_auth_error(ace_gateway, speech_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway, _, _ = ace_gateway
    with pytest.raises(AuthError, match=r"^refused \(unauthorized\): ") as caught:
        asyncio.run(collect(ace_stream(speech_path, gateway.grpc, api_key="a2f_wrong")))
    assert "\n" not in str(caught.value)


def test_a_quota_is_resource_exhausted_with_a_retry_hint(ace_gateway, speech_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway, _, solo = ace_gateway

    async def two() -> ServerError:
        started = asyncio.Event()
        first = asyncio.create_task(
            collect(
                ace_stream(
                    speech_path, gateway.grpc, api_key=solo, realtime=True,
                    on_started=lambda _: started.set(),
                )
            )
        )  # fmt: skip
        await started.wait()
        try:
            with pytest.raises(ServerError) as caught:
                await collect(ace_stream(speech_path, gateway.grpc, api_key=solo))
        finally:
            first.cancel()
        return caught.value

    refused = asyncio.run(two())
    assert refused.code == "resource_exhausted" and refused.retry_after_s is not None
    assert str(refused).startswith("RESOURCE_EXHAUSTED: ") and str(refused).endswith(" s)")
    assert "\n" not in str(refused)


def test_cli_stream_over_ace_writes_the_websockets_csv(  # type: ignore[no-untyped-def]
    ace_gateway, speech_path: Path, tmp_path: Path
) -> None:
    gateway, key, _ = ace_gateway
    env = {"A2F_API_KEY": key}
    outputs = {}
    for protocol, url in (("ace", gateway.grpc), ("websocket", gateway.url)):
        outputs[protocol] = tmp_path / f"{protocol}.csv"
        done = a2f(
            "stream", str(speech_path), "--protocol", protocol, "--url", url,
            "--out", str(outputs[protocol]), "--emotions", "joy:0.5", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    ace, ws = (
        parse_live_link_csv(outputs[p].read_text(), INFO.blendshapes, Fraction(30))
        for p in ("ace", "websocket")
    )
    assert ace.weights.shape == ws.weights.shape
    np.testing.assert_allclose(ace.weights, ws.weights, atol=1e-5)
    wrong = a2f(
        "stream", str(speech_path), "--protocol", "ace",
        "--url", gateway.grpc, "--out", str(tmp_path / "wrong.csv"), env={"A2F_API_KEY": "a2f_wrong"},
    )  # fmt: skip
    assert_one_line_error(wrong, "refused (unauthorized)")
    assert not (tmp_path / "wrong.csv").exists()


def test_tls_with_a_ca_file_or_insecure(
    start_gateway, self_signed_certificate, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cert, key = self_signed_certificate
    flags = ("--ssl_certfile", str(cert), "--ssl_keyfile", str(key))
    gateway = start_gateway(*flags, grpc_port=free_port())
    url = f"grpcs://{gateway.grpc}"
    one_second = tmp_path / "one_second.wav"
    soundfile.write(one_second, np.zeros(16_000, np.int16), 16_000, subtype="PCM_16")
    for trust in ({"ca_file": cert}, {"insecure": True}):
        frames = asyncio.run(collect(ace_stream(one_second, url, **trust)))
        assert len(frames) == 30, trust
    with pytest.raises(ServerUnavailableError, match="certificate is not trusted"):
        asyncio.run(collect(ace_stream(one_second, url)))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--channels", "visemes"), "has no channels"),
        (("--postprocess", '{"smoothing": 0.5}'), "has no postprocess.smoothing"),
        (("--url", "ftp://host"), "unsupported URL"),
        (("--url", f"127.0.0.1:{closed_port()}"), "cannot connect to 127.0.0.1:"),
    ],
)
def test_cli_ace_mistakes_are_one_line(
    flags: tuple[str, ...], words: str, speech_path: Path, tmp_path: Path
) -> None:
    done = a2f(
        "stream", str(speech_path), "--protocol", "ace", "--out", str(tmp_path / "x.csv"), *flags
    )
    assert_one_line_error(done, words)


def status_error(code: grpc.StatusCode, details: str, trailing: tuple = ()) -> grpc.aio.AioRpcError:  # type: ignore[type-arg]
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_statuses_become_the_librarys_errors() -> None:
    busy = rpc_error(
        status_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "server busy (retry after 1.5 s)",
            (("retry-after-s", "1.5"),),
        ),
        "h:1", False, True,
    )  # fmt: skip
    assert isinstance(busy, ServerError) and busy.retry_after_s == 1.5
    assert str(busy) == "RESOURCE_EXHAUSTED: server busy (retry in 2 s)"
    denied = rpc_error(
        status_error(grpc.StatusCode.PERMISSION_DENIED, "no postprocess"), "h:1", False, True
    )
    assert isinstance(denied, AuthError) and denied.code == "forbidden"
    drained = rpc_error(
        status_error(grpc.StatusCode.UNAVAILABLE, "shutting down"), "h:1", False, True
    )
    assert str(drained) == "UNAVAILABLE: shutting down" and drained.code == "unavailable"


def test_grpc_addresses() -> None:
    assert grpc_target("127.0.0.1:52001") == ("127.0.0.1:52001", False)
    assert grpc_target("grpcs://a2f.example.com") == ("a2f.example.com:52000", True)
    with pytest.raises(ValueError, match="no path"):
        grpc_target("grpc://host:1/v1")


def test_streams_past_a_connections_bound_each_have_their_own(
    start_gateway, speech_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """gRPC gives a process's channels to one server a single shared connection, and the gateway
    bounds the streams on a connection: the client gives each stream a connection of its own,
    so the stream past the bound starts beside the others instead of waiting for one to end."""
    gateway = start_gateway(
        "--fps", "30", "--max_sessions", "128", "--busy_latency_ms", "0", grpc_port=free_port()
    )  # fmt: skip
    pcm = soundfile.read(speech_path, dtype="int16")[0][: 16_000 * 3 // 2]
    started: list[float] = []
    ended: list[float] = []

    async def one() -> int:
        def on_started(_: AceStarted) -> None:
            started.append(time.monotonic())

        frames = ace_stream(pcm, gateway.grpc, realtime=True, on_started=on_started)
        count = len(await collect(frames))
        ended.append(time.monotonic())
        return count

    async def streams() -> list[int]:
        return await asyncio.gather(*(one() for _ in range(MAX_STREAMS_PER_CONNECTION + 1)))

    counts = asyncio.run(streams())
    assert counts == [math.ceil(pcm.size * 30 / 16_000)] * (MAX_STREAMS_PER_CONNECTION + 1)
    assert max(started) < min(ended)
