"""Tenants without a gateway: the file and its keys, tickets, ledgers, the failure limiter, the
caller's address, log redaction, start-up refusals, and the stores' per-tenant limit (the
Redis store against a real redis-server)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from a2f_triton.processes import free_port

from gateway.metrics import ACE_GRPC, WEBSOCKET, Metrics
from gateway.settings import Settings, is_loopback
from gateway.stores.base import LimitStore, QuotaExceeded, SessionStore, StoreUnavailable
from gateway.stores.host import HostSessionStore, create_table
from gateway.stores.local import MemoryLimits, SessionRegistry
from gateway.stores.redis_store import RedisStore
from gateway.tenancy import tickets
from gateway.tenancy.audit import Audit
from gateway.tenancy.cli import main as tenants_cli
from gateway.tenancy.gatekeeper import (
    AuthFailure,
    Caller,
    FailureLimiter,
    Gatekeeper,
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
async def store(
    request: pytest.FixtureRequest, table: Path, redis_url: str
) -> AsyncIterator[SessionStore]:
    if request.param == "in-process":
        yield SessionRegistry(4)
    elif request.param == "host":
        host = HostSessionStore(table)
        yield host
        host.close()
    else:
        shared = RedisStore(redis_url, 4, prefix=f"test-{uuid.uuid4().hex}")
        yield shared
        await shared.close()


async def test_a_tenant_limit_is_held_beside_the_host_limit(store: SessionStore) -> None:
    assert await store.acquire("a1", 16000, "a", tenant_limit=2) is not None
    assert await store.acquire("a2", 16000, "a", tenant_limit=2) is not None
    with pytest.raises(QuotaExceeded) as refused:
        await store.acquire("a3", 16000, "a", tenant_limit=2)
    assert refused.value.retry_after_s > 0
    assert await store.acquire("b1", 16000, "b", tenant_limit=2) is not None
    await store.release("a1")
    assert await store.acquire("a3", 16000, "a", tenant_limit=2) is not None
    assert await store.acquire("c1", 16000, "c") is not None
    assert await store.acquire("c2", 16000, "c") is None  # the host's 4 slots are all taken
    assert await store.count("a") == 2 and await store.count() == 4


async def test_the_report_names_each_sessions_protocol(store: SessionStore) -> None:
    assert await store.acquire("a", 16000) is not None
    assert await store.acquire("b", 16000, "t", None, ACE_GRPC) is not None
    report = await store.report()
    assert {s.session_id: s.protocol for s in report.sessions} == {"a": WEBSOCKET, "b": ACE_GRPC}


async def test_redis_slots_are_written_again_after_redis_lost_them(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    store = RedisStore(redis_url, 2, prefix=prefix)
    assert await store.acquire("a", 16000, "t") is not None
    raw = aioredis.Redis.from_url(redis_url)
    await raw.delete(*await raw.keys(f"{prefix}:*"))  # as a restart without persistence
    await raw.aclose()
    assert await store.count() == 0
    await store.heartbeat()
    assert await store.count("t") == 1 and (await store.report()).count == 1
    await store.close()


async def test_an_unreachable_redis_is_reported_at_once_never_as_a_refusal() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", 2)  # nobody listens there
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Redis"):
        await store.acquire("a", 16000)
    assert not store.state().reachable
    for _ in range(20):  # asked again only after STORE_RETRY_S: no wait at all meanwhile
        with pytest.raises(StoreUnavailable):
            await store.charge_audio("t", 1.0, 60.0)
    assert time.monotonic() - began < 1.0
    await store.close()


@pytest.fixture(params=["in-process", "redis"])
async def limits(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[tuple[LimitStore, Clock]]:
    clock = Clock()
    if request.param == "in-process":
        yield MemoryLimits(clock), clock
        return
    shared = RedisStore(redis_url, 1, prefix=f"test-{uuid.uuid4().hex}", clock=clock)
    yield shared, clock
    await shared.close()


async def test_audio_is_counted_per_minute_and_tickets_redeemed_once(
    limits: tuple[LimitStore, Clock],
) -> None:
    store, clock = limits
    assert await store.charge_audio("a", 1.5, 2.0) == 0.0
    assert await store.charge_audio("a", 1.0, 2.0) == pytest.approx(40.0)  # refused, not counted
    assert await store.charge_audio("a", 0.5, 2.0) == 0.0
    assert await store.charge_audio("b", 2.0, 2.0) == 0.0  # tenants count apart
    clock.now += 40
    assert await store.charge_audio("a", 2.0, 2.0) == 0.0  # a new minute
    assert await store.redeem("n1", clock.now + 5)
    assert not await store.redeem("n1", clock.now + 5)
    assert not await store.redeem("n2", clock.now - 1)


async def test_leases_spare_the_shared_store_and_hold_the_limit_across_processes() -> None:
    clock = Clock()
    shared = MemoryLimits(clock)
    one, two = LeasedAudio(shared, clock), LeasedAudio(shared, clock)
    for _ in range(10):  # 10 pushes of 0.04 s: one lease of 5 s (LEASE_S)
        assert await one.charge_audio("a", 0.04, 60.0) == 0.0
    assert await shared.charge_audio("a", 55.0, 60.0) == 0.0  # the shared minute holds that lease
    assert await shared.charge_audio("a", 0.01, 60.0) > 0
    assert await one.charge_audio("a", 4.5, 60.0) == 0.0  # from the rest of its lease
    assert await two.charge_audio("a", 0.04, 60.0) > 0  # nothing left to lease
    clock.now += 40  # next minute: leases start afresh
    assert await two.charge_audio("a", 25.0, 60.0) == 0.0  # and its next 5 s lease ahead
    assert await one.charge_audio("a", 30.0, 60.0) == 0.0
    assert await one.charge_audio("a", 0.5, 60.0) > 0


class Outage(MemoryLimits):
    """A shared ledger that can stop answering: at once (`down`) or never (`hang`)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.down = self.hang = False

    async def charge_audio(
        self, tenant: str, seconds: float, per_minute: float, owed: float = 0.0
    ) -> float:
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise StoreUnavailable("the shared store (Redis) did not answer within 0.5 s")
        return await super().charge_audio(tenant, seconds, per_minute, owed)


