"""FeatBit's own Python SDK (fb-python-sdk) against the double: it connects, evaluates rollouts,
segments and the kill switch locally, and follows changes made through the management API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from fbclient import FBClient
from fbclient.config import Config, WebSocketConfig

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.featbit_double.token import new_env_secret
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users

FLAG = "ai-summary"
USERS = synthetic_users(10_000)
TOLERANCE = 0.02  # two percentage points

ClientFactory = Callable[..., FBClient]


def fallthrough_at(percent: float) -> dict[str, Any]:
    """The default rule serving `canary` to `percent` % of users, as FeatBit's UI writes it."""
    share = percent / 100
    return {
        "dispatchKey": "keyId",
        "includedInExpt": True,
        "variations": [
            {"id": "canary", "rollout": [0, share], "exptRollout": 1},
            {"id": "stable", "rollout": [share, 1], "exptRollout": 1},
        ],
    }


def set_targeting(
    double: FeatBitDouble,
    *,
    fallthrough: dict[str, Any],
    rules: list[Any] | None = None,
    target_users: list[Any] | None = None,
) -> None:
    """Read the revision, then `PUT .../targeting`, as the operator does."""
    url = f"{double.api_url}/api/v1/envs/{double.env_id}/feature-flags/{FLAG}"
    headers = {"Authorization": double.token}
    revision = httpx.get(url, headers=headers).json()["data"]["revision"]
    targeting = {
        "targetUsers": target_users or [],
        "rules": rules or [],
        "fallthrough": fallthrough,
        "exptIncludeAllTargets": True,
    }
    body = {"revision": revision, "targeting": targeting, "comment": "rollout step"}
    assert httpx.put(f"{url}/targeting", json=body, headers=headers).json()["success"] is True


def canary_users(client: FBClient) -> set[str]:
    return {user["key"] for user in USERS if client.variation_detail(FLAG, user, None).variation_id == "canary"}


