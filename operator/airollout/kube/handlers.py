"""Kopf wiring, and nothing else: which Kubernetes happenings call which piece of AIRollout.

- A timer per AIRollout drives the reconciler every second; all progress lives in status, so a restarted
  operator picks up exactly where the last one stopped.
- An event handler is the kill switch's fast path: when spec.killSwitch turns true or the abort verb
  arrives, it switches the flag off in FeatBit at once, without waiting for the next tick. The timer then
  records the rollback (targeting reset, status, events), as it does for any other decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes

from airollout.featbit.errors import FeatBitError
from airollout.kube import metrics
from airollout.kube.connections import ConnectionCache, SecretUnavailable
from airollout.model import GROUP, PLURAL, VERSION, Phase
from airollout.planner import ACTION_ANNOTATION, Verb
from airollout.reasons import WARNING_REASONS, Reason
from airollout.reconciler import Connections, Rollout, parse_spec, reconcile

TICK_SECONDS = 1.0
STALE_BODY_GRACE_SECONDS = 10.0
FINALIZER = f"{GROUP}/finalizer"

_log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own names for Kopf's bookkeeping, chosen once: changing them later would re-handle every object.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    memo.connections = ConnectionCache()
    memo.locks = {}


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.connections.aclose()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def kill_switch_fast_path(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    """Switch the candidate off the moment the kill switch or the abort verb is seen."""
    asked = spec.get("killSwitch") is True or (meta.get("annotations") or {}).get(ACTION_ANNOTATION) == Verb.ABORT
    if not asked or status.get("phase") == Phase.ROLLED_BACK or body.get("metadata", {}).get("deletionTimestamp"):
        return
    marker = (meta.get("uid"), meta.get("generation"), (meta.get("annotations") or {}).get(ACTION_ANNOTATION))
    if memo.get("kill_switch_done") == marker:
        return
    parsed, _invalid = parse_spec(spec)
    if parsed is None:
        return
    seen_at = time.monotonic()
    async with _lock(memo, meta):
        try:
            flags = await memo.connections.featbit(meta["namespace"], parsed)
            await flags.toggle(
                parsed.flag.env_id,
                parsed.flag.key,
                False,
                comment=f"AIRollout {meta['namespace']}/{meta['name']} kill switch: candidate off",
            )
        except (FeatBitError, SecretUnavailable) as error:
            # Not dropped: the timer retries the whole rollback every tick until FeatBit acknowledges.
            _log.warning("Kill switch for %s/%s not acknowledged yet: %s", meta["namespace"], meta["name"], error)
            return
    metrics.KILL_SWITCH_SECONDS.observe(time.monotonic() - seen_at)
    memo.kill_switch_done = marker


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS)
async def drive(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """One reconciliation: plan from status, act on FeatBit, then write status and events once."""
    if body.get("metadata", {}).get("deletionTimestamp") or _own_patch_not_seen_yet(memo, meta):
        return
    annotations = meta.get("annotations") or {}
    verb = annotations.get(ACTION_ANNOTATION)
    rollout = Rollout(
        namespace=meta["namespace"],
        name=meta["name"],
        generation=int(meta.get("generation") or 0),
        spec=body.get("spec") or {},
        status=body.get("status") or {},
        verb=verb,
        actor=_actor_of_verb(meta) if verb is not None else "operator",
    )
    spec, _invalid = parse_spec(rollout.spec)
    connections = Connections(flags=None)
    if spec is not None:
        connections = await memo.connections.connections(rollout.namespace, spec)
    started = time.monotonic()
    decision = await reconcile(rollout, connections, datetime.now(UTC), featbit_turn=_lock(memo, meta))
    metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    metrics.record(rollout.namespace, rollout.name, decision.status, [e.reason for e in decision.entries])
    new_status = decision.status.to_k8s()
    if {k: v for k, v in new_status.items() if v is not None} != dict(rollout.status):
        patch.status.update(new_status)
        memo.patched_from = (meta.get("resourceVersion"), time.monotonic())
    if decision.consume_verb:
        patch.metadata.annotations[ACTION_ANNOTATION] = None
    if spec is not None and any(e.reason == Reason.INVALID_TOKEN for e in decision.entries):
        memo.connections.forget_token(rollout.namespace, spec)
    for entry in decision.entries:
        kopf.event(
            body,
            type="Warning" if entry.reason in WARNING_REASONS else "Normal",
            reason=entry.reason,
            message=_one_line(entry.message),
        )


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """A deleted rollout leaves its flag as it is (documented); only the operator's memory of it goes."""
    metrics.forget(meta["namespace"], meta["name"])
    memo.locks.pop(str(meta.get("uid")), None)


def _own_patch_not_seen_yet(memo: kopf.Memo, meta: kopf.Meta) -> bool:
    """Whether this tick would plan from a body older than the status the last tick wrote.

    Kopf applies a timer's patch after the tick, and the patched object comes back on the watch a moment
    later; planning from the older body would decide the same transition twice. A patch that never shows up
    (it failed) stops holding the rollout back after a few seconds.
    """
    patched_from = memo.get("patched_from")
    if patched_from is None:
        return False
    resource_version, at = patched_from
    if meta.get("resourceVersion") == resource_version and time.monotonic() - at < STALE_BODY_GRACE_SECONDS:
        return True
    memo.patched_from = None
    return False


def _lock(memo: kopf.Memo, meta: kopf.Meta) -> asyncio.Lock:
    """One FeatBit writer per AIRollout at a time: the fast path and the timer never interleave writes."""
    locks: dict[str, asyncio.Lock] = memo.locks
    return locks.setdefault(str(meta.get("uid")), asyncio.Lock())


def _actor_of_verb(meta: kopf.Meta) -> str:
    """Who set the action annotation, as Kubernetes recorded it (the field manager, e.g. kubectl-annotate)."""
    for entry in meta.get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{ACTION_ANNOTATION}" in annotations:
            return str(entry.get("manager") or "unknown")
    return "unknown"


def _one_line(message: str) -> str:
    # Newlines break `kubectl describe`'s event table.
    return " ".join(message.split())[:1000]


__all__ = ["FINALIZER", "TICK_SECONDS", "close", "configure", "drive", "forget", "kill_switch_fast_path"]
