"""The connection core's questions to shared state, carried out for any driver.

The core (`gateway.session.connection`) asks for a slot (`AcquireSlot`), for an audio charge
(`ChargeAudio`) and frees slots (`ReleaseSlot`) as actions; a driver hands each to
`carry_out`, which awaits the store or the tenant's policy and feeds the answer back as the
core's event. The stores bound every wait (`gateway.stores.redis_store`), so a driver that
awaits this in its receive loop stalls one connection for at most that long, never the
process.
"""

from __future__ import annotations

import asyncio
import logging

from a2f_protocol.messages import ProtocolError
from gateway.session.connection import AcquireSlot, ChargeAudio, Connection, ReleaseSlot
from gateway.stores.base import QuotaExceeded, SessionStore, StoreUnavailable
from gateway.tenancy.quota import TenantPolicy, quota_error, store_error

log = logging.getLogger(__name__)

StoreAction = AcquireSlot | ChargeAudio | ReleaseSlot

_releasing: set[asyncio.Task[None]] = set()  # held until done: the loop keeps weak references


async def carry_out(
    action: StoreAction,
    connection: Connection,
    registry: SessionStore,
    policy: TenantPolicy | None = None,
) -> None:
    """Carry out one store action of `connection` and give it the answer."""
    match action:
        case AcquireSlot(session_id, sample_rate, tenant, tenant_limit, protocol):
            try:
                stats = await registry.acquire(
                    session_id, sample_rate, tenant, tenant_limit, protocol
                )
            except QuotaExceeded as exc:
                if policy is not None:
                    policy.refused("sessions")
                connection.slot_refused(quota_error(str(exc), exc.retry_after_s))
            except StoreUnavailable as exc:
                connection.slot_refused(store_error("No session started", exc))
            else:
                if stats is None:
                    connection.slot_refused(ProtocolError("Server busy (no free sessions)", "busy"))
                else:
                    connection.slot_granted(stats)
        case ChargeAudio(seconds):
            try:
                if policy is not None:
                    await policy.charge_audio(seconds)
            except ProtocolError as exc:
                connection.audio_refused(exc)
            else:
                connection.audio_granted()
        case ReleaseSlot(session_id):
            await release(registry, session_id)


async def release(registry: SessionStore, session_id: str) -> None:
    try:
        await registry.release(session_id)
    except StoreUnavailable as exc:  # the store frees it later (see its release)
        log.warning("slot of session %s not freed now: %s", session_id, exc)


def release_later(registry: SessionStore, session_id: str) -> None:
    """Free a slot from a connection that is gone: nobody waits for it."""
    task = asyncio.create_task(release(registry, session_id))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)
