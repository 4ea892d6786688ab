"""The client library and the `a2f` CLI against a secured gateway: a tenants file and TLS with
a self-signed certificate (the real gateway and Triton).

Keys go by flag, parameter or `A2F_API_KEY`; the certificate is trusted by `--ca-file` /
`ca_file=`. A refused credential ends the command at once with one line and costs exactly one
`rejected` audit line (the reconnect logic for drains must not retry it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from a2f_triton.gateway_process import run_gateway

from a2f_client import AuthError, animate_sync, stream_sync
from a2f_protocol.export_formats import parse_jsonl

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFUSED_WITHIN_S = 2.0  # one round trip; a retry would back off 0.25 s, 0.5 s, 1 s, ...


@dataclass(frozen=True)
class Secured:
    url: str
    http: str
    key: str
    cert: Path
    log: Path
    tenants: Path

    def rejections(self) -> list[dict[str, object]]:
        """The audit lines of refused requests so far."""
        lines = []
        for text in self.log.read_text().splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if line.get("event") == "rejected":
                    lines.append(line)
        return lines


def tenancy(*args: str) -> str:
    """`python -m gateway.tenancy.cli ...` as the README runs it: its one line."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.tenancy.cli", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def new_key(path: Path, tenant: str) -> str:
    return tenancy("add", str(path), tenant).split()[-1]  # "... key (shown once): a2f_..."


@pytest.fixture(scope="module")
def secured(triton, self_signed_certificate, tmp_path_factory) -> Iterator[Secured]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("secured")
    tenants = folder / "tenants.toml"
    key = new_key(tenants, "acme")
    cert, private = self_signed_certificate
    log = folder / "gateway.log"
    with run_gateway(
        triton.grpc_url,
        "--tenants_file", str(tenants), "--tenants_reload_s", "0.2",
        "--busy_latency_ms", "0", "--fair_latency_ms", "0",
        "--ssl_certfile", str(cert), "--ssl_keyfile", str(private),
        log=log,
    ) as gateway:  # fmt: skip
        yield Secured(gateway.url, gateway.http, key, cert, log, tenants)


