"""Real headless Chromium (Debian's `chromium`, which `make test` installs) driven through the
DevTools protocol: pages are loaded, scripts evaluated, console errors collected and screenshots
taken, with nothing but the standard library and `websockets`."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT_ROOT / ".run" / "artifacts"  # screenshots the browser tests leave behind
CHROMIUM = shutil.which("chromium")
START_TIMEOUT_S = 30.0


class PageError(AssertionError):
    """The page logged an error, threw, or did not do what was waited for."""


class Page:
    """One tab: DevTools commands answered in order, events kept for `errors`."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.command(f"{domain}.enable")

    def command(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise PageError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a JavaScript expression (awaited if a promise), run as a user gesture."""
        reply = self.command(
            "Runtime.evaluate",
            timeout_s,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            userGesture=True,
        )
        if "exceptionDetails" in reply:
            raise PageError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def goto(self, url: str) -> None:
        self.command("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, condition: str, timeout_s: float = 30.0, poll_s: float = 0.1) -> Any:
        """The first truthy value of `condition`, polled; PageError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(condition)
            if value:
                return value
            time.sleep(poll_s)
        raise PageError(
            f"not within {timeout_s} s: {condition}; errors: {self.errors()}; "
            f"the page says: {self.evaluate('document.body.innerText.slice(0, 400)')!r}"
        )

    def errors(self) -> list[str]:
        """Everything the page reported as an error so far: console.error, uncaught
        exceptions, failed loads and Content-Security-Policy violations."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            match event.get("method"):
                case "Runtime.consoleAPICalled" if params.get("type") == "error":
                    found.append(" ".join(str(arg.get("value")) for arg in params["args"]))
                case "Runtime.exceptionThrown":
                    found.append(str(params["exceptionDetails"]))
                case "Log.entryAdded" if params["entry"]["level"] == "error":
                    found.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
        return found

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        data = self.command("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port")


@contextmanager
def chromium(profile: Path, *flags: str, size: Sequence[int] = (1200, 760)) -> Iterator[Page]:
    """A headless Chromium with its own profile and `flags`, on a blank tab; stopped by PID."""
    assert CHROMIUM is not None, "chromium is not installed (make test installs it)"
    command = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--no-default-browser-check", "--remote-debugging-port=0", "--remote-allow-origins=*",
        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", *flags,
        "about:blank",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _devtools_port(profile, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            tab = next(t for t in json.load(reply) if t["type"] == "page")
        with connect(tab["webSocketDebuggerUrl"], max_size=None) as socket:
            yield Page(socket)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
