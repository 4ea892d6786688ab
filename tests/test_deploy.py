"""Deployment files checked offline: every Kubernetes manifest against the API schemas of a
pinned Kubernetes release (kubernetes-validate bundles them), compose.yaml against the compose
specification's schema (check-jsonschema bundles it), and the HAProxy config by haproxy itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from a2f_triton.cluster import HAPROXY_CONFIG, haproxy_binary

PROJECT_ROOT = Path(__file__).resolve().parent.parent
K8S = PROJECT_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # preStop `sleep` needs 1.30 or later
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in MANIFESTS)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[path.stem for path in MANIFESTS])
def test_kubernetes_manifests_are_valid(manifest: Path) -> None:
    done = run(
        sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
        "--kubernetes-version", KUBERNETES_VERSION, str(manifest),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_manifests_cover_the_deployment() -> None:
    kinds = {
        (doc["kind"], doc["metadata"]["name"])
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
    }
    assert {
        ("Deployment", "triton"), ("Deployment", "gateway"), ("Service", "triton"),
        ("Service", "gateway"), ("HorizontalPodAutoscaler", "gateway"),
        ("PodDisruptionBudget", "gateway"), ("NetworkPolicy", "triton-from-gateways"),
        ("Ingress", "gateway"), ("Secret", "a2f-tenants"),
    } <= kinds  # fmt: skip


def test_compose_file_follows_the_compose_specification() -> None:
    done = run(
        sys.executable, "-m", "check_jsonschema",
        "--builtin-schema", "vendor.compose-spec", str(PROJECT_ROOT / "compose.yaml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_puts_haproxy_in_front_of_gateway_replicas() -> None:
    services = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())["services"]
    haproxy = services["haproxy"]
    gateways = [name for name in services if name.startswith("gateway-")]
    assert len(gateways) == 2
    assert sorted(haproxy["environment"][f"A2F_GATEWAY_{n}"] for n in (1, 2)) == [
        f"{name}:8765" for name in gateways
    ]
    assert "expose" in services[gateways[0]] and "ports" not in services[gateways[0]]


def test_haproxy_accepts_its_configuration() -> None:
    env = {
        **os.environ,
        "A2F_LB_BIND": "127.0.0.1:8765",
        "A2F_GATEWAY_1": "127.0.0.1:1",
        "A2F_GATEWAY_2": "127.0.0.1:2",
    }
    done = run(haproxy_binary(), "-c", "-f", str(HAPROXY_CONFIG), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
