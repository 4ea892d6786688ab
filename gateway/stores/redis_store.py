"""Session slots, audio ledgers, failed authentications and redeemed tickets in a Redis that
processes and hosts share.

A `SessionStore` and a `LimitStore`. Slots are members of sorted sets (all sessions, and one
set per tenant) scored by when they lapse; acquiring one is a Lua script, so the check of
`--max_sessions` and of the tenant's limit and the claim are one atomic step for every
gateway. A live session's slot and record (its counters, for `/sessions`) are renewed by
`heartbeat()` every second or so; a gateway that dies leaves slots that lapse within
`SLOT_TTL_S` instead of holding them forever. Counters are written at each heartbeat, so the
report lags them by up to that period.

While Redis cannot be reached the gateway keeps serving the sessions it has, and refuses what
it cannot count: a new session is told the server is busy, audio is refused with a retry hint,
a ticket is not accepted. Nothing is let through uncounted, except failed authentications:
every key is still checked, and an outage must not lock every client out.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import cast

import msgspec
import redis

from gateway.defaults import DEFAULT_TENANT
from gateway.stores.base import (
    MINUTE_S,
    SessionsReport,
    SessionStats,
    seconds_to_next_minute,
    tenant_full,
)

log = logging.getLogger(__name__)

SLOT_TTL_S = 10.0
UNREACHABLE_RETRY_S = 1.0
HEARTBEAT_S = 1.0
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
return 0
"""

_CHARGE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
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
    ) -> None:
        self.max_sessions = max_sessions
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._clock = clock
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._charge = self._redis.register_script(_CHARGE)
        self._mine: dict[str, SessionStats] = {}

    def close(self) -> None:
        self._redis.close()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # -- SessionStore ------------------------------------------------------------------------

    def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
    ) -> SessionStats | None:
        now = self._clock()
        keys = [self._key("live"), self._key("tenant", tenant)]
        limit = -1 if tenant_limit is None else tenant_limit
        try:
            outcome = self._acquire(
                keys=keys, args=[now, self.max_sessions, limit, session_id, now + SLOT_TTL_S]
            )
        except redis.RedisError as exc:
            log.error("Redis unreachable, no session admitted: %s", exc)
            return None
        if outcome == 1:
            return None
        if outcome == 2:
            raise tenant_full(limit)
        stats = SessionStats(
            session_id=session_id,
            started_at=now,
            sample_rate=sample_rate,
            tenant=tenant,
            worker_pid=os.getpid(),
        )
        self._mine[session_id] = stats
        self._publish([stats])  # its record, for /sessions, at once
        return stats

    def release(self, session_id: str) -> None:
        stats = self._mine.pop(session_id, None)
        if stats is None:
            return
        try:
            with self._redis.pipeline() as pipe:
                pipe.zrem(self._key("live"), session_id)
                pipe.zrem(self._key("tenant", stats.tenant), session_id)
                pipe.delete(self._key("session", session_id))
                pipe.execute()
        except redis.RedisError as exc:  # the slot lapses on its own
            log.error("Redis unreachable, slot left to lapse: %s", exc)

    def heartbeat(self) -> None:
        """Renew this process's slots and publish their counters (an unreachable Redis is
        logged: the next heartbeat tries again)."""
        if self._mine:
            self._publish(list(self._mine.values()))

    def _publish(self, sessions: list[SessionStats]) -> None:
        expiry = self._clock() + SLOT_TTL_S
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for stats in sessions:
                    pipe.zadd(self._key("live"), {stats.session_id: expiry}, xx=True)
                    pipe.zadd(
                        self._key("tenant", stats.tenant), {stats.session_id: expiry}, xx=True
                    )
                    record = msgspec.json.encode(stats)
                    pipe.set(self._key("session", stats.session_id), record, ex=int(SLOT_TTL_S))
                pipe.execute()
        except redis.RedisError as exc:
            log.error("Redis unreachable, sessions not renewed: %s", exc)

    def _live_ids(self, key: str) -> list[str]:
        members = cast(list[bytes], self._redis.zrangebyscore(key, self._clock(), "+inf"))
        return [member.decode() for member in members]

    def count(self, tenant: str | None = None) -> int:
        key = self._key("live") if tenant is None else self._key("tenant", tenant)
        return len(self._live_ids(key))

    def report(self) -> SessionsReport:
        ids = self._live_ids(self._key("live"))
        records = cast(
            list[bytes | None],
            self._redis.mget([self._key("session", i) for i in ids]) if ids else [],
        )
        sessions = [_stats_decoder.decode(record) for record in records if record is not None]
        return SessionsReport(len(sessions), self.max_sessions, sessions)

    # -- LimitStore --------------------------------------------------------------------------

    def charge_audio(self, tenant: str, seconds: float, per_minute: float) -> float:
        now = self._clock()
        key = self._key("audio", tenant, str(int(now // MINUTE_S)))
        try:
            if self._charge(keys=[key], args=[seconds, per_minute, MINUTE_KEY_TTL_S]):
                return 0.0
        except redis.RedisError as exc:
            log.error("Redis unreachable, audio refused: %s", exc)
            return UNREACHABLE_RETRY_S
        return seconds_to_next_minute(now)

    def failures(self, client: str) -> tuple[int, float]:
        now = self._clock()
        try:
            count = self._redis.get(self._failures_key(client, now))
        except redis.RedisError as exc:
            log.error("Redis unreachable, failed attempts not counted: %s", exc)
            count = None
        return int(cast("bytes", count) or 0), seconds_to_next_minute(now)

    def count_failure(self, client: str) -> None:
        key = self._failures_key(client, self._clock())
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, MINUTE_KEY_TTL_S)
            pipe.execute()
        except redis.RedisError as exc:
            log.error("Redis unreachable, failed attempt not counted: %s", exc)

    def _failures_key(self, client: str, now: float) -> str:
        return self._key("failures", client, str(int(now // MINUTE_S)))

    def redeem(self, nonce: str, expires_at: float) -> bool:
        left_ms = int((expires_at - self._clock()) * 1000)
        if left_ms <= 0:
            return False
        try:
            return bool(self._redis.set(self._key("ticket", nonce), 1, nx=True, px=left_ms))
        except redis.RedisError as exc:
            log.error("Redis unreachable, ticket refused: %s", exc)
            return False
