"""One reconciliation against the FeatBit double through the real client: what it writes, and what it infers
from FeatBit's state when status is behind (a restart) or someone else wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airollout.featbit.client import FeatBitClient
from airollout.model import Phase
from airollout.planner import ApplyStage, RollBack
from airollout.reasons import Reason
from airollout.reconciler import Connections, Rollout, reconcile
from airollout_testbed.featbit_double import FeatBitDouble

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FLAG = "reranker"


@pytest.fixture
async def client(featbit_double: FeatBitDouble) -> AsyncIterator[FeatBitClient]:
    featbit_double.create_flag(key=FLAG, enabled_variation_id="canary", disabled_variation_id="stable")
    async with FeatBitClient(featbit_double.api_url, featbit_double.token) as featbit:
        yield featbit


def spec(double: FeatBitDouble, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flag": {"key": FLAG, "envId": double.env_id, "candidate": "canary", "control": "stable"},
        "featbit": {"url": double.api_url, "tokenSecretRef": {"name": "featbit"}},
        "stages": [
            {"name": "canary", "percentage": 5, "duration": "10s"},
            {"name": "ramp-25", "percentage": 25, "duration": "10s"},
            {"name": "full", "percentage": 100},
        ],
    }
    body.update(overrides)
    return body


async def step(double: FeatBitDouble, client: FeatBitClient, status: dict[str, Any], now: datetime, **kw: Any) -> Any:
    rollout = Rollout(namespace="ns", name="r", generation=1, spec=spec(double), status=status, **kw)
    return await reconcile(rollout, Connections(flags=client), now)


async def audit_count(double: FeatBitDouble, client: FeatBitClient) -> int:
    return len(await client.audit_log(double.env_id, double.get_flag(FLAG)["id"], page_size=100))


async def test_the_first_reconcile_writes_the_first_stage_and_records_featbits_revision(
    featbit_double: FeatBitDouble, client: FeatBitClient
) -> None:
    decision = await step(featbit_double, client, {}, T0)
    assert [type(a) for a in decision.actions] == [ApplyStage]
    flag = featbit_double.get_flag(FLAG)
    assert flag["isEnabled"] is True
    assert flag["fallthrough"]["variations"][0] == {"id": "canary", "rollout": [0, 0.05], "exptRollout": 1}
    assert decision.status.flag_revision == flag["revision"]
    assert decision.status.stage_name == "canary"


async def test_a_write_whose_status_patch_was_lost_is_recognised_not_repeated(
    featbit_double: FeatBitDouble, client: FeatBitClient
) -> None:
    first = await step(featbit_double, client, {}, T0)
    at_canary = first.status.to_k8s()
    advanced = await step(featbit_double, client, at_canary, T0 + timedelta(seconds=11))
    assert advanced.status.stage_name == "ramp-25"
    writes = await audit_count(featbit_double, client)

    # The operator died after FeatBit took the write and before status was patched: status still says canary.
    recovered = await step(featbit_double, client, at_canary, T0 + timedelta(seconds=12))
    assert recovered.actions == ()
    assert recovered.status.stage_name == "ramp-25"
    assert [e.reason for e in recovered.entries] == [Reason.RECOVERED]
    assert await audit_count(featbit_double, client) == writes


async def test_a_rollback_whose_status_patch_was_lost_is_recorded(
    featbit_double: FeatBitDouble, client: FeatBitClient
) -> None:
    at_canary = (await step(featbit_double, client, {}, T0)).status.to_k8s()
    aborted = await step(featbit_double, client, at_canary, T0, verb="abort", actor="me")
    assert [type(a) for a in aborted.actions] == [RollBack]
    assert featbit_double.get_flag(FLAG)["isEnabled"] is False

    recovered = await step(featbit_double, client, at_canary, T0 + timedelta(seconds=1))
    assert recovered.status.phase is Phase.ROLLED_BACK
    assert [e.reason for e in recovered.entries] == [Reason.RECOVERED]


async def test_someone_elses_targeting_change_is_detected_and_left_alone(
    featbit_double: FeatBitDouble, client: FeatBitClient
) -> None:
    at_canary = (await step(featbit_double, client, {}, T0)).status.to_k8s()
    flag = featbit_double.get_flag(FLAG)
    human = dict(flag["fallthrough"], variations=[{"id": "canary", "rollout": [0, 1], "exptRollout": 1}])
    targeting = {k: flag[k] for k in ("targetUsers", "rules", "exptIncludeAllTargets")} | {"fallthrough": human}
    await client.put_targeting(
        featbit_double.env_id, FLAG, revision=flag["revision"], targeting=targeting, comment="all in"
    )
    edited = await step(featbit_double, client, at_canary, T0 + timedelta(minutes=5))
    assert edited.actions == ()
    assert edited.status.phase is Phase.PAUSED
    assert [e.reason for e in edited.entries] == [Reason.FLAG_EDITED_OUT_OF_BAND]
    assert featbit_double.get_flag(FLAG)["fallthrough"]["variations"][0]["rollout"] == [0, 1]


async def test_an_off_variation_that_is_not_the_control_stops_the_start(featbit_double: FeatBitDouble) -> None:
    featbit_double.create_flag(key=FLAG, enabled_variation_id="stable", disabled_variation_id="canary")
    async with FeatBitClient(featbit_double.api_url, featbit_double.token) as client:
        decision = await step(featbit_double, client, {}, T0)
    assert decision.actions == ()
    assert decision.status.phase is Phase.PENDING
    assert [e.reason for e in decision.entries] == [Reason.FLAG_MISCONFIGURED]
    assert "set the flag's off-variation to 'stable'" in decision.entries[0].message
    assert featbit_double.get_flag(FLAG)["isEnabled"] is False
