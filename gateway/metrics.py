"""Prometheus metrics of one gateway instance (own registry, so tests can make several).

With several workers (`gateway.processes.workers`) each process writes its values to files in
`PROMETHEUS_MULTIPROC_DIR`, which the supervisor sets before the workers import
prometheus_client (it picks its value storage at import); a scrape of any worker adds up all.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# How a session arrived: the session metrics' `protocol` label and `/sessions`' field.
WEBSOCKET = "websocket"
ACE_GRPC = "ace_grpc"  # NVIDIA's Audio2Face-3D gRPC API (gateway.drivers.ace_grpc)
PROTOCOLS = (WEBSOCKET, ACE_GRPC)

LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)


class Metrics:
    """Sessions, frames, errors by kind, frame latency and Triton request latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # By `protocol` (websocket, ace_grpc): sum over it for the host's (the autoscaler does).
        self.sessions_active = Gauge(
            "a2f_sessions_active",
            "Sessions open now, by protocol",
            ["protocol"],
            registry=self.registry,
            multiprocess_mode="livesum",  # each live worker's own sessions, summed
        )
        self.sessions = Counter(
            "a2f_sessions", "Sessions started, by protocol", ["protocol"], registry=self.registry
        )
        for protocol in PROTOCOLS:  # every protocol reported from the start, 0 until used
            self.sessions_active.labels(protocol)
            self.sessions.labels(protocol)
        self.sessions_capacity = Gauge(
            "a2f_sessions_capacity",
            "Sessions the host may hold at once (--max_sessions): available = this - active",
            registry=self.registry,
            multiprocess_mode="livemax",  # every worker reports the host's limit
        )
        self.frames = Counter("a2f_frames", "BlendshapeFrames sent", registry=self.registry)
        self.errors = Counter(
            "a2f_errors", "Error messages sent, by kind", ["kind"], registry=self.registry
        )
        self.frame_latency = Histogram(
            "a2f_frame_latency_seconds",
            "From the PushAudio that completed a frame's window to the frame being sent",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.triton_latency = Histogram(
            "a2f_triton_request_seconds",
            "From a session's ready frames being submitted to their weights coming back from Triton "
            "(a wait for a free merged-request slot included)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.triton_batch = Histogram(
            "a2f_triton_request_frames",
            "Frames per submission (one PushAudio's ready frames; merged requests carry several)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        # Per tenant: the label takes the tenants file's ids ("" without one), a bounded set.
        self.tenant_sessions = Counter(
            "a2f_tenant_sessions", "Sessions started, by tenant", ["tenant"], registry=self.registry
        )
        self.tenant_frames = Counter(
            "a2f_tenant_frames",
            "BlendshapeFrames produced by ended sessions, by tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.tenant_audio_seconds = Counter(
            "a2f_tenant_audio_seconds",
            "Audio received in ended sessions and batch requests, by tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.tenant_errors = Counter(
            "a2f_tenant_errors",
            "Error messages sent in ended sessions, by tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.quota_rejections = Counter(
            "a2f_quota_rejections",
            "Requests refused by a tenant quota (sessions, audio_rate)",
            ["tenant", "quota"],
            registry=self.registry,
        )
        self.busy_rejections = Counter(
            "a2f_busy_rejections",
            "New sessions and uploads refused as busy, by tenant and reason (capacity: live "
            "frames late; fair_share: the tenant is over its share of a host past capacity)",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.auth_rejections = Counter(
            "a2f_auth_rejections",
            "Requests refused before any tenant's work, by code",
            ["code"],
            registry=self.registry,
        )
        self.dispatched_frames = Counter(
            "a2f_dispatched_frames",
            "Frames sent to Triton by the dispatcher, by lane (stream, upload)",
            ["lane"],
            registry=self.registry,
        )
        self.triton_input_bytes = Counter(
            "a2f_triton_input_bytes",
            "Bytes of the inputs of requests to Triton (audio windows and per-frame parameters), "
            "in shared memory or in the request",
            registry=self.registry,
        )
        self.store_reachable = Gauge(
            "a2f_store_reachable",
            "1 while the shared store (Redis, or this host's table) answers within its deadline",
            registry=self.registry,
            multiprocess_mode="livemin",  # reachable only if every worker reaches it
        )
        self.fair_share_rate = Gauge(
            "a2f_fair_share_rows_per_second",
            "Frames per second allowed to tenants over their fair share (0: none held back)",
            registry=self.registry,
        )
        # Per Triton endpoint (gateway.inference.endpoint_pool).
        self.triton_endpoint_healthy = Gauge(
            "a2f_triton_endpoint_healthy",
            "1 while the endpoint passes its probes and serves the pool's model contract",
            ["endpoint"],
            registry=self.registry,
            multiprocess_mode="livemin",  # healthy only if every worker finds it so
        )
        self.triton_endpoint_outstanding = Gauge(
            "a2f_triton_endpoint_outstanding",
            "Requests sent to the endpoint and not answered yet",
            ["endpoint"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.triton_endpoint_requests = Counter(
            "a2f_triton_endpoint_requests",
            "Requests per endpoint by outcome (ok, failed: a timeout included)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        # The batch API (gateway.web.batch_metrics).
        self.batch_requests = Counter(
            "a2f_batch_requests",
            "POST /v1/animate requests by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "a2f_batch_request_seconds",
            "POST /v1/animate from the request to the response's last byte",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
            registry=self.registry,
        )
        self.batch_bytes = Counter(
            "a2f_batch_bytes",
            "POST /v1/animate bytes by direction (in: request bodies, out: responses)",
            ["direction"],
            registry=self.registry,
        )
        self.triton_retries = Counter(
            "a2f_triton_retries",
            "Requests sent again to another endpoint after failing on one",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format, of every worker when there are several."""
        if MULTIPROC_DIR_VARIABLE not in os.environ:
            return generate_latest(self.registry)
        workers = CollectorRegistry()
        MultiProcessCollector(workers)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(workers)
