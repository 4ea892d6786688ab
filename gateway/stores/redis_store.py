"""Session slots, audio ledgers, failed authentications and redeemed tickets in a Redis that
processes and hosts share.

A `SessionStore` and a `LimitStore`, over `redis.asyncio`. Slots are members of sorted sets
(all sessions, and one set per tenant) scored by when they lapse; acquiring one is a Lua
script, so the check of `--max_sessions` and of the tenant's limit and the claim are one
atomic step for every gateway. A live session's slot and record (its counters, for
`/sessions`) are renewed by `heartbeat()` every second or so, and written again if Redis
lost them (a restart without persistence): a gateway that dies leaves slots that lapse within
`SLOT_TTL_S` instead of holding them forever, and one that lives keeps its sessions counted.
Counters are written at each heartbeat, so the report lags them by up to that period.

Every command has a deadline (`DEADLINE_S`); a Redis that misses it, or cannot be reached,
raises `StoreUnavailable` and is not asked again for `STORE_RETRY_S` (calls fail at once
meanwhile, so a pause costs each caller nothing after the first), except by the heartbeat,
which is also the probe that finds it back. What the callers make of an outage is theirs to
say (`gateway.tenancy`): nothing here answers "refused" for "unreachable". A slot whose
release did not reach Redis is released again at the next heartbeat.

`--redis_url` goes to `redis.asyncio.Redis.from_url` as it is: `rediss://` (TLS),
`redis://:password@host` or `redis://user:password@host` work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.defaults import DEFAULT_TENANT
from gateway.metrics import WEBSOCKET
from gateway.stores.base import (
    MINUTE_S,
    STORE_RETRY_S,
    SessionsReport,
    SessionStats,
    StoreState,
    StoreUnavailable,
    seconds_to_next_minute,
    tenant_full,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SLOT_TTL_S = 10.0
HEARTBEAT_S = 1.0
# One round trip on a healthy LAN is well under a millisecond: a command this late means a
# stalled or overloaded Redis, and waiting longer would only hold up whoever asked.
DEADLINE_S = 0.5
MINUTE_KEY_TTL_S = 2 * int(MINUTE_S)  # a per-minute ledger outlives its minute

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
local limit = tonumber(ARGV[3])
if limit >= 0 and redis.call('ZCARD', KEYS[2]) >= limit then return 2 end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
return 0
"""

_CHARGE = """
local owed = tonumber(ARGV[4])
if owed > 0 then redis.call('INCRBYFLOAT', KEYS[1], owed) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
return 1
"""

_stats_decoder = msgspec.json.Decoder(SessionStats)


