"""The demo page in real headless Chromium against the real gateway and Triton: the page's own
microphone path (Chromium's fake capture playing a speech WAV), a dropped file, and, with a
tenants file, the demo tenant's tickets. The mouth drawn during speech must open wider than
during silence; screenshots land in .run/artifacts/."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import free_port

from gateway.tenancy.tenants import hash_key
from tests.browser import CHROMIUM, Page, chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (make test installs it)")

RATE = 16000
# A browser's first microphone on a fresh machine (caches, the audio service) can take long.
START_S = 60.0
SPEECH_LEVEL = 0.02  # RMS (full scale 1) of the audio around a frame: speech above, silence below
SILENCE_LEVEL = 0.002
DEMO_KEY = "demo-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def speech_wav(speech_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of silence, 3 s of speech, 1 s of silence: both kinds of stretch in each pass."""
    speech, _ = soundfile.read(speech_path, dtype="int16")
    silence = np.zeros(RATE, dtype=np.int16)
    pcm = np.concatenate([silence, silence, speech[: 3 * RATE], silence])
    path = tmp_path_factory.mktemp("demo") / "speech_pause.wav"
    soundfile.write(path, pcm, RATE, subtype="PCM_16")
    return path


@pytest.fixture
def browser(tmp_path: Path, speech_wav: Path) -> Iterator[Page]:
    with chromium(
        tmp_path / "profile",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech_wav}",
        "--autoplay-policy=no-user-gesture-required",
    ) as page:
        yield page


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def open_demo(page: Page, gateway: GatewayProcess) -> None:
    page.goto(f"{gateway.http}/demo")
    page.wait_for("window.a2fDemo && a2fDemo.state === 'idle'")
    assert page.evaluate("document.querySelectorAll('#face *').length") > 5


def stream_microphone(page: Page, seconds: float) -> None:
    page.evaluate("document.querySelector('#mic').click()")
    page.wait_for("a2fDemo.state === 'streaming'", timeout_s=START_S)
    frames = int(seconds * 60)
    page.wait_for(f"a2fDemo.frames >= {frames}", timeout_s=seconds + 30)
    page.evaluate("document.querySelector('#stop').click()")
    page.wait_for("a2fDemo.state === 'idle'", timeout_s=20)


def drop_file(page: Page, wav: Path) -> None:
    """A drop on the page's drop zone, as a user dragging the file there would make."""
    data = base64.b64encode(wav.read_bytes()).decode()
    page.evaluate(
        f"""(() => {{
        const bytes = Uint8Array.from(atob("{data}"), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "speech.wav", {{ type: "audio/wav" }}));
        const drop = document.querySelector("#drop");
        drop.dispatchEvent(new DragEvent("drop", {{ dataTransfer: transfer, bubbles: true,
            cancelable: true }}));
        }})()"""
    )
    page.wait_for("a2fDemo.state === 'streaming'", timeout_s=START_S)
    duration = soundfile.info(wav).duration
    page.wait_for("a2fDemo.state === 'idle'", timeout_s=duration + 30)


def assert_mouth_follows_speech(page: Page) -> dict[str, float]:
    """The drawn mouth is open wider while the audio around a frame is speech than while it
    is silence; the page measured a plausible added latency. Returns the figures."""
    trace: list[dict[str, Any]] = page.evaluate("a2fDemo.trace")
    assert page.evaluate("a2fDemo.errors") == []
    speech = [row["mouth"] for row in trace if row["level"] > SPEECH_LEVEL]
    silence = [row["mouth"] for row in trace if row["level"] < SILENCE_LEVEL]
    assert len(speech) >= 30 and len(silence) >= 30, (len(speech), len(silence))
    figures = {
        "speech_mouth": float(np.mean(speech)),
        "silence_mouth": float(np.mean(silence)),
        "speech_mouth_p90": float(np.percentile(speech, 90)),
    }
    assert figures["speech_mouth"] > figures["silence_mouth"] + 2.0, figures
    latencies = [row["latencyMs"] for row in trace if row["latencyMs"] is not None]
    assert len(latencies) > len(trace) / 2
    figures["latency_ms_p50"] = float(np.median(latencies))
    assert 0 <= figures["latency_ms_p50"] < 5000, figures
    assert page.errors() == []
    return figures


