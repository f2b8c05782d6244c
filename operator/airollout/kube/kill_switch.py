"""The kill-switch lane: the one code path that turns a candidate off.

The kill switch, the abort verb and every rollback go through here. The lane has its own FeatBit
connection pool, its own Secret reads and its own apiserver pool (in `Engine`), so nothing routine can
queue ahead of it; each attempt may take longer than a routine call, so a FeatBit that answers slowly
still acknowledges on the first try; and it retries until FeatBit acknowledges, however long that takes.
It needs nothing but `spec.flag` (key and environment) and `spec.featbit`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from airollout.featbit.errors import FeatBitError, FeatBitUnavailable, InvalidToken
from airollout.kube.connections import ConnectionCache, EndpointInvalid, SecretUnavailable
from airollout.model import FeatBitRef, KillSwitchTarget
from airollout.reconciler import FlagService

_log = logging.getLogger(__name__)
_FIRST_BACKOFF = 0.05
_MAX_ATTEMPTS_IN_FLIGHT = 4


class KillSwitchLane:
    """Turns flags off through a connection cache of its own, retrying until FeatBit acknowledges."""

    def __init__(
        self, connections: ConnectionCache, *, backoff_cap: float, slow_backoff_cap: float, hedge_after: float
    ) -> None:
        """``backoff_cap`` bounds the pause after a transient failure (FeatBit down, slow, 5xx);
        ``slow_backoff_cap`` after one a person must fix (a missing permission, Secret or flag);
        ``hedge_after`` is how long an unanswered attempt waits alone."""
        self.connections = connections
        self._backoff_cap = backoff_cap
        self._slow_backoff_cap = slow_backoff_cap
        self._hedge_after = hedge_after

    async def turn_off(
        self,
        namespace: str,
        target: KillSwitchTarget,
        comment: str,
        on_failure: Callable[[str], Awaitable[None]] | None = None,
    ) -> str:
        """Switch the flag off; return the revision FeatBit acknowledged. Cancel the task to give up.

        An attempt FeatBit leaves unanswered for ``hedge_after`` seconds gets another beside it (up to a
        few at once), so a FeatBit that comes back answers the kill switch at once rather than after the
        hung attempt's whole timeout. Whichever answers first wins; the others are cancelled.
        """
        attempt = 0
        maybe_unpublished = False
        pending: set[asyncio.Task[str]] = set()
        next_start = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_start and len(pending) < _MAX_ATTEMPTS_IN_FLIGHT:
                    attempt += 1
                    pending.add(asyncio.create_task(self._switch_off(namespace, target, comment)))
                    next_start = now + self._hedge_after
                if not pending:
                    await asyncio.sleep(max(0.0, next_start - now))
                    continue
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, next_start - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    error = task.exception()
                    if error is None:
                        revision = task.result()
                        if maybe_unpublished:
                            # An earlier attempt may have switched the flag off without FeatBit telling the
                            # SDKs: this one then found it off already. Publish the flag as stored.
                            client = await self.connections.featbit(namespace, target.featbit)
                            revision = await client.republish(target.flag.env_id, target.flag.key, comment=comment)
                        return revision
                    if not isinstance(error, FeatBitError | SecretUnavailable | EndpointInvalid):
                        raise error
                    if isinstance(error, InvalidToken):
                        self.connections.forget_token(namespace, target.featbit)
                    transient = isinstance(error, FeatBitUnavailable)
                    maybe_unpublished = maybe_unpublished or transient
                    cap = self._backoff_cap if transient else self._slow_backoff_cap
                    delay = min(cap, _FIRST_BACKOFF * 2 ** min(attempt, 16)) * (0.5 + random.random() / 2)
                    _log.warning(
                        "Kill switch for %s/%s not acknowledged (attempt %d), retrying in %.2fs: %s",
                        namespace,
                        target.flag.key,
                        attempt,
                        delay,
                        error,
                    )
                    next_start = min(next_start, time.monotonic() + delay) if pending else time.monotonic() + delay
                    if on_failure is not None:
                        await on_failure(str(error))
        finally:
            for task in pending:
                task.cancel()

    async def _switch_off(self, namespace: str, target: KillSwitchTarget, comment: str) -> str:
        client = await self.connections.featbit(namespace, target.featbit)
        return await client.toggle(target.flag.env_id, target.flag.key, False, comment=comment)

    async def flags(self, namespace: str, featbit: FeatBitRef) -> FlagService:
        """FeatBit for a rollback: reads and the targeting reset on the lane's pool, the toggle retried."""
        return _LaneFlags(self, namespace, featbit, await self.connections.featbit(namespace, featbit))


class _LaneFlags:
    """A `FlagService` whose switch-off is the lane's (retried until acknowledged); the rest is plain."""

    def __init__(self, lane: KillSwitchLane, namespace: str, featbit: FeatBitRef, client: FlagService) -> None:
        self._lane, self._namespace, self._featbit, self._client = lane, namespace, featbit, client

    async def get_flag(self, env_id: str, key: str) -> dict[str, Any]:
        return await self._client.get_flag(env_id, key)

    async def write_targeting(self, env_id: str, key: str, derive: Any, *, comment: str, force: bool = False) -> str:
        return await self._client.write_targeting(env_id, key, derive, comment=comment, force=force)

    async def toggle(self, env_id: str, key: str, enabled: bool, *, comment: str) -> str:
        if enabled:
            return await self._client.toggle(env_id, key, enabled, comment=comment)
        target = KillSwitchTarget.model_validate(
            {"flag": {"key": key, "envId": env_id}, "featbit": self._featbit.model_dump(by_alias=True)}
        )
        return await self._lane.turn_off(self._namespace, target, comment)

    async def resolve_segments(self, env_id: str, keys: Sequence[str]) -> dict[str, str]:
        return await self._client.resolve_segments(env_id, keys)

    async def audit_log(self, env_id: str, flag_id: str, *, page_size: int = 20) -> list[dict[str, Any]]:
        return await self._client.audit_log(env_id, flag_id, page_size=page_size)


__all__ = ["KillSwitchLane"]
