"""The kill-switch lane: retried until acknowledged, and never held by one attempt FeatBit leaves hanging."""

from __future__ import annotations

import asyncio
from typing import Any

from airollout.featbit.errors import FeatBitUnavailable
from airollout.kube.kill_switch import KillSwitchLane
from airollout.model import KillSwitchTarget

TARGET = KillSwitchTarget.model_validate(
    {
        "flag": {"key": "summarizer", "envId": "6f0c3a9e-1b2d-4e5f-8a7b-9c0d1e2f3a4b"},
        "featbit": {"url": "http://featbit:5000", "tokenSecretRef": {"name": "featbit"}},
    }
)


class _FeatBit:
    """Answers each switch-off as the script says: "hang", "fail" or a revision."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.calls: list[str] = []

    async def toggle(self, env_id: str, key: str, enabled: bool, *, comment: str) -> str:
        answer = self.script.pop(0) if self.script else "rev-late"
        self.calls.append(answer)
        if answer == "hang":
            await asyncio.sleep(3600)
        if answer == "fail":
            raise FeatBitUnavailable("FeatBit answered 503")
        return answer

    async def republish(self, env_id: str, key: str, *, comment: str) -> str:
        self.calls.append("republish")
        return "rev-republished"


class _Connections:
    def __init__(self, featbit: _FeatBit) -> None:
        self.client = featbit

    async def featbit(self, namespace: str, ref: Any) -> _FeatBit:
        return self.client

    def forget_token(self, namespace: str, ref: Any) -> None:
        pass


def _lane(featbit: _FeatBit) -> KillSwitchLane:
    return KillSwitchLane(
        _Connections(featbit),  # type: ignore[arg-type]
        backoff_cap=0.01,
        slow_backoff_cap=0.01,
        hedge_after=0.05,
    )


async def test_an_attempt_featbit_leaves_hanging_gets_another_beside_it_and_the_first_answer_wins() -> None:
    featbit = _FeatBit("hang", "rev-2")
    async with asyncio.timeout(5):
        revision = await _lane(featbit).turn_off("team", TARGET, "kill switch")
    assert revision == "rev-2"
    assert featbit.calls == ["hang", "rev-2"]


async def test_failures_are_retried_until_acknowledged_then_the_flag_is_published_again() -> None:
    featbit = _FeatBit("fail", "fail", "rev-3")
    told: list[str] = []

    async def on_failure(message: str) -> None:
        told.append(message)

    async with asyncio.timeout(5):
        revision = await _lane(featbit).turn_off("team", TARGET, "kill switch", on_failure)
    # A failed attempt may have switched the flag off without FeatBit telling the SDKs: publish it again.
    assert revision == "rev-republished"
    assert featbit.calls == ["fail", "fail", "rev-3", "republish"]
    assert told == ["FeatBit answered 503", "FeatBit answered 503"]
