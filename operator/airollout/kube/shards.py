"""Shards of AIRollouts, each served by exactly one replica through a coordination.k8s.io/v1 Lease.

When one process is not enough, several replicas run with the same shard count. An AIRollout belongs to
shard hash(UID) mod N. Each replica renews a member Lease (so all know how many are alive), claims free or
expired shard Leases up to its fair share, and gives back shards above it; nothing but Kubernetes
coordinates them.

Safety: a replica acts on a shard only while its claim is fresh, up to two thirds of the lease duration
after its last successful renewal, while any other replica may take the shard over only once the Lease
has gone unrenewed for the whole duration. The third in between covers work already under way, so two
replicas never write FeatBit for the same rollout. A shard given back is first drained: the engine stops
its work and waits for every write under way before the Lease is released.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airollout.kube.apiserver import ApiServer, ApiServerError

_log = logging.getLogger(__name__)
SHARD_LABEL = "airollout.dev/shard"
MEMBER_LABEL = "airollout.dev/member"
_SAFE_SHARE = 2 / 3


def shard_of(uid: str, shards: int) -> int:
    """The shard an AIRollout belongs to: stable across processes and restarts."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % shards


class ShardLeases:
    """This replica's claims on shards, renewed in the background."""

    def __init__(
        self,
        api: ApiServer,
        *,
        namespace: str,
        identity: str,
        shards: int,
        duration: float,
        on_gain: Callable[[int], None],
        on_lose: Callable[[int], Awaitable[None]],
    ) -> None:
        self._api = api
        self._namespace = namespace
        self.identity = identity
        self._shards = shards
        self._duration = duration
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._fresh_until: dict[int, float] = {}

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(shard for shard in self._fresh_until if self.owns(shard))

    def owns(self, shard: int) -> bool:
        """Whether this replica may act on ``shard`` now."""
        return self._fresh_until.get(shard, 0.0) > time.monotonic()

    async def run(self) -> None:
        """Claim, renew and balance until cancelled; then give every shard back."""
        try:
            while True:
                try:
                    await self._round()
                except ApiServerError as error:
                    _log.warning("Renewing shard Leases failed, will retry: %s", error)
                await self._drop_stale()
                await asyncio.sleep(self._duration / 5)
        finally:
            await self._release_all()

    async def _round(self) -> None:
        started = time.monotonic()
        now = datetime.now(UTC)
        await self._renew_member(now)
        members = await self._api.list_leases(self._namespace, MEMBER_LABEL)
        alive = {_holder(m) for m in members if _holder(m) and not self._expired(m, now)} | {self.identity}
        target = math.ceil(self._shards / len(alive))
        leases = {
            int(lease["metadata"]["labels"][SHARD_LABEL]): lease
            for lease in await self._api.list_leases(self._namespace, SHARD_LABEL)
        }
        mine = sorted(s for s, lease in leases.items() if _holder(lease) == self.identity)
        for shard in mine[target:]:  # above the fair share: drain, then give back
            await self._give_back(shard, leases[shard])
        for shard in mine[:target]:
            await self._claim(shard, leases.get(shard), now, started)
        free = [s for s in range(self._shards) if s not in mine and self._claimable(leases.get(s), now)]
        for shard in free[: max(0, target - len(mine))]:
            await self._claim(shard, leases.get(shard), now, started)

    async def _claim(self, shard: int, lease: Mapping[str, Any] | None, now: datetime, started: float) -> None:
        spec = dict((lease or {}).get("spec") or {})
        taking = spec.get("holderIdentity") != self.identity
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=math.ceil(self._duration),
            renewTime=_micro(now),
        )
        if taking:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        body = _lease(self._namespace, f"airollout-shard-{shard}", {SHARD_LABEL: str(shard)}, spec, lease)
        try:
            await self._api.write_lease(body)
        except ApiServerError as error:
            if error.status in (409, 422):
                return  # another replica was first: it owns the shard
            raise
        was_owned = self.owns(shard)
        self._fresh_until[shard] = started + self._duration * _SAFE_SHARE
        if not was_owned:
            _log.info("Serving shard %d of %d as %s", shard, self._shards, self.identity)
            self._on_gain(shard)

    async def _give_back(self, shard: int, lease: Mapping[str, Any]) -> None:
        self._fresh_until.pop(shard, None)
        await self._on_lose(shard)
        spec = {**(lease.get("spec") or {}), "holderIdentity": ""}
        body = _lease(self._namespace, f"airollout-shard-{shard}", {SHARD_LABEL: str(shard)}, spec, lease)
        try:
            await self._api.write_lease(body)
            _log.info("Gave shard %d back (more replicas are serving now)", shard)
        except ApiServerError as error:
            _log.warning("Giving shard %d back failed; it expires by itself: %s", shard, error)

    async def _drop_stale(self) -> None:
        """Stop acting on shards whose claim could not be renewed in time (the apiserver is out of reach)."""
        for shard in [s for s in self._fresh_until if not self.owns(s)]:
            del self._fresh_until[shard]
            _log.warning("Lost shard %d: its Lease could not be renewed in time", shard)
            await self._on_lose(shard)

    async def _renew_member(self, now: datetime) -> None:
        name = f"airollout-member-{_dns_label(self.identity)}"
        lease = await self._api.get_lease(self._namespace, name)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": math.ceil(self._duration)}
        spec["renewTime"] = _micro(now)
        await self._api.write_lease(_lease(self._namespace, name, {MEMBER_LABEL: "true"}, spec, lease))

    async def _release_all(self) -> None:
        owned, self._fresh_until = list(self._fresh_until), {}
        for shard in owned:
            await self._on_lose(shard)
        try:
            leases = await self._api.list_leases(self._namespace, SHARD_LABEL)
            for lease in leases:
                if _holder(lease) == self.identity:
                    spec = {**(lease.get("spec") or {}), "holderIdentity": ""}
                    await self._api.write_lease({**lease, "spec": spec})
            await self._api.delete_lease(self._namespace, f"airollout-member-{_dns_label(self.identity)}")
        except ApiServerError as error:
            _log.warning("Releasing shard Leases failed; they expire by themselves: %s", error)

    def _expired(self, lease: Mapping[str, Any], now: datetime) -> bool:
        spec = lease.get("spec") or {}
        renewed = spec.get("renewTime")
        if not renewed:
            return True
        seconds = float(spec.get("leaseDurationSeconds") or self._duration)
        return _parse(str(renewed)) + timedelta(seconds=seconds) < now

    def _claimable(self, lease: Mapping[str, Any] | None, now: datetime) -> bool:
        return lease is None or not _holder(lease) or self._expired(lease, now)


def _holder(lease: Mapping[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _lease(
    namespace: str, name: str, labels: Mapping[str, str], spec: Mapping[str, Any], current: Mapping[str, Any] | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if current is not None:
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": dict(spec)}


def _micro(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _dns_label(identity: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in identity.lower()).strip("-")
    return cleaned[:40] + "-" + hashlib.sha256(identity.encode()).hexdigest()[:8]


__all__ = ["MEMBER_LABEL", "SHARD_LABEL", "ShardLeases", "shard_of"]
