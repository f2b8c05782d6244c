"""The notifier against a real HTTP receiver in the test: retries, giving up, a full queue, and no URL in any message.

The operator around it (Secrets from the apiserver, the condition in status) is tested on the sandbox; here the
Secret reader hands the URL over directly, so each delivery rule is checked in a fraction of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from airollout.kube.notifications import Notice, Notifier
from airollout.model import Notification, SecretKeyRef
from airollout.settings import Settings

SECRET_PATH = "/hook/T000-never-print-this"


class Receiver:
    """Answers each POST with the next status of ``answers`` (the last one from then on)."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return web.Response(status=status)


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    server = Receiver(list(request.param))
    app = web.Application()
    app.router.add_post(SECRET_PATH, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    yield server
    await runner.cleanup()


def notice(reason: str = "Started", uid: str = "u1") -> Notice:
    target = Notification.model_validate({"type": "webhook", "urlSecretRef": {"name": "hooks"}})
    return Notice(
        uid=uid, namespace="team-a", name="summary-v2", reason=reason, message="stage 1/2 canary",
        time=datetime.now(UTC), phase="Progressing", stage="canary", percentage=5.0, flag="ai-summary",
        targets=(target,),
    )  # fmt: skip


async def deliver(receiver: Receiver, notices: list[Notice], **settings: Any) -> list[tuple[str, str | None]]:
    """Run a notifier until ``notices`` are delivered or given up; the outcomes it reported."""
    outcomes: list[tuple[str, str | None]] = []

    async def read_secret(namespace: str, ref: SecretKeyRef, field: str) -> str:
        return receiver.url

    async def on_outcome(uid: str, failure: str | None) -> None:
        outcomes.append((uid, failure))

    tunables = Settings(notification_backoff_cap=0.01, notification_timeout=2, **settings)
    notifier = Notifier(tunables, api=None, read_secret=read_secret, on_outcome=on_outcome)  # type: ignore[arg-type]
    for each in notices:
        notifier.submit(each)
    running = asyncio.create_task(notifier.run())
    await asyncio.wait_for(notifier.drained(), timeout=10)
    await asyncio.sleep(0.05)  # the outcome tasks
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    return outcomes


@pytest.mark.parametrize("receiver", [[500, 503, 200]], indirect=True)
async def test_a_failing_receiver_is_retried_until_it_takes_the_notification(receiver: Receiver) -> None:
    outcomes = await deliver(receiver, [notice()], notification_attempts=4)
    assert len(receiver.bodies) == 3
    assert receiver.bodies[-1]["reason"] == "Started"
    assert outcomes == []  # delivered: nothing to report


@pytest.mark.parametrize("receiver", [[500]], indirect=True)
async def test_a_notification_is_given_up_after_its_attempts_naming_the_secret_never_the_url(
    receiver: Receiver,
) -> None:
    outcomes = await deliver(receiver, [notice()], notification_attempts=3)
    assert len(receiver.bodies) == 3
    assert outcomes == [
        (
            "u1",
            "webhook notification of Started to the URL in Secret team-a/hooks key url failed after 3 attempts: "
            "HTTP 500",
        )
    ]
    assert "never-print-this" not in str(outcomes)


@pytest.mark.parametrize("receiver", [[404]], indirect=True)
async def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    outcomes = await deliver(receiver, [notice()], notification_attempts=5)
    assert len(receiver.bodies) == 1
    (only,) = outcomes
    assert only[1] is not None
    assert "HTTP 404 (the receiver refused it; check the URL in the Secret)" in only[1]


@pytest.mark.parametrize("receiver", [[200]], indirect=True)
async def test_a_full_queue_drops_the_oldest_and_says_so(receiver: Receiver) -> None:
    sent = [notice("Started", "u1"), notice("StageAdvanced", "u2"), notice("Promoted", "u3")]
    outcomes = await deliver(receiver, sent, notification_queue=2)
    assert [b["reason"] for b in receiver.bodies] == ["StageAdvanced", "Promoted"]
    assert outcomes == [("u1", "the Started notification was dropped: 2 were waiting")]