def a2f(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("A2F_")}
    return subprocess.run(
        [sys.executable, "-m", "a2f_client.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT, env={**clean, **(env or {})},
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and all(w in lines[0] for w in words), done.stderr
    return lines[0]


def test_cli_stream_and_animate_with_a_key_by_flag_or_environment(
    secured: Secured, speech_path: Path, tmp_path: Path
) -> None:
    trust = ("--ca-file", str(secured.cert))
    runs = {
        "stream-flag.jsonl": a2f(
            "stream", str(speech_path), "--url", secured.url, "--out",
            str(tmp_path / "stream-flag.jsonl"), "--api-key", secured.key, *trust,
        ),
        "stream-env.jsonl": a2f(
            "stream", str(speech_path), "--url", secured.url, "--out",
            str(tmp_path / "stream-env.jsonl"),
            env={"A2F_API_KEY": secured.key, "A2F_CA_FILE": str(secured.cert)},
        ),
        "animate-flag.jsonl": a2f(
            "animate", str(speech_path), "--url", secured.http, "--out",
            str(tmp_path / "animate-flag.jsonl"), "--api-key", secured.key, *trust,
        ),
        "animate-env.jsonl": a2f(
            "animate", str(speech_path), "--url", secured.http, "--out",
            str(tmp_path / "animate-env.jsonl"), *trust, env={"A2F_API_KEY": secured.key},
        ),
    }  # fmt: skip
    weights = []
    for name, done in runs.items():
        assert done.returncode == 0, done.stderr
        assert secured.key not in done.stdout + done.stderr
        weights.append(parse_jsonl((tmp_path / name).read_bytes().splitlines()).weights)
    for other in weights[1:]:  # blinks are seeded per session: the same on both paths
        np.testing.assert_allclose(other, weights[0], atol=1e-5)
    assert secured.rejections() == []


def test_refused_credentials_end_at_once_with_one_line_and_one_audit_line(
    secured: Secured, speech_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never.csv"
    trust = ("--ca-file", str(secured.cert))
    attempts = {
        "wrong key, stream": (
            ("stream", str(speech_path), "--url", secured.url, "--api-key", "a2f_wrong"),
            "unauthorized",
        ),
        "wrong key, animate": (
            ("animate", str(speech_path), "--url", secured.http, "--api-key", "a2f_wrong"),
            "unauthorized",
        ),
        "no key, stream": (("stream", str(speech_path), "--url", secured.url), "API key required"),
        "bogus ticket, stream": (
            ("stream", str(speech_path), "--url", secured.url + "?ticket=bogus"),
            "Ticket refused",
        ),
    }
    for name, (args, words) in attempts.items():
        before = len(secured.rejections())
        began = time.monotonic()
        done = a2f(*args, "--out", str(out), *trust)
        took = time.monotonic() - began
        line = one_line(done, "refused", words)
        assert "bogus" not in line, line  # a ticket is a credential: never printed
        time.sleep(0.2)  # the gateway's audit line is written after its close
        assert len(secured.rejections()) == before + 1, name
        assert took < REFUSED_WITHIN_S + 1.5, (name, took)  # + the CLI's own start-up
        assert not out.exists() and not list(tmp_path.glob(".*.part")), name

    # The batch API takes keys only: a ticket URL is refused before anything is sent.
    done = a2f("animate", str(speech_path), "--url", secured.http + "/?ticket=x", "--out", str(out))
    one_line(done, "ticket", "API key")


def test_untrusted_certificate_is_one_line_and_insecure_skips_the_check(
    secured: Secured, speech_path: Path, tmp_path: Path
) -> None:
    done = a2f("stream", str(speech_path), "--url", secured.url, "--out", str(tmp_path / "x.csv"),
               "--api-key", secured.key)  # fmt: skip
    one_line(done, "certificate", "--ca-file")
    done = a2f("animate", str(speech_path), "--url", secured.http, "--out",
               str(tmp_path / "x.csv"), "--api-key", secured.key, "--insecure")  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_library_api_key_and_ca_file_on_both_paths(secured: Secured, speech_path: Path) -> None:
    options = {"api_key": secured.key, "ca_file": secured.cert, "blinks": False}
    streamed = np.stack([f.weights for f in stream_sync(speech_path, secured.url, **options)])
    batch = animate_sync(speech_path, url=secured.http, **options)
    np.testing.assert_allclose(streamed, batch.weights, atol=1e-5)
    with pytest.raises(AuthError) as refused:
        list(stream_sync(speech_path, secured.url, api_key="a2f_wrong", ca_file=secured.cert))
    assert refused.value.code == "unauthorized"
    with pytest.raises(AuthError):
        animate_sync(speech_path, url=secured.http, api_key="a2f_wrong", ca_file=secured.cert)


def test_a_key_revoked_mid_stream_ends_the_cli_with_one_line_and_no_file(
    secured: Secured, speech_path: Path, tmp_path: Path
) -> None:
    line = tenancy("add", str(secured.tenants), "bravo")  # "tenant bravo, key id k-..., key ..."
    key_id, key = line.split("key id ")[1].split(",")[0], line.split()[-1]
    out = tmp_path / "cut.csv"
    cli = subprocess.Popen(
        [sys.executable, "-m", "a2f_client.cli", "stream", str(speech_path), "--url", secured.url,
         "--out", str(out), "--realtime", "--ca-file", str(secured.cert)],
        stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env={**os.environ, "A2F_API_KEY": key},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".*.part")):  # frames are being written
        assert time.monotonic() < deadline and cli.poll() is None, cli.stderr
        time.sleep(0.05)
    tenancy("revoke", str(secured.tenants), key_id)
    _, stderr = cli.communicate(timeout=30)
    done = subprocess.CompletedProcess(cli.args, cli.returncode, "", stderr)
    one_line(done, "refused (unauthorized)", "revoked")
    assert not out.exists() and not list(tmp_path.glob(".*.part"))
