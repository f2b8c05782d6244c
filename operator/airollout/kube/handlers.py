"""Kopf wiring, and nothing else: Kopf watches AIRollouts and hands every change to the engine.

No timer per object and no change-detecting handlers: Kopf keeps no bookkeeping annotations on the
objects, and the engine alone decides when a rollout needs work (`airollout.kube.engine`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import kopf

from airollout.kube import metrics
from airollout.kube.alerts import AlertReceiver
from airollout.kube.apiserver import ApiServer
from airollout.kube.connections import ClientOptions, ConnectionCache
from airollout.kube.engine import Engine
from airollout.kube.notifications import Notifier
from airollout.kube.shards import ShardLeases
from airollout.model import GROUP, PLURAL, VERSION, SecretKeyRef
from airollout.settings import Settings

_log = logging.getLogger(__name__)

# Kill-switch requests are few: a small pool, but one no routine call can occupy.
_KILL_SWITCH_APISERVER_CONNECTIONS = 4


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    tunables: Settings = memo.get("settings") or Settings()
    routine_api = ApiServer.from_environment(connections=tunables.apiserver_connections)
    urgent_api = ApiServer.from_environment(connections=_KILL_SWITCH_APISERVER_CONNECTIONS)
    routine = ConnectionCache(
        routine_api,
        ClientOptions(tunables.featbit_connections, tunables.featbit_timeout, max_attempts=3),
        secret_ttl=tunables.secret_ttl,
        prometheus_concurrency=tunables.prometheus_concurrency,
    )
    urgent = ConnectionCache(
        urgent_api,
        ClientOptions(tunables.kill_switch_connections, tunables.kill_switch_timeout, max_attempts=1),
        secret_ttl=tunables.secret_ttl,
    )
    engine = Engine(tunables, routine=routine, urgent=urgent, routine_api=routine_api, urgent_api=urgent_api)
    metrics.SCHEDULER_DEPTH.set_function(lambda: engine.scheduler.depth)
    memo.engine = engine
    memo.closables = (routine, urgent, routine_api, urgent_api)
    memo.tasks = [asyncio.create_task(engine.run())]
    # Notifications on the routine pools: a slow receiver or Secret read never touches the kill-switch lane.
    engine.notifier = Notifier(tunables, routine_api, routine.secret, engine.record_delivery)
    memo.tasks.append(asyncio.create_task(engine.notifier.run()))
    memo.receiver = None
    if tunables.alertmanager_port:
        token = None
        if tunables.alertmanager_token_secret:
            namespace, name = tunables.alertmanager_token_secret.split("/", 1)
            ref = SecretKeyRef(name=name, key="token")

            async def token() -> str | None:
                return await routine.secret(namespace, ref, "--alertmanager-token-secret")

        memo.receiver = AlertReceiver(routine_api, engine.bodies, token)
        await memo.receiver.start(tunables.alertmanager_port)
    if tunables.shards:
        engine.shards = ShardLeases(
            urgent_api,  # renewals must not queue behind routine writes, or a busy replica loses its shards
            namespace=tunables.lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
            identity=tunables.identity or f"{socket.gethostname()}-{os.getpid()}",
            shards=tunables.shards,
            duration=tunables.lease_duration,
            on_gain=engine.gain,
            on_lose=engine.lose,
        )
        memo.tasks.append(asyncio.create_task(engine.shards.run()))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the work first, then close the clients it uses (never the other way round)."""
    if memo.receiver is not None:
        await memo.receiver.stop()
    tasks: list[asyncio.Task[None]] = memo.tasks
    for task in reversed(tasks):  # the shards first: they drain their work and hand their Leases back
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await memo.engine.stop()
    for closable in memo.closables:
        await closable.aclose()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def observe(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every change to an AIRollout, the initial listing included, goes to the engine."""
    engine: Engine = memo.engine
    engine.observe(event.get("type"), event["object"])


__all__ = ["observe", "start", "stop"]
