"""An Alertmanager receiver: an alert a team already has (a quality score drifting down) stops a release.

Alertmanager posts its webhook payload (version 4) to ``POST /alertmanager`` on ``--alertmanager-port``. Each
firing alert whose labels name an AIRollout pauses or aborts it, as the rollout's ``spec.alerts.onFiring``
says; a resolved alert does nothing (resuming stays a person's decision). The labels that name a rollout:

- ``airollout_namespace`` and ``airollout_name``, or ``namespace`` and ``rollout``: that AIRollout;
- ``airollout_flag`` or ``flag_key``: every AIRollout of that flag key (in ``namespace`` /
  ``airollout_namespace`` if the alert has one).

The verb goes through the annotation contract, exactly as ``kubectl annotate airollout NAME
airollout.dev/action=pause`` would, written by the field manager ``alertmanager:<alertname>``: that is the
actor history records, and the alert's summary is the verb's reason. A rollout that is not in a phase the
verb applies to is left alone, so Alertmanager's repeated notifications of one alert never pile up
rejections. With ``--alertmanager-token-secret`` the caller must send that Secret's ``token`` as a bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from airollout.kube.apiserver import ApiServer, ApiServerError
from airollout.model import AlertAction, Phase
from airollout.planner import ACTION_ANNOTATION, ACTION_REASON_ANNOTATION, Verb

__all__ = ["PATH", "AlertReceiver", "Match", "matches"]

_log = logging.getLogger(__name__)
PATH = "/alertmanager"
_MANAGER_LIMIT = 128
_REASON_LIMIT = 256
# A field manager is a name Kubernetes shows back: keep to characters no one misreads.
_UNSAFE = re.compile(r"[^A-Za-z0-9:._-]+")
_APPLIES = {
    AlertAction.PAUSE: frozenset({Phase.PROGRESSING}),
    AlertAction.ABORT: frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED}),
}

TokenReader = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Match:
    """A rollout a firing alert names, and what it asks of it."""

    namespace: str
    name: str
    action: AlertAction
    phase: str


def matches(labels: Mapping[str, str], rollouts: Iterable[Mapping[str, Any]]) -> list[Match]:
    """The rollouts among ``rollouts`` (AIRollout bodies) that the alert's ``labels`` name."""
    namespace = labels.get("airollout_namespace") or labels.get("namespace")
    name = labels.get("airollout_name") or (labels.get("rollout") if labels.get("namespace") else None)
    flag = labels.get("airollout_flag") or labels.get("flag_key")
    if not name and not flag:
        return []
    found = []
    for body in rollouts:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if name and (meta.get("namespace"), meta.get("name")) != (namespace, name):
            continue
        if not name and (
            (spec.get("flag") or {}).get("key") != flag or (namespace and meta.get("namespace") != namespace)
        ):
            continue
        raw = (spec.get("alerts") or {}).get("onFiring") or AlertAction.PAUSE
        action = AlertAction(raw) if raw in tuple(AlertAction) else AlertAction.PAUSE
        phase = str((body.get("status") or {}).get("phase") or Phase.PENDING)
        found.append(Match(str(meta.get("namespace")), str(meta.get("name")), action, phase))
    return found


class AlertReceiver:
    """The ``/alertmanager`` endpoint: turns firing alerts into verbs on the rollouts they name."""

    def __init__(
        self, api: ApiServer, rollouts: Callable[[], Iterable[Mapping[str, Any]]], token: TokenReader | None = None
    ) -> None:
        self._api = api
        self._rollouts = rollouts
        self._token = token
        self._runner: web.AppRunner | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(PATH, self.receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        refusal = await self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            payload = json.loads(await request.read())
            alerts = payload["alerts"]
            if not isinstance(alerts, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _answer(400, error="expected Alertmanager's webhook payload: JSON with a list under 'alerts'")
        acted: list[dict[str, str]] = []
        for alert in alerts:
            if not isinstance(alert, Mapping) or alert.get("status") != "firing":
                continue  # resolved: resuming is a person's decision
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            annotations = alert.get("annotations") or {}
            alertname = labels.get("alertname") or "alert"
            manager = _UNSAFE.sub("-", f"alertmanager:{alertname}")[:_MANAGER_LIMIT]
            why = str(annotations.get("summary") or annotations.get("description") or f"alert {alertname} firing")
            for match in matches(labels, self._rollouts()):
                outcome = await self._act(match, manager, " ".join(why.split())[:_REASON_LIMIT])
                acted.append({"rollout": f"{match.namespace}/{match.name}", "action": match.action.value, **outcome})
        return _answer(200, rollouts=acted)

    async def _act(self, match: Match, manager: str, why: str) -> dict[str, str]:
        if match.phase not in _APPLIES[match.action]:
            return {"result": f"skipped: the rollout is {match.phase}"}
        verb = Verb.ABORT if match.action is AlertAction.ABORT else Verb.PAUSE
        annotations = {ACTION_ANNOTATION: verb.value, ACTION_REASON_ANNOTATION: why}
        try:
            await self._api.annotate(match.namespace, match.name, annotations, manager=manager)
        except ApiServerError as error:
            _log.warning("Alertmanager: %s of %s/%s failed: %s", verb, match.namespace, match.name, error)
            return {"result": f"failed: HTTP {error.status}"}
        _log.info("Alertmanager: %s of %s/%s asked by %s", verb, match.namespace, match.name, manager)
        return {"result": "requested"}

    async def _refusal(self, request: web.Request) -> web.Response | None:
        if self._token is None:
            return None
        try:
            expected = await self._token()
        except Exception as error:  # the reader names the Secret and the fix
            return _answer(503, error=f"the receiver's token cannot be read: {error}")
        given = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return _answer(401, error="send the token of --alertmanager-token-secret as a bearer token")
        return None


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)