def test_demo_streams_the_microphone_and_the_mouth_moves_with_speech(
    browser: Page, gateway: GatewayProcess
) -> None:
    open_demo(browser, gateway)
    stream_microphone(browser, seconds=7)
    figures = assert_mouth_follows_speech(browser)
    print("microphone:", json.dumps(figures))
    # The emotion sliders send SetEmotion to a live session and the gateway takes them.
    browser.evaluate("document.querySelector('#mic').click()")
    browser.wait_for("a2fDemo.state === 'streaming'", timeout_s=START_S)
    browser.evaluate(
        """(() => { const joy = document.querySelector("input[name=joy]");
        joy.value = 0.8; joy.dispatchEvent(new Event("input")); })()"""
    )
    browser.wait_for("a2fDemo.emotionsSent >= 1")
    frames = browser.evaluate("a2fDemo.frames")
    browser.wait_for(f"a2fDemo.frames >= {frames + 60}", timeout_s=30)
    # A picture of the face mid-word (the file loops: speech comes back every 6 s).
    browser.wait_for("a2fDemo.trace.at(-1).mouth > 10", timeout_s=15, poll_s=0.02)
    browser.screenshot("demo-microphone.png")
    browser.evaluate("document.querySelector('#stop').click()")
    browser.wait_for("a2fDemo.state === 'idle'", timeout_s=20)
    assert browser.evaluate("a2fDemo.errors") == []
    assert browser.errors() == []


def test_demo_streams_a_dropped_file(
    browser: Page, gateway: GatewayProcess, speech_wav: Path
) -> None:
    open_demo(browser, gateway)
    drop_file(browser, speech_wav)
    figures = assert_mouth_follows_speech(browser)
    print("dropped file:", json.dumps(figures))
    browser.screenshot("demo-dropped-file.png")


def test_landing_page_links_the_demo_and_pages_carry_a_csp(gateway: GatewayProcess) -> None:
    with urllib.request.urlopen(f"{gateway.http}/", timeout=10) as reply:
        assert 'href="/demo"' in reply.read().decode()
    with urllib.request.urlopen(f"{gateway.http}/demo", timeout=10) as reply:
        policy = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    # No tenants file: the page connects without a ticket.
    request = urllib.request.Request(f"{gateway.http}/demo/ticket", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert json.load(reply) == {"ticket": None, "expires_in_s": None}


@pytest.fixture(scope="module")
def demo_gateway(
    triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with a tenants file whose `demo` tenant serves the page from its origin."""
    port = free_port()
    folder = tmp_path_factory.mktemp("demo-tenants")
    tenants = folder / "tenants.toml"
    tenants.write_text(
        f'ticket_secret = "{"ab" * 32}"\n'
        "[tenants.demo]\nmax_sessions = 1\n"
        f'allowed_origins = ["http://127.0.0.1:{port}"]\n'
        f'keys = [{{id = "demo-1", sha256 = "{hash_key(DEMO_KEY)}"}}]\n'
    )
    flags = ["--tenants_file", str(tenants), "--demo_tenant", "demo", "--busy_latency_ms", "0"]
    with run_gateway(triton.grpc_url, *flags, port=port, log=folder / "gateway.log") as gateway:
        yield gateway


def test_demo_with_a_tenants_file_uses_the_demo_tenants_tickets(
    browser: Page, demo_gateway: GatewayProcess, speech_wav: Path
) -> None:
    ticket_url = f"{demo_gateway.http}/demo/ticket"
    assert http(ticket_url, b"", {"Origin": "https://elsewhere.example"}) == 403
    assert http(ticket_url, b"") == 403  # no Origin: not a page of the demo's
    open_demo(browser, demo_gateway)
    # Two sessions in a row: each gets a fresh ticket (a ticket opens one connection only).
    stream_microphone(browser, seconds=7)
    figures = assert_mouth_follows_speech(browser)
    print("tenants, microphone:", json.dumps(figures))
    drop_file(browser, speech_wav)
    assert_mouth_follows_speech(browser)
    browser.screenshot("demo-tenants.png")
