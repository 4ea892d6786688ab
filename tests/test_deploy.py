"""Deployment files checked offline: every Kubernetes manifest against the API schemas of a
pinned Kubernetes release (kubernetes-validate bundles them), compose.yaml against the compose
specification's schema (check-jsonschema bundles it), and the HAProxy config by haproxy itself;
and that each serves the Audio2Face-3D gRPC API beside the WebSocket, with a gRPC readiness
check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from a2f_triton.cluster import HAPROXY_CONFIG, haproxy_binary

from a2f_protocol import ACE_PORT
from gateway.metrics import PROTOCOLS, Metrics

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
        ("Ingress", "gateway"), ("Ingress", "gateway-grpc"), ("Secret", "a2f-tenants"),
    } <= kinds  # fmt: skip


def manifest(path: str, kind: str, name: str | None = None) -> dict[str, Any]:
    """The resource of `kind` (and `name`, if given) in the manifest file `path`."""
    return next(
        doc
        for doc in yaml.safe_load_all((K8S / path).read_text())
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    )


def test_the_gateway_pods_serve_grpc_and_are_ready_by_grpc_health() -> None:
    pod = manifest("gateway.yaml", "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["grpc"] == int(env["A2F_GRPC_PORT"]) == ACE_PORT
    # Kubernetes' own gRPC probe (grpc.health.v1), on the gRPC port.
    assert container["readinessProbe"]["grpc"] == {"port": ports["grpc"]}
    service = manifest("gateway.yaml", "Service")["spec"]
    assert {"name": "grpc", "port": ACE_PORT, "targetPort": "grpc"}.items() <= next(
        port for port in service["ports"] if port["name"] == "grpc"
    ).items()
    grpc_ingress = manifest("ingress.yaml", "Ingress", "gateway-grpc")
    assert (
        grpc_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"]
        == "GRPC"
    )
    (rule,) = grpc_ingress["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "gateway",
        "port": {"name": "grpc"},
    }


def test_the_autoscaler_scales_on_a_gauge_the_gateway_exports_by_protocol() -> None:
    """The HPA's per-pod metric is the gauge of open sessions, labelled by protocol: the
    adapter sums the label away (its rule is in the manifest's comment)."""
    spec = manifest("autoscaling.yaml", "HorizontalPodAutoscaler")["spec"]
    (name,) = [m["pods"]["metric"]["name"] for m in spec["metrics"] if m["type"] == "Pods"]
    families = {family.name: family for family in Metrics().registry.collect()}
    assert families[name].type == "gauge"
    assert {sample.labels["protocol"] for sample in families[name].samples} == set(PROTOCOLS)
    assert (
        "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
        in (K8S / "autoscaling.yaml").read_text()
    )


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


def test_compose_serves_grpc_through_haproxy_and_checks_grpc_health() -> None:
    services = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())["services"]
    haproxy, gateway = services["haproxy"], services["gateway-1"]
    assert gateway["environment"]["A2F_GRPC_PORT"] == str(ACE_PORT)
    assert str(ACE_PORT) in gateway["expose"]
    assert sorted(haproxy["environment"][f"A2F_GATEWAY_{n}_GRPC"] for n in (1, 2)) == [
        f"gateway-{n}:{ACE_PORT}" for n in (1, 2)
    ]
    assert haproxy["environment"]["A2F_LB_GRPC_BIND"].endswith(f":{ACE_PORT}")
    assert f"127.0.0.1:{ACE_PORT}:{ACE_PORT}" in haproxy["ports"]
    probe = " ".join(gateway["healthcheck"]["test"])
    assert "HealthStub" in probe and f"127.0.0.1:{ACE_PORT}" in probe


GRPC_FRONT = {
    "A2F_LB_GRPC_BIND": "127.0.0.1:52000",
    "A2F_GATEWAY_1_GRPC": "127.0.0.1:3",
    "A2F_GATEWAY_2_GRPC": "127.0.0.1:4",
}


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "http+grpc"])
def test_haproxy_accepts_its_configuration(grpc: bool) -> None:
    """With the gRPC front and without it (no A2F_LB_GRPC_BIND)."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in GRPC_FRONT},
        "A2F_LB_BIND": "127.0.0.1:8765",
        "A2F_GATEWAY_1": "127.0.0.1:1",
        "A2F_GATEWAY_2": "127.0.0.1:2",
        **(GRPC_FRONT if grpc else {}),
    }
    done = run(haproxy_binary(), "-c", "-f", str(HAPROXY_CONFIG), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
