"""deploy/monitoring against Debian's Prometheus (`make test` installs it): promtool checks the
configuration and the rules and runs their unit tests; a real Prometheus scrapes a live stack
(its own Triton, a gateway with a tenants file, scraped with an admin key as Prometheus' bearer
token) under a few streams, and every dashboard panel's query and every alert's signal return
data; frames-late and Triton-down alerts (their `for:` shortened) fire."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import answers_ok, free_port, running
from websockets.asyncio.client import connect

from gateway.tenancy.tenants import hash_key
from tests.canary import START, stream_canary

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MONITORING = PROJECT_ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "open-a2f.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Panels that only a GPU host can fill (Triton exports nv_gpu_* there alone).
GPU_ONLY = {"GPU utilisation", "GPU memory used"}
KEYS = {
    "load": "load-key-" + "1" * 32,
    "tiny": "tiny-key-" + "2" * 32,
    "ops": "ops-key-" + "3" * 32,
}
WAIT_S = 60.0

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None, reason="prometheus missing (make test installs it)"
)


def panel_queries() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in dashboard["panels"]
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def signal_of(expression: str) -> str:
    """An alert's expression without its final comparison: what it watches."""
    found = re.fullmatch(r"(.*\S)\s+(?:==|!=|>=|<=|>|<)\s+[-0-9.e]+", expression.strip())
    assert found, f"not `<signal> <comparison> <threshold>`: {expression}"
    return found.group(1)


def test_every_panel_names_a2f_or_nv_metrics_and_every_alert_has_a_runbook() -> None:
    for title, expressions in panel_queries().items():
        assert expressions and all(re.search(r"\b(a2f|nv)_", e) for e in expressions), title
    for rule in alert_rules():
        assert rule["annotations"]["runbook"] and rule["annotations"]["summary"], rule["alert"]
        signal_of(rule["expr"])


@needs_prometheus
def test_promtool_checks_the_configuration_and_the_rules_and_runs_their_tests() -> None:
    assert PROMTOOL is not None
    for command in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            [PROMTOOL, *command], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