async def test_an_unreachable_store_grants_a_bounded_grace_and_is_charged_after() -> None:
    clock = Clock(1_000_000.0)  # a minute's start
    shared = Outage(clock)
    leases = LeasedAudio(shared, clock, grace_s=30.0)
    assert await leases.charge_audio("a", 1.0, 20.0) == 0.0  # leased 2 s (a tenth)
    shared.down = True
    for _ in range(9):  # 1 s from the lease, then 8 s on grace
        assert await leases.charge_audio("a", 1.0, 20.0) == 0.0
    assert await leases.charge_audio("a", 12.0, 20.0) > 0  # past the rate, by this process alone
    shared.down = False
    await leases.charge_audio("a", 0.5, 20.0)  # the store back: what was owed is counted first
    await asyncio.sleep(0)
    assert await shared.charge_audio("a", 0.0, 20.0) == 0.0
    assert shared._audio["a"][1] >= 2.0 + 8.0
    shared.down = True
    assert await leases.charge_audio("a", 2.0, 20.0) == 0.0  # the lease, and the next asked
    await asyncio.sleep(0)  # for in vain: a new outage, a new grace
    clock.now += 31  # the store gone longer than the grace: refused, but not as quota
    with pytest.raises(StoreUnavailable):
        await leases.charge_audio("a", 0.04, 20.0)


async def test_audio_on_grace_is_charged_even_when_no_push_follows() -> None:
    clock = Clock()
    shared = Outage(clock)
    shared.down = True
    leases = LeasedAudio(shared, clock)
    assert await leases.charge_audio("a", 3.0, 60.0) == 0.0  # on grace
    with pytest.raises(StoreUnavailable):
        await leases.settle()
    shared.down = False
    await leases.settle()  # as the heartbeat does once Redis answers
    assert await shared.charge_audio("a", 57.0, 60.0) == 0.0
    assert await shared.charge_audio("a", 0.1, 60.0) > 0


async def test_a_store_that_hangs_costs_a_push_at_most_the_wait() -> None:
    clock = Clock(1_000_000.0)
    shared = Outage(clock)
    leases = LeasedAudio(shared, clock)
    shared.hang = True
    started = time.monotonic()
    assert await leases.charge_audio("a", 0.04, 60.0) == 0.0  # on grace, after the wait
    assert await leases.charge_audio("a", 0.04, 60.0) == 0.0  # known down: no wait at all
    assert time.monotonic() - started < LeasedAudio.WAIT_S + 0.1
    for task in leases._refills.values():
        task.cancel()


async def test_failures_are_limited_per_address_within_a_minute(
    limits: tuple[LimitStore, Clock],
) -> None:
    store, clock = limits
    limiter = FailureLimiter(2, LeasedAudio(store, clock))  # as a gateway with Redis holds it
    await limiter.record("198.51.100.1")
    await limiter.check("198.51.100.1")
    await FailureLimiter(2, store).record("198.51.100.1")  # another process, the same store
    with pytest.raises(AuthFailure) as refused:
        await limiter.check("198.51.100.1")
    assert refused.value.status == 429 and refused.value.close_code == 4429
    assert refused.value.retry_after_s == pytest.approx(40.0)  # the minute's rest
    await limiter.check("198.51.100.2")
    clock.now += 40  # a new minute
    await limiter.check("198.51.100.1")


class Unreachable(MemoryLimits):
    """Ledgers in a store that does not answer."""

    async def failures(self, client: str) -> tuple[int, float]:
        raise StoreUnavailable("the shared store (Redis) did not answer within 0.5 s")

    async def count_failure(self, client: str) -> None:
        await self.failures(client)

    async def redeem(self, nonce: str, expires_at: float) -> bool:
        await self.failures(nonce)
        return True


async def test_failed_attempts_are_limited_in_the_process_while_the_store_is_down() -> None:
    limiter = FailureLimiter(2, Unreachable())
    await limiter.record("198.51.100.1")
    await limiter.check("198.51.100.1")
    await limiter.record("198.51.100.1")
    with pytest.raises(AuthFailure) as refused:
        await limiter.check("198.51.100.1")
    assert refused.value.status == 429
    await limiter.check("198.51.100.2")


async def test_a_ticket_is_refused_not_failed_while_the_store_is_down(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    key = cli("add", str(path), "acme").strip().rsplit(" ", 1)[1]
    gatekeeper = Gatekeeper(Settings(tenants_file=str(path)), Unreachable(), Audit(), Metrics())
    identity = await gatekeeper.authenticate(
        Caller("127.0.0.1", {"x-api-key": key}, {}), "tickets"
    )  # keys are still checked
    ticket, _ = gatekeeper.issue_ticket(identity)
    with pytest.raises(AuthFailure) as refused:
        await gatekeeper.authenticate(
            Caller("127.0.0.1", {}, {"ticket": ticket}), "websocket", tickets_ok=True
        )
    failure = refused.value
    assert (failure.status, failure.close_code, failure.code) == (503, 4503, "store_unavailable")
    assert "Redis" in str(failure) and failure.headers()["Retry-After"] == "1"


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