class RedisStore:
    """Slots, ledgers and tickets under `prefix` in the Redis at `url`."""

    def __init__(
        self,
        url: str,
        max_sessions: int,
        prefix: str = "a2f",
        clock: Callable[[], float] = time.time,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        self.max_sessions = max_sessions
        self.deadline_s = deadline_s
        # No retries inside redis-py: the deadline is the caller's whole wait.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=deadline_s,
            socket_connect_timeout=deadline_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._prefix = prefix
        self._clock = clock
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._charge = self._redis.register_script(_CHARGE)
        self._mine: dict[str, SessionStats] = {}
        self._unreleased: dict[str, str] = {}  # session id -> tenant, to remove again
        self.down_since: float | None = None  # monotonic time of the failure that began it
        self._tried = 0.0  # monotonic time of the latest attempt while down
        self._probing = False

    async def close(self) -> None:
        await self._redis.aclose()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # -- reaching Redis ----------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def unreachable_for_s(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def state(self) -> StoreState:
        return StoreState("redis", self.reachable, round(self.unreachable_for_s(), 1))

    async def _call(self, command: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """`command`'s result within the deadline, or `StoreUnavailable`. While Redis is down
        only one call in `STORE_RETRY_S` (or a `probe`) tries it; the others fail at once."""
        now = time.monotonic()
        down = self.down_since is not None
        if down and not probe and (self._probing or now - self._tried < STORE_RETRY_S):
            raise StoreUnavailable(
                f"the shared store (Redis) is unreachable (for {self.unreachable_for_s():.1f} s)"
            )
        self._tried = now
        if down:
            self._probing = True
        try:
            async with asyncio.timeout(self.deadline_s):
                result = await command()
        except (RedisError, OSError, TimeoutError) as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.error(
                    "Redis unreachable: %s", str(exc) or f"no answer in {self.deadline_s:g} s"
                )
            raise StoreUnavailable(
                f"the shared store (Redis) did not answer within {self.deadline_s:g} s"
            ) from exc
        finally:
            if down:
                self._probing = False
        if self.down_since is not None:
            log.warning("Redis reachable again after %.1f s", self.unreachable_for_s())
            self.down_since = None
        return result

    # -- SessionStore ------------------------------------------------------------------------

    async def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
        protocol: str = WEBSOCKET,
    ) -> SessionStats | None:
        now = self._clock()
        stats = SessionStats(
            session_id=session_id,
            started_at=now,
            sample_rate=sample_rate,
            tenant=tenant,
            worker_pid=os.getpid(),
            protocol=protocol,
        )
        keys = [self._key("live"), self._key("tenant", tenant), self._key("session", session_id)]
        limit = -1 if tenant_limit is None else tenant_limit
        args: list[bytes | str | float] = [
            now, self.max_sessions, limit, session_id, now + SLOT_TTL_S,
            msgspec.json.encode(stats), int(SLOT_TTL_S),
        ]  # fmt: skip
        outcome = await self._call(lambda: self._acquire(keys=keys, args=args))
        if outcome == 1:
            return None
        if outcome == 2:
            raise tenant_full(limit)
        self._mine[session_id] = stats
        return stats

    async def release(self, session_id: str) -> None:
        stats = self._mine.pop(session_id, None)
        if stats is None:
            return
        self._unreleased[session_id] = stats.tenant
        await self._call(lambda: self._remove({session_id: stats.tenant}))
        self._unreleased.pop(session_id, None)

    async def _remove(self, sessions: dict[str, str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, tenant in sessions.items():
                pipe.zrem(self._key("live"), session_id)
                pipe.zrem(self._key("tenant", tenant), session_id)
                pipe.delete(self._key("session", session_id))
            await pipe.execute()

    async def heartbeat(self) -> None:
        """Renew this process's slots (claiming them again if Redis lost them), publish their
        counters and remove the slots whose release did not reach Redis; `StoreUnavailable`
        when Redis does not answer (the next heartbeat tries again)."""
        sessions = list(self._mine.values())
        unreleased = dict(self._unreleased)
        await self._call(lambda: self._publish(sessions, unreleased), probe=True)
        for session_id in unreleased:
            self._unreleased.pop(session_id, None)
        # A session released while this was on its way was written back: remove it again.
        gone = {s.session_id: s.tenant for s in sessions if s.session_id not in self._mine}
        if gone:
            await self._call(lambda: self._remove(gone), probe=True)

    async def _publish(self, sessions: list[SessionStats], unreleased: dict[str, str]) -> None:
        expiry = self._clock() + SLOT_TTL_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for stats in sessions:
                pipe.zadd(self._key("live"), {stats.session_id: expiry})
                pipe.zadd(self._key("tenant", stats.tenant), {stats.session_id: expiry})
                record = msgspec.json.encode(stats)
                pipe.set(self._key("session", stats.session_id), record, ex=int(SLOT_TTL_S))
            for session_id, tenant in unreleased.items():
                pipe.zrem(self._key("live"), session_id)
                pipe.zrem(self._key("tenant", tenant), session_id)
                pipe.delete(self._key("session", session_id))
            await pipe.execute()

    async def count(self, tenant: str | None = None) -> int:
        key = self._key("live") if tenant is None else self._key("tenant", tenant)
        live = await self._call(lambda: self._redis.zcount(key, self._clock(), "+inf"))
        return int(live)

    async def report(self) -> SessionsReport:
        return await self._call(self._report)

    async def _report(self) -> SessionsReport:
        members = await self._redis.zrangebyscore(self._key("live"), self._clock(), "+inf")
        ids = [member.decode() for member in cast(list[bytes], members)]
        records = cast(
            list[bytes | None],
            await self._redis.mget([self._key("session", i) for i in ids]) if ids else [],
        )
        sessions = [_stats_decoder.decode(record) for record in records if record is not None]
        return SessionsReport(len(sessions), self.max_sessions, sessions)

    # -- LimitStore --------------------------------------------------------------------------

    async def charge_audio(
        self, tenant: str, seconds: float, per_minute: float, owed: float = 0.0
    ) -> float:
        now = self._clock()
        keys = [self._key("audio", tenant, str(int(now // MINUTE_S)))]
        args = [seconds, per_minute, MINUTE_KEY_TTL_S, owed]
        if await self._call(lambda: self._charge(keys=keys, args=args)):
            return 0.0
        return seconds_to_next_minute(now)

    async def failures(self, client: str) -> tuple[int, float]:
        now = self._clock()
        key = self._failures_key(client, now)
        count = await self._call(lambda: self._redis.get(key))
        return int(cast("bytes | None", count) or 0), seconds_to_next_minute(now)

    async def count_failure(self, client: str) -> None:
        key = self._failures_key(client, self._clock())

        async def count() -> None:
            async with self._redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, MINUTE_KEY_TTL_S)
                await pipe.execute()

        await self._call(count)

    def _failures_key(self, client: str, now: float) -> str:
        return self._key("failures", client, str(int(now // MINUTE_S)))

    async def redeem(self, nonce: str, expires_at: float) -> bool:
        left_ms = int((expires_at - self._clock()) * 1000)
        if left_ms <= 0:
            return False
        key = self._key("ticket", nonce)
        return bool(await self._call(lambda: self._redis.set(key, 1, nx=True, px=left_ms)))