def test_sdk_initialises_and_serves_the_candidate_to_a_quarter_of_users(
    featbit_double: FeatBitDouble, featbit_client: ClientFactory
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    set_targeting(featbit_double, fallthrough=fallthrough_at(25))
    client = featbit_client()
    assert client.initialize
    counts = count_variations(client, FLAG, USERS)
    assert counts["canary"] + counts["stable"] == len(USERS)
    assert abs(counts["canary"] / len(USERS) - 0.25) <= TOLERANCE
    assert client.variation(FLAG, USERS[0], None) in (True, False)


def test_segment_members_always_get_the_candidate(featbit_double: FeatBitDouble, featbit_client: ClientFactory) -> None:
    members = {user["key"] for user in USERS[::7]}
    segment = featbit_double.create_segment(key="internal", included=sorted(members))
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    internal_first = {
        "id": "internal-first",
        "name": "internal users",
        "dispatchKey": None,
        "includedInExpt": False,
        "conditions": [{"property": "User is in segment", "op": None, "value": json.dumps([segment["id"]])}],
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }
    set_targeting(featbit_double, fallthrough=fallthrough_at(0), rules=[internal_first])
    client = featbit_client()
    assert canary_users(client) == members
    assert client.variation_detail(FLAG, USERS[0], None).reason == "rule match"


def test_segment_change_reaches_a_connected_sdk(featbit_double: FeatBitDouble, featbit_client: ClientFactory) -> None:
    segment = featbit_double.create_segment(key="internal")
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    rule = {
        "conditions": [{"property": "User is in segment", "op": None, "value": json.dumps([segment["id"]])}],
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }
    set_targeting(featbit_double, fallthrough=fallthrough_at(0), rules=[rule])
    client = featbit_client()
    qa = {"key": "qa-1", "name": "QA"}
    assert client.variation_detail(FLAG, qa, None).variation_id == "stable"
    httpx.put(
        f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/segments/{segment['id']}/targeting",
        json={"included": ["qa-1"], "excluded": [], "rules": []},
        headers={"Authorization": featbit_double.token},
    ).raise_for_status()
    wait_for("QA in the segment", lambda: client.variation_detail(FLAG, qa, None).variation_id == "canary", timeout=10)


def test_kill_switch_serves_the_control_variation_to_everyone(
    featbit_double: FeatBitDouble, featbit_client: ClientFactory
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    set_targeting(featbit_double, fallthrough=fallthrough_at(25))
    client = featbit_client()
    exposed = canary_users(client)
    assert exposed
    response = httpx.put(
        f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/feature-flags/{FLAG}/toggle/false",
        json={"comment": "guardrail breached"},
        headers={"Authorization": featbit_double.token},
    )
    assert response.json()["success"] is True
    someone_exposed = {"key": min(exposed), "name": "exposed"}
    wait_for(
        "the toggle to reach the SDK",
        lambda: client.variation_detail(FLAG, someone_exposed, None).variation_id == "stable",
        timeout=10,
    )
    assert count_variations(client, FLAG, USERS) == {"stable": len(USERS)}
    assert client.variation_detail(FLAG, USERS[1], None).reason == "flag off"


def test_exposure_only_grows_across_rollout_steps(featbit_double: FeatBitDouble, featbit_client: ClientFactory) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    set_targeting(featbit_double, fallthrough=fallthrough_at(0))
    client = featbit_client()
    exposed: set[str] = set()
    for percent in (1, 5, 25, 50, 100):
        # A user targeted by this step alone shows when the step has reached the SDK.
        marker = {"key": f"marker-{percent}", "name": "marker"}
        set_targeting(
            featbit_double,
            fallthrough=fallthrough_at(percent),
            target_users=[{"keyIds": [marker["key"]], "variationId": "canary"}],
        )
        wait_for(
            f"the {percent}% step to reach the SDK",
            lambda marker=marker: client.variation_detail(FLAG, marker, None).reason == "target match",
            timeout=10,
        )
        now_exposed = canary_users(client)
        assert exposed <= now_exposed, f"{len(exposed - now_exposed)} users lost the candidate at {percent}%"
        assert abs(len(now_exposed) / len(USERS) - percent / 100) <= TOLERANCE
        exposed = now_exposed
    assert len(exposed) == len(USERS)


def test_dropped_connection_resyncs_and_sees_changes_made_meanwhile(
    featbit_double: FeatBitDouble, featbit_client: ClientFactory
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    client = featbit_client()
    assert featbit_double.data_sync_timestamps == [0]
    featbit_double.drop_streaming_connections()
    # The SDK waits at least half a second before reconnecting, so this lands while it is away.
    httpx.put(
        f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/feature-flags/{FLAG}/toggle/false",
        headers={"Authorization": featbit_double.token},
    ).raise_for_status()
    wait_for("the SDK to resync", lambda: client.variation(FLAG, USERS[0], None) is False, timeout=10)
    first, resync = featbit_double.data_sync_timestamps
    assert (first, resync > 0) == (0, True)


def test_secret_of_another_environment_is_refused_with_4003(featbit_double: FeatBitDouble) -> None:
    config = Config(
        new_env_secret(uuid.uuid4()),
        event_url=featbit_double.eval_url,
        streaming_url=featbit_double.streaming_url,
        websocket=WebSocketConfig(timeout=1.0),
    )
    client = FBClient(config, start_wait=1)
    try:
        assert not client.initialize
        # The SDK means to give up on 4003, but with websocket-client 1.9 the close frame reaches
        # it as an error first, so it records the code and keeps retrying with backoff.
        wait_for(
            "the SDK to record the 4003 close",
            lambda: "4003" in getattr(client.update_status_provider.current_state.error_track, "message", ""),
            timeout=10,
        )
        assert featbit_double.data_sync_timestamps == []
    finally:
        client.stop()


def test_evaluation_events_reach_the_double(featbit_double: FeatBitDouble, featbit_client: ClientFactory) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    client = featbit_client()
    for user in USERS[:3]:
        client.variation(FLAG, user, None)
    client.flush()

    def evaluated() -> set[str]:
        return {
            event["user"]["keyId"]
            for event in featbit_double.insight_events
            for variation in event.get("variations", ())
            if variation["featureFlagKey"] == FLAG and variation["variation"]["id"] == "canary"
        }

    wait_for("evaluation events", lambda: evaluated() == {"user-0", "user-1", "user-2"}, timeout=10)
