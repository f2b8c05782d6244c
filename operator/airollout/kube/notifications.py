"""Notifications: the decisions people want to hear about, posted to JSON webhooks and Slack incoming webhooks.

A rollout lists its targets in ``spec.notifications`` (a URL in a Secret, and which reasons); the operator may
add cluster-wide ones (``--notifications-secret``). Delivery is wholly apart from the rollout: the engine hands
a decision over with `Notifier.submit`, which only queues it (bounded, the oldest dropped when full) and
returns; workers of their own deliver, each attempt with a timeout, retried with a doubling pause a limited
number of times. A receiver that hangs or fails holds one of those workers, never a rollout or the kill switch.
How delivery went comes back through ``on_outcome``, which the engine turns into the condition
NotificationsDelivered and an Event.

URLs are credentials (a Slack webhook URL is its own secret), so no URL ever reaches a log, a status or an
Event: targets are named by the Secret and key they come from, and errors by their kind and HTTP status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from pydantic import TypeAdapter, ValidationError

from airollout.kube.apiserver import COMPONENT, ApiServer, ApiServerError
from airollout.model import Notification, NotificationType, NotifiedEvent, SecretKeyRef
from airollout.reasons import WARNING_REASONS
from airollout.settings import Settings

__all__ = ["NOTIFIED", "Notice", "Notifier", "notification_targets"]

_log = logging.getLogger(__name__)
_FIRST_BACKOFF = 0.25
_SLACK_PREFIX = "slack"
NOTIFIED = frozenset(e.value for e in NotifiedEvent)
"""The reasons a notification is sent for; every other history entry stays in status and Events only."""

_TARGETS = TypeAdapter(tuple[Notification, ...])

SecretReader = Callable[[str, SecretKeyRef, str], Awaitable[str]]
Outcome = Callable[[str, str | None], Awaitable[None]]
"""``(uid, failure)``: None after a delivery, else what failed (naming no URL)."""


@dataclass(frozen=True)
class Notice:
    """One decision of one rollout, as it is posted."""

    uid: str
    namespace: str
    name: str
    reason: str
    message: str
    time: datetime
    phase: str
    stage: str | None
    percentage: float | None
    flag: str | None
    targets: tuple[Notification, ...] = ()
    """The rollout's own targets (spec.notifications); cluster-wide ones are added at delivery."""


@dataclass(frozen=True)
class _Target:
    kind: NotificationType
    url: str
    origin: str
    """Where the URL came from (a Secret and key): what messages name instead of the URL."""


class _Undeliverable(Exception):
    """A failure another attempt cannot fix (a 4xx answer, a missing Secret)."""