# -- the live stack ------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expression: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def firing(self) -> set[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=10) as reply:
            alerts = json.load(reply)["data"]["alerts"]
        return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}

    def rules(self) -> list[tuple[str, str, str]]:
        """Each alert rule's name, state and health (its last evaluation's error, if any)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as reply:
            groups = json.load(reply)["data"]["groups"]
        return [
            (rule["name"], rule["state"], rule.get("lastError", "") or rule["health"])
            for group in groups
            for rule in group["rules"]
        ]

    def wait_firing(self, *names: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not set(names) <= self.firing():
            assert time.monotonic() < deadline, (
                f"{names} not firing; firing: {self.firing()}; rules: {self.rules()}"
            )
            time.sleep(0.5)


def tenants_file(path: Path) -> Path:
    limits = {"load": "max_sessions = 10", "tiny": "max_sessions = 1", "ops": "admin = true"}
    path.write_text(
        "".join(
            f"[tenants.{tenant}]\n{limits[tenant]}\n"
            f'keys = [{{id = "{tenant}-1", sha256 = "{hash_key(key)}"}}]\n'
            for tenant, key in KEYS.items()
        )
    )
    return path


def prometheus_config(folder: Path, gateway: GatewayProcess, triton: EmbeddedTriton) -> Path:
    """deploy/monitoring's configuration aimed at this stack: scraped and evaluated every
    second, the gateway through the admin key, every alert's `for:` down to 2 s."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    key_file = folder / "admin_key"
    key_file.write_text(KEYS["ops"])
    for job in config["scrape_configs"]:
        if job["job_name"] == "a2f-gateway":
            job["static_configs"] = [{"targets": [gateway.http.removeprefix("http://")]}]
            job["authorization"] = {"type": "Bearer", "credentials_file": str(key_file)}
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{triton.metrics_port}"]}]
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[EmbeddedTriton, GatewayProcess, Prometheus]]:
    """Its own Triton (the test stops it), a gateway with tenants, Prometheus scraping both."""
    assert PROMETHEUS is not None
    with ExitStack() as stack:
        triton = stack.enter_context(
            EmbeddedTriton(
                grpc_port=free_port(),
                http_port=free_port(),
                metrics_port=free_port(),
                run_dir=tmp_path / "triton",
            )
        )
        # Admission refuses new sessions as soon as live frames take over 1 ms: under load.
        flags = ["--tenants_file", str(tenants_file(tmp_path / "tenants.toml"))]
        flags += ["--busy_latency_ms", "1", "--fair_latency_ms", "0"]
        gateway = stack.enter_context(
            run_gateway(triton.grpc_url, *flags, log=tmp_path / "gateway.log")
        )
        port = free_port()
        command = [
            PROMETHEUS,
            f"--config.file={prometheus_config(tmp_path, gateway, triton)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        url = f"http://127.0.0.1:{port}"
        stack.enter_context(
            running(
                command,
                partial(answers_ok, f"{url}/-/ready"),
                name="prometheus",
                timeout_s=30,
                log=tmp_path / "prometheus.log",
            )
        )
        prometheus = Prometheus(url)
        # Targets are found a few seconds after start: scrape both before anything happens.
        deadline = time.monotonic() + WAIT_S
        while len(prometheus.query("up == 1")) < 2:
            assert time.monotonic() < deadline, prometheus.query("up")
            time.sleep(0.5)
        yield triton, gateway, prometheus


def status_of(url: str, data: bytes | None = None, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


async def refused_start(url: str, tenant: str) -> str:
    """The Error code a StartSession of `tenant` gets while its other sessions run."""
    async with connect(url, additional_headers=bearer(tenant)) as ws:
        await ws.send(START)
        return str(json.loads(await asyncio.wait_for(ws.recv(), 30)).get("code"))


async def load(url: str, triton: EmbeddedTriton) -> None:
    """Six real-time streams; Triton frozen for a second under them makes their frames late;
    then a new session is refused as busy (admission judges on at least 100 pushes in 2 s:
    six streams of 100 ms pushes make 120, each dispatched in more than the 1 ms bound)."""
    assert triton.pid is not None
    running_load = asyncio.gather(*(stream_canary(url, bearer("load")) for _ in range(6)))
    await asyncio.sleep(1.5)
    os.kill(triton.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(1)
    finally:
        os.kill(triton.pid, signal.SIGCONT)
    # Admission judges the last 2 s: pushes since the freeze, 120 of them, late beyond 1 ms.
    await asyncio.sleep(2.5)
    assert await refused_start(url, "load") == "busy"
    for canary in await running_load:
        assert canary.errors == [], canary.errors


@needs_prometheus
def test_prometheus_scrapes_a_live_stack_every_panel_and_alert_has_data_and_alerts_fire(
    stack: tuple[EmbeddedTriton, GatewayProcess, Prometheus], speech_path: Path
) -> None:
    triton, gateway, prometheus = stack
    url = gateway.url
    # Refusals for their panels: a request without a key, a tenant over its session quota.
    assert status_of(f"{gateway.http}/metrics") == 401

    async def over_quota() -> None:
        async with connect(url, additional_headers=bearer("tiny")) as ws:
            await ws.send(START)
            await asyncio.wait_for(ws.recv(), 30)
            assert await refused_start(url, "tiny") == "quota"

    asyncio.run(over_quota())
    animate = f"{gateway.http}/v1/animate?format=csv"
    assert status_of(animate, speech_path.read_bytes(), KEYS["load"]) == 200
    asyncio.run(load(url, triton))
    prometheus.wait_firing("A2FFramesLate")

    # A counter first seen in the last scrape has no rate yet: give each query a few scrapes.
    queries = [
        (title, expression)
        for title, expressions in panel_queries().items()
        if title not in GPU_ONLY
        for expression in expressions
    ]
    deadline = time.monotonic() + 10
    while (missing := [q for q in queries if not prometheus.query(q[1])]) and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    assert missing == [], missing
    signals = {rule["alert"]: signal_of(rule["expr"]) for rule in alert_rules()}
    answered = {name for name, watched in signals.items() if prometheus.query(watched)}

    # Triton goes away under a live stream: its session ends with Error inference.
    async def stream_through_outage() -> None:
        streaming = asyncio.create_task(stream_canary(url, bearer("load")))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(triton.stop)
        canary = await streaming
        assert [error["code"] for error in canary.errors] == ["inference"]

    asyncio.run(stream_through_outage())
    prometheus.wait_firing("A2FTritonDown", "A2FTritonEndpointOut")
    assert status_of(animate, speech_path.read_bytes(), KEYS["load"]) == 503
    time.sleep(2)  # a scrape after the 503
    answered |= {name for name, watched in signals.items() if prometheus.query(watched)}
    assert answered == set(signals), set(signals) - answered
