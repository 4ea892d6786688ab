"""Tenants without a gateway: the file and its keys, tickets, ledgers, the failure limiter, the
caller's address, log redaction, start-up refusals, and the stores' per-tenant limit (the
Redis store against a real redis-server)."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings, is_loopback
from gateway.stores.base import LimitStore, QuotaExceeded, SessionStore
from gateway.stores.host import HostSessionStore, create_table
from gateway.stores.local import MemoryLimits, SessionRegistry
from gateway.stores.redis_store import RedisStore
from gateway.tenancy import tickets
from gateway.tenancy.cli import main as tenants_cli
from gateway.tenancy.gatekeeper import (
    AuthFailure,
    FailureLimiter,
    RedactTickets,
    client_address,
    startup_problem,
)
from gateway.tenancy.quota import LeasedAudio
from gateway.tenancy.tenants import TenantDirectory, TenantsFileError, load_tenants


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(list(argv))
    return out.getvalue()


def test_cli_writes_hashes_only_and_keys_identify_their_tenant(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    first = cli("add", str(path), "acme", "--max-sessions", "3", "--origin", "https://a.example")
    key = first.strip().rsplit(" ", 1)[1]
    second = cli("add-key", str(path), "acme")  # a second key, limits kept
    assert key not in path.read_text()
    tenants = load_tenants(path)
    acme = tenants.tenants["acme"]
    assert acme.max_sessions == 3 and acme.allowed_origins == ["https://a.example"]
    assert len(acme.keys) == 2 and tenants.ticket_secret is not None
    directory = TenantDirectory(tenants)
    identity = directory.identify(key)
    assert identity is not None and identity.tenant_id == "acme"
    assert directory.identify(key + "x") is None and directory.identify("") is None
    assert second.split("key id ")[1].split(",")[0] in directory.key_ids


def test_cli_and_file_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tenants.toml"
    with pytest.raises(SystemExit) as exited:
        tenants_cli(["add", str(path), "bad id with spaces"])
    assert exited.value.code == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
    path.write_text("[tenants.acme]\nmax_sessions = 0\n")
    with pytest.raises(TenantsFileError, match="max_sessions"):
        load_tenants(path)
    path.write_text("[tenants.a]\nkeys=[{id='k', sha256='" + "0" * 64 + "'}]\n[tenants.b]\n"
                    "keys=[{id='k', sha256='" + "1" * 64 + "'}]\n")  # fmt: skip
    with pytest.raises(TenantsFileError, match="twice"):
        load_tenants(path)


def test_tickets_are_signed_and_expire() -> None:
    secret = b"s" * 32
    ticket = tickets.issue(secret, "k-1", expires_at=100.0)
    claims = tickets.verify(secret, ticket, now=99.0)
    assert claims.key_id == "k-1" and len(claims.nonce) == 32
    with pytest.raises(tickets.TicketError, match="expired"):
        tickets.verify(secret, ticket, now=100.0)
    with pytest.raises(tickets.TicketError, match="invalid"):
        tickets.verify(b"t" * 32, ticket, now=0.0)
    payload, _, signature = ticket.partition(".")
    with pytest.raises(tickets.TicketError, match="invalid"):
        tickets.verify(secret, f"{payload}x.{signature}", now=0.0)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "sessions"
    create_table(path, 4)
    return path


@pytest.fixture(params=["in-process", "host", "redis"])
def store(request: pytest.FixtureRequest, table: Path, redis_url: str) -> Iterator[SessionStore]:
    if request.param == "in-process":
        yield SessionRegistry(4)
    elif request.param == "host":
        host = HostSessionStore(table)
        yield host
        host.close()
    else:
        shared = RedisStore(redis_url, 4, prefix=f"test-{uuid.uuid4().hex}")
        yield shared
        shared.close()


def test_a_tenant_limit_is_held_beside_the_host_limit(store: SessionStore) -> None:
    assert store.acquire("a1", 16000, "a", tenant_limit=2) is not None
    assert store.acquire("a2", 16000, "a", tenant_limit=2) is not None
    with pytest.raises(QuotaExceeded) as refused:
        store.acquire("a3", 16000, "a", tenant_limit=2)
    assert refused.value.retry_after_s > 0
    assert store.acquire("b1", 16000, "b", tenant_limit=2) is not None
    store.release("a1")
    assert store.acquire("a3", 16000, "a", tenant_limit=2) is not None
    assert store.acquire("c1", 16000, "c") is not None
    assert store.acquire("c2", 16000, "c") is None  # the host's 4 slots are all taken
    assert store.count("a") == 2 and store.count() == 4


@pytest.fixture(params=["in-process", "redis"])
def limits(request: pytest.FixtureRequest, redis_url: str) -> Iterator[tuple[LimitStore, Clock]]:
    clock = Clock()
    if request.param == "in-process":
        yield MemoryLimits(clock), clock
        return
    shared = RedisStore(redis_url, 1, prefix=f"test-{uuid.uuid4().hex}", clock=clock)
    yield shared, clock
    shared.close()


def test_audio_is_counted_per_minute_and_tickets_redeemed_once(
    limits: tuple[LimitStore, Clock],
) -> None:
    store, clock = limits
    assert store.charge_audio("a", 1.5, 2.0) == 0.0
    assert store.charge_audio("a", 1.0, 2.0) == pytest.approx(40.0)  # refused, not counted
    assert store.charge_audio("a", 0.5, 2.0) == 0.0
    assert store.charge_audio("b", 2.0, 2.0) == 0.0  # tenants count apart
    clock.now += 40
    assert store.charge_audio("a", 2.0, 2.0) == 0.0  # a new minute
    assert store.redeem("n1", clock.now + 5)
    assert not store.redeem("n1", clock.now + 5)
    assert not store.redeem("n2", clock.now - 1)


def test_leases_spare_the_shared_store_and_hold_the_limit_across_processes() -> None:
    clock = Clock()
    shared = MemoryLimits(clock)
    one, two = LeasedAudio(shared, clock), LeasedAudio(shared, clock)
    for _ in range(10):  # 10 pushes of 0.04 s: one lease of 5 s (LEASE_S)
        assert one.charge_audio("a", 0.04, 60.0) == 0.0
    assert shared.charge_audio("a", 55.0, 60.0) == 0.0  # the shared minute holds that lease
    assert shared.charge_audio("a", 0.01, 60.0) > 0
    assert one.charge_audio("a", 4.5, 60.0) == 0.0  # from the rest of its lease
    assert two.charge_audio("a", 0.04, 60.0) > 0  # nothing left to lease
    clock.now += 40  # next minute: leases start afresh
    assert two.charge_audio("a", 30.0, 60.0) == 0.0
    assert one.charge_audio("a", 30.0, 60.0) == 0.0
    assert one.charge_audio("a", 0.5, 60.0) > 0


def test_failures_are_limited_per_address_within_a_minute(
    limits: tuple[LimitStore, Clock],
) -> None:
    store, clock = limits
    limiter = FailureLimiter(2, LeasedAudio(store, clock))  # as a gateway with Redis holds it
    limiter.record("198.51.100.1")
    limiter.check("198.51.100.1")
    FailureLimiter(2, store).record("198.51.100.1")  # another process, the same store
    with pytest.raises(AuthFailure) as refused:
        limiter.check("198.51.100.1")
    assert refused.value.status == 429 and refused.value.close_code == 4429
    assert refused.value.retry_after_s == pytest.approx(40.0)  # the minute's rest
    limiter.check("198.51.100.2")
    clock.now += 40  # a new minute
    limiter.check("198.51.100.1")


def test_forwarded_for_is_believed_from_trusted_proxies_only() -> None:
    trusted = frozenset({"10.0.0.1", "10.0.0.2"})
    assert client_address("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2", trusted) == "203.0.113.5"
    assert client_address("192.0.2.9", "203.0.113.5", trusted) == "192.0.2.9"
    assert client_address("10.0.0.1", None, trusted) == "10.0.0.1"


def test_tickets_never_reach_the_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "",
        0,
        '%s - "WebSocket %s"',
        ("1.2.3.4", "/?ticket=abc.def&x=1"),
        None,
    )
    RedactTickets().filter(record)
    assert "abc.def" not in record.getMessage() and "x=1" in record.getMessage()


def test_public_binds_need_a_tenants_file_or_an_explicit_flag(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("")
    assert startup_problem(Settings()) is None
    assert "--tenants_file" in (startup_problem(Settings(host="0.0.0.0")) or "")
    assert startup_problem(Settings(host="0.0.0.0", insecure_open=True)) is None
    path = tmp_path / "tenants.toml"
    cli("add", str(path), "acme")
    assert startup_problem(Settings(host="0.0.0.0", tenants_file=str(path))) is None
    assert "--redis_url" in (startup_problem(Settings(tenants_file=str(path), workers=2)) or "")
    assert "tenants file" in (startup_problem(Settings(tenants_file=str(tmp_path / "no"))) or "")