class Notifier:
    """A bounded queue of notices and the workers that deliver them."""

    def __init__(self, settings: Settings, api: ApiServer, read_secret: SecretReader, on_outcome: Outcome) -> None:
        self._settings = settings
        self._api = api
        self._read_secret = read_secret
        self._on_outcome = on_outcome
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=settings.notification_queue)
        self._session: aiohttp.ClientSession | None = None
        self._turns: dict[str, asyncio.Lock] = {}
        self._failing: set[str] = set()
        self._cluster: tuple[float, tuple[_Target, ...]] | None = None
        self._recording: set[asyncio.Future[None]] = set()
        """Outcomes being written to status; kept here, or the event loop could drop the task half-way."""

    def submit(self, notice: Notice) -> None:
        """Queue ``notice`` and return at once; when the queue is full the oldest notice is dropped."""
        if not notice.targets and not self._settings.notifications_secret:
            return
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            self._report(
                dropped.uid, f"the {dropped.reason} notification was dropped: {self._queue.maxsize} were waiting"
            )
        self._queue.put_nowait(notice)

    def forget(self, uid: str) -> None:
        """A deleted rollout: its ordering lock and failure record go (a notice still queued is delivered)."""
        self._failing.discard(uid)
        turn = self._turns.get(uid)
        if turn is not None and not turn.locked():
            del self._turns[uid]

    async def drained(self) -> None:
        """Return once every notice submitted so far was delivered or given up."""
        await self._queue.join()

    async def run(self) -> None:
        """Deliver until cancelled."""
        workers = [asyncio.create_task(self._work()) for _ in range(self._settings.notification_workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._session is not None:
                await self._session.close()

    async def _work(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                # One rollout's notices go out in the order they were decided (locks wake waiters in order).
                async with self._turns.setdefault(notice.uid, asyncio.Lock()):
                    failure = await self._deliver_all(notice)
                self._report(notice.uid, failure)
            except Exception:  # a worker that dies would silently stop every later notification
                _log.exception(
                    "Delivering the %s notification of %s/%s failed", notice.reason, notice.namespace, notice.name
                )
            finally:
                self._queue.task_done()

    def _report(self, uid: str, failure: str | None) -> None:
        if failure is None and uid not in self._failing:
            return  # nothing to say: deliveries are the normal case, worth no status write
        if failure is None:
            self._failing.discard(uid)
        else:
            self._failing.add(uid)
        task = asyncio.ensure_future(self._on_outcome(uid, failure))
        self._recording.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Future[None]) -> None:
        self._recording.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("Recording a notification outcome failed: %s", task.exception())

    async def _deliver_all(self, notice: Notice) -> str | None:
        targets: list[_Target] = []
        failures: list[str] = []
        for index, notification in enumerate(notice.targets):
            if notification.events and notice.reason not in notification.events:
                continue
            ref = notification.url_secret_ref
            origin = f"Secret {notice.namespace}/{ref.name} key {ref.key}"
            try:
                url = await self._read_secret(notice.namespace, ref, f"spec.notifications[{index}].urlSecretRef")
            except Exception as error:  # the reader's message names the Secret and the fix, never a value
                failures.append(f"{notification.type.value} notification from {origin}: {error}")
                continue
            targets.append(_Target(notification.type, url, origin))
        try:
            targets.extend(await self._cluster_targets())
        except _Undeliverable as error:
            failures.append(str(error))
        results = await asyncio.gather(*(self._deliver(target, notice) for target in targets))
        failures.extend(r for r in results if r is not None)
        return "; ".join(failures) if failures else None

    async def _deliver(self, target: _Target, notice: Notice) -> str | None:
        """Post to one target, retrying transient failures; None when delivered, else why not."""
        settings = self._settings
        body = _slack_body(notice) if target.kind is NotificationType.SLACK else _webhook_body(notice)
        what = f"{target.kind.value} notification of {notice.reason} to the URL in {target.origin}"
        error = ""
        for attempt in range(1, settings.notification_attempts + 1):
            try:
                await self._post(target.url, body)
                return None
            except _Undeliverable as refused:
                return f"{what} failed: {refused}"
            except _Transient as transient:
                error = str(transient)
            _log.warning("%s failed (attempt %d of %d): %s", what, attempt, settings.notification_attempts, error)
            if attempt < settings.notification_attempts:
                await asyncio.sleep(min(settings.notification_backoff_cap, _FIRST_BACKOFF * 2 ** (attempt - 1)))
        return f"{what} failed after {settings.notification_attempts} attempts: {error}"

    async def _post(self, url: str, body: Mapping[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": COMPONENT})
        timeout = self._settings.notification_timeout
        try:
            async with self._session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                status = response.status
        except TimeoutError:
            raise _Transient(f"no answer within {timeout:g}s (--notification-timeout)") from None
        except aiohttp.InvalidURL:
            raise _Undeliverable("the URL is not a valid http(s) URL") from None
        except aiohttp.ClientConnectorError as error:
            raise _Transient(f"cannot connect: {error.os_error.strerror or type(error.os_error).__name__}") from None
        except aiohttp.ClientError as error:
            # The class names the failure; its text may quote the URL, which is a credential.
            raise _Transient(type(error).__name__) from None
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}")
        if status >= 400:
            raise _Undeliverable(f"HTTP {status} (the receiver refused it; check the URL in the Secret)")

    async def _cluster_targets(self) -> tuple[_Target, ...]:
        where = self._settings.notifications_secret
        if not where:
            return ()
        if self._cluster is not None and time.monotonic() - self._cluster[0] < self._settings.secret_ttl:
            return self._cluster[1]
        namespace, name = where.split("/", 1)
        try:
            data = await self._api.read_secret(namespace, name)
        except ApiServerError as error:
            raise _Undeliverable(
                f"the cluster-wide notification Secret {where} (--notifications-secret) cannot be read: HTTP "
                f"{error.status}; grant the operator get on it"
            ) from None
        if data is None:
            raise _Undeliverable(
                f"the cluster-wide notification Secret {where} (--notifications-secret) does not exist"
            )
        targets = []
        for key, value in sorted(data.items()):
            kind = NotificationType.SLACK if key.startswith(_SLACK_PREFIX) else NotificationType.WEBHOOK
            try:
                url = base64.b64decode(value).decode().strip()
            except (binascii.Error, UnicodeDecodeError):
                raise _Undeliverable(f"Secret {where} key {key} is not UTF-8 text: store the URL itself") from None
            targets.append(_Target(kind, url, f"Secret {where} key {key}"))
        self._cluster = (time.monotonic(), tuple(targets))
        return self._cluster[1]


class _Transient(Exception):
    """A failure another attempt may not meet (no answer, a refused connection, a 5xx or 429)."""


def notification_targets(spec: Mapping[str, Any]) -> tuple[Notification, ...]:
    """``spec.notifications`` read on its own: a spec broken elsewhere (even one being rolled back) still notifies."""
    try:
        return _TARGETS.validate_python(spec.get("notifications") or ())
    except ValidationError:
        return ()  # the rollout's own status says what is wrong with its spec


def _webhook_body(notice: Notice) -> dict[str, Any]:
    return {
        "kind": "AIRolloutNotification",
        "reason": notice.reason,
        "type": "Warning" if notice.reason in WARNING_REASONS else "Normal",
        "message": notice.message,
        "time": notice.time.isoformat(),
        "rollout": {"namespace": notice.namespace, "name": notice.name, "uid": notice.uid},
        "flag": notice.flag,
        "phase": notice.phase,
        "stage": notice.stage,
        "percentage": notice.percentage,
    }


def _slack_body(notice: Notice) -> dict[str, Any]:
    mark = ":red_circle:" if notice.reason in WARNING_REASONS else ":large_green_circle:"
    where = f" at stage {notice.stage} ({notice.percentage or 0:g}%)" if notice.stage else ""
    # Slack's incoming webhooks read `text` (mrkdwn); Mattermost and Rocket.Chat read the same field.
    return {"text": f"{mark} *{notice.reason}* `{notice.namespace}/{notice.name}`{where}: {notice.message}"}
