"""The FeatBit double's wire contract: management API envelope, codes and revisions, the SDK
streaming protocol, and the fault knobs (featbit-api.md §1-4)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from fbclient.utils import build_token

import airollout_testbed.featbit_double as featbit_double_package
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.featbit_double.token import encode_connection_token, env_id_of_secret, new_env_secret
from airollout_testbed.waiting import wait_for

CANARY_AT_25 = {
    "targetUsers": [],
    "rules": [],
    "fallthrough": {
        "dispatchKey": "keyId",
        "includedInExpt": True,
        "variations": [
            {"id": "canary", "rollout": [0, 0.25], "exptRollout": 1},
            {"id": "stable", "rollout": [0.25, 1], "exptRollout": 1},
        ],
    },
    "exptIncludeAllTargets": True,
}

# What the evaluation server sends SDKs (§4.4): no revision, createdAt or creator fields.
SDK_FLAG_FIELDS = {
    "id",
    "envId",
    "name",
    "description",
    "key",
    "variationType",
    "variations",
    "targetUsers",
    "rules",
    "isEnabled",
    "disabledVariationId",
    "fallthrough",
    "exptIncludeAllTargets",
    "tags",
    "updatedAt",
    "isArchived",
}


@pytest.fixture
def api(featbit_double: FeatBitDouble) -> Iterator[httpx.Client]:
    """An HTTP client for the double's environment routes, authenticated with its access token."""
    with httpx.Client(
        base_url=f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}",
        headers={"Authorization": featbit_double.token},
        timeout=5.0,
    ) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["errors"] == []
    return body["data"]


def failed(response: httpx.Response, status: int, *codes: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"success": False, "errors": list(codes), "data": None}


def targeting_body(revision: str, targeting: dict[str, Any] = CANARY_AT_25, comment: str = "") -> dict[str, Any]:
    return {"revision": revision, "targeting": targeting, "comment": comment}


def audit(api: httpx.Client, flag_id: str) -> list[dict[str, Any]]:
    data = ok(api.get("/audit-logs", params={"refType": "FeatureFlag", "refId": flag_id, "pageSize": 100}))
    items: list[dict[str, Any]] = data["items"]
    return items


def test_public_surface_is_the_double_its_config_and_faults() -> None:
    assert sorted(featbit_double_package.__all__) == ["DoubleConfig", "Faults", "FeatBitDouble"]


# ---- authentication and addressing --------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "api-unknown"}, {"Authorization": "Bearer x"}])
def test_missing_or_unknown_token_is_401_with_a_bearer_challenge(
    featbit_double: FeatBitDouble, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/feature-flags", headers=headers)
    failed(response, 401, "Unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_health_needs_no_token(featbit_double: FeatBitDouble) -> None:
    response = httpx.get(f"{featbit_double.api_url}/health/liveness")
    assert (response.status_code, response.text) == (200, "Healthy")


def test_projects_reveal_the_environment_and_its_server_secret(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    projects = ok(api.get(f"{featbit_double.api_url}/api/v1/projects"))
    [environment] = projects[0]["environments"]
    assert environment["id"] == featbit_double.env_id
    secrets = {secret["type"]: secret["value"] for secret in environment["secrets"]}
    assert secrets["server"] == featbit_double.env_secret
    assert len(secrets["client"]) == 44


def test_unknown_environment_is_forbidden_and_a_malformed_one_matches_no_route(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    other = f"{featbit_double.api_url}/api/v1/envs/{uuid.uuid4()}"
    failed(api.get(f"{other}/feature-flags"), 403, "Forbidden")
    failed(api.get(f"{other}/segments"), 403, "Forbidden")
    assert api.get(f"{featbit_double.api_url}/api/v1/envs/not-a-guid/feature-flags").status_code == 404
    # The audit log has no permission check: another environment simply has no entries.
    assert ok(api.get(f"{other}/audit-logs")) == {"totalCount": 0, "items": []}


# ---- flags --------------------------------------------------------------------------------------


def test_created_flag_is_the_full_model_serving_the_enabled_variation(api: httpx.Client) -> None:
    body = {
        "name": "AI summary",
        "key": "ai-summary",
        "isEnabled": True,
        "description": "",
        "variationType": "boolean",
        "variations": [
            {"id": "canary", "name": "on", "value": "true"},
            {"id": "stable", "name": "off", "value": "false"},
        ],
        "enabledVariationId": "canary",
        "disabledVariationId": "stable",
        "tags": ["ai"],
    }
    flag = ok(api.post("/feature-flags", json=body))
    assert flag["fallthrough"] == {
        "dispatchKey": None,
        "includedInExpt": True,
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }
    assert (flag["targetUsers"], flag["rules"], flag["exptIncludeAllTargets"]) == ([], [], True)
    assert uuid.UUID(flag["revision"])
    assert flag["createdAt"] == flag["updatedAt"]
    assert flag["updatedAt"].endswith("Z")
    assert ok(api.get("/feature-flags/ai-summary")) == flag


def test_flag_key_is_unique_regardless_of_case(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.create_flag(key="ai-summary")
    body = {
        "name": "dup",
        "key": "AI-Summary",
        "variationType": "boolean",
        "variations": [{"id": "a", "name": "a", "value": "true"}],
        "enabledVariationId": "a",
        "disabledVariationId": "a",
    }
    failed(api.post("/feature-flags", json=body), 422, "KeyHasBeenUsed")


def test_invalid_flag_gets_featbits_validation_codes(api: httpx.Client) -> None:
    body = {"name": "", "key": "bad key!", "variationType": "text", "variations": [{"id": "a", "name": ""}]}
    failed(
        api.post("/feature-flags", json=body),
        400,
        "name_is_required",
        "key_is_invalid",
        "variationType_is_invalid",
        "variations_is_invalid",
        "disabledVariationId_is_invalid",
        "enabledVariationId_is_invalid",
    )


def test_unbindable_body_is_problem_details(api: httpx.Client) -> None:
    response = api.post("/feature-flags", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["status"] == 400
    wrong_type = api.post("/feature-flags", json={"name": "x", "isEnabled": "yes"})
    assert wrong_type.status_code == 400
    assert "$.isEnabled" in wrong_type.json()["errors"]


def test_unknown_flag_is_404_to_read_target_and_patch(api: httpx.Client) -> None:
    failed(api.get("/feature-flags/nope"), 404, "ResourceNotFound")
    failed(api.put("/feature-flags/nope/targeting", json=targeting_body(str(uuid.uuid4()))), 404, "ResourceNotFound")
    failed(api.patch("/feature-flags/nope", json=[]), 404, "ResourceNotFound")


def test_unknown_flag_is_403_on_flag_scoped_routes(api: httpx.Client) -> None:
    failed(api.put("/feature-flags/nope/toggle/false", json={"comment": "kill"}), 403, "Forbidden")
    failed(api.put("/feature-flags/nope/archive"), 403, "Forbidden")
    failed(api.put("/feature-flags/nope/off-variation", json={"offVariationId": "x"}), 403, "Forbidden")


def test_toggle_returns_the_new_revision_and_records_the_comment(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=True)
    revision = ok(api.put("/feature-flags/ai-summary/toggle/false", json={"comment": "error rate breached"}))
    after = ok(api.get("/feature-flags/ai-summary"))
    assert (after["isEnabled"], after["revision"]) == (False, revision)
    assert revision != flag["revision"]
    [toggle, create] = audit(api, flag["id"])
    assert (toggle["operation"], toggle["comment"]) == ("Update", "error rate breached")
    assert create["operation"] == "Create"


def test_toggle_to_the_current_state_changes_nothing(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=False)
    assert ok(api.put("/feature-flags/ai-summary/toggle/false")) == flag["revision"]
    assert ok(api.put("/feature-flags/ai-summary/toggle/FALSE", json={"comment": "again"})) == flag["revision"]
    assert len(audit(api, flag["id"])) == 1
    assert ok(api.get("/feature-flags/ai-summary"))["updatedAt"] == flag["updatedAt"]


def test_toggle_status_that_is_not_a_boolean_is_a_bad_request(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.create_flag(key="ai-summary")
    response = api.put("/feature-flags/ai-summary/toggle/notabool")
    assert response.status_code == 400
    assert "status" in response.json()["errors"]


def test_targeting_replaces_all_four_parts_under_the_current_revision(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=True)
    stale = flag["revision"]
    revision = ok(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(stale, comment="step 3: 25%")))
    after = ok(api.get("/feature-flags/ai-summary"))
    assert after["revision"] == revision != stale
    assert {part: after[part] for part in CANARY_AT_25} == CANARY_AT_25
    assert audit(api, flag["id"])[0]["comment"] == "step 3: 25%"
    failed(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(stale)), 409, "Conflict")


def test_targeting_fills_omitted_fields_with_featbits_defaults(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    sparse = {"targetUsers": [], "rules": [], "fallthrough": {"variations": [{"id": "canary", "rollout": [0, 1]}]}}
    ok(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], sparse)))
    after = ok(api.get("/feature-flags/ai-summary"))
    assert after["fallthrough"] == {
        "dispatchKey": None,
        "includedInExpt": False,
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 0}],
    }
    assert after["exptIncludeAllTargets"] is True


@pytest.mark.parametrize("part", ["rules", "targetUsers"])
def test_null_targeting_collection_is_an_internal_server_error(
    featbit_double: FeatBitDouble, api: httpx.Client, part: str
) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    body = targeting_body(flag["revision"], {**CANARY_AT_25, part: None})
    failed(api.put("/feature-flags/ai-summary/targeting", json=body), 500, "InternalServerError")
    assert ok(api.get("/feature-flags/ai-summary"))["revision"] == flag["revision"]


def test_every_write_gets_a_strictly_later_updated_at(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.create_flag(key="ai-summary")
    stamps = []
    for step in range(20):
        revision = ok(api.get("/feature-flags/ai-summary"))["revision"]
        ok(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(revision, comment=f"step {step}")))
        stamps.append(ok(api.get("/feature-flags/ai-summary"))["updatedAt"])
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_json_patch_applies_without_revision_or_comment(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=True)
    patch = [
        {"op": "replace", "path": "/isEnabled", "value": False},
        {"op": "add", "path": "/tags/-", "value": "ai"},
    ]
    assert ok(api.patch("/feature-flags/ai-summary", json=patch)) is True
    after = ok(api.get("/feature-flags/ai-summary"))
    assert (after["isEnabled"], after["tags"]) == (False, ["ai"])
    assert after["revision"] != flag["revision"]
    assert audit(api, flag["id"])[0]["comment"] == ""


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param([{"op": "replace", "path": "/noSuchField", "value": 1}], id="unknown-property"),
        pytest.param([{"op": "replace", "path": "/rules/3", "value": {}}], id="index-out-of-range"),
        pytest.param([{"op": "replace", "path": "/isEnabled", "value": "off"}], id="wrong-type"),
        pytest.param([{"op": "move", "from": "/name", "path": "/description"}], id="unsupported-op"),
    ],
)
def test_bad_json_patch_is_http_200_with_success_false(
    featbit_double: FeatBitDouble, api: httpx.Client, patch: list[dict[str, Any]]
) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    response = api.patch("/feature-flags/ai-summary", json=patch)
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["data"], len(body["errors"])) == (False, False, 1)
    assert ok(api.get("/feature-flags/ai-summary"))["revision"] == flag["revision"]


def test_off_variation_and_variations_check_the_revision(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    stale = flag["revision"]
    revision = ok(
        api.put("/feature-flags/ai-summary/off-variation", json={"revision": stale, "offVariationId": "canary"})
    )
    failed(
        api.put("/feature-flags/ai-summary/off-variation", json={"revision": stale, "offVariationId": "x"}),
        409,
        "Conflict",
    )
    variations = [{"id": "canary", "name": "on", "value": "true"}]
    ok(api.put("/feature-flags/ai-summary/variations", json={"revision": revision, "variations": variations}))
    failed(
        api.put("/feature-flags/ai-summary/variations", json={"revision": revision, "variations": []}),
        400,
        "NotEmptyValidator",
    )
    after = ok(api.get("/feature-flags/ai-summary"))
    assert (after["disabledVariationId"], after["variations"]) == ("canary", variations)


def test_archived_flags_leave_the_default_list_until_restored(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.create_flag(key="ai-summary")
    assert ok(api.put("/feature-flags/ai-summary/archive", json={"comment": "done"})) is True
    assert ok(api.get("/feature-flags"))["totalCount"] == 0
    assert ok(api.get("/feature-flags", params={"isArchived": "true"}))["items"][0]["key"] == "ai-summary"
    ok(api.put("/feature-flags/ai-summary/restore"))
    assert ok(api.get("/feature-flags"))["totalCount"] == 1


def test_flag_list_pages_from_zero_newest_first(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    for index in range(3):
        featbit_double.create_flag(key=f"flag-{index}", is_enabled=index == 1)
    first = ok(api.get("/feature-flags", params={"pageIndex": 0, "pageSize": 2}))
    assert first["totalCount"] == 3
    assert [item["key"] for item in first["items"]] == ["flag-2", "flag-1"]
    assert [item["key"] for item in ok(api.get("/feature-flags", params={"pageIndex": 1, "pageSize": 2}))["items"]] == [
        "flag-0"
    ]
    enabled = ok(api.get("/feature-flags", params={"isEnabled": "true"}))["items"]
    assert [item["key"] for item in enabled] == ["flag-1"]
    assert "revision" not in enabled[0]
    assert enabled[0]["serves"] == {"enabledVariations": ["true"], "disabledVariation": "false"}


# ---- segments -----------------------------------------------------------------------------------


def test_segment_lifecycle_over_the_api(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    body = {
        "type": "environment-specific",
        "name": "Internal",
        "key": "internal",
        "scopes": [featbit_double.env_resource_name],
    }
    segment = ok(api.post("/segments", json=body))
    assert (segment["included"], segment["excluded"], segment["rules"]) == ([], [], [])
    targeting = {"included": ["qa-1"], "excluded": [], "rules": [], "comment": "add QA"}
    assert ok(api.put(f"/segments/{segment['id']}/targeting", json=targeting)) is True
    assert ok(api.get(f"/segments/{segment['id']}"))["included"] == ["qa-1"]
    listed = ok(api.get("/segments", params={"name": "intern"}))
    assert [item["id"] for item in listed["items"]] == [segment["id"]]
    failed(api.get(f"/segments/{uuid.uuid4()}"), 404, "ResourceNotFound")
    failed(api.put(f"/segments/{uuid.uuid4()}/targeting", json=targeting), 404, "ResourceNotFound")


def test_segment_create_validation_matches_featbit(api: httpx.Client) -> None:
    failed(
        api.post("/segments", json={"type": "global", "name": "", "key": "", "scopes": []}),
        400,
        "type_is_invalid",
        "name_is_invalid",
        "key_is_required",
        "scopes_is_invalid",
    )


def test_segment_rules_may_not_test_segment_membership(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    segment = featbit_double.create_segment(key="internal")
    condition = {"property": "User is in segment", "op": None, "value": json.dumps([segment["id"]])}
    targeting = {"included": [], "excluded": [], "rules": [{"id": "r", "name": "r", "conditions": [condition]}]}
    failed(api.put(f"/segments/{segment['id']}/targeting", json=targeting), 400, "rules_is_invalid")


def test_segment_change_bumps_referencing_flags_but_not_their_revision(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    segment = featbit_double.create_segment(key="internal", name="Internal users")
    flag = featbit_double.create_flag(key="ai-summary")
    rule = {
        "id": "internal-first",
        "name": "internal users",
        "conditions": [{"property": "User is in segment", "op": None, "value": json.dumps([segment["id"]])}],
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }
    revision = ok(
        api.put(
            "/feature-flags/ai-summary/targeting",
            json=targeting_body(flag["revision"], {**CANARY_AT_25, "rules": [rule]}),
        )
    )
    before = ok(api.get("/feature-flags/ai-summary"))
    ok(api.put(f"/segments/{segment['id']}/targeting", json={"included": ["qa-1"], "excluded": [], "rules": []}))
    after = ok(api.get("/feature-flags/ai-summary"))
    assert after["revision"] == revision
    assert after["updatedAt"] > before["updatedAt"]
    assert audit(api, flag["id"])[0]["comment"] == "Referenced segment 'Internal users' has been updated."


# ---- audit log ----------------------------------------------------------------------------------


def test_audit_log_is_newest_first_and_names_the_token(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    featbit_double.create_flag(key="other")
    for comment in ("one", "two", "three"):
        revision = ok(api.get("/feature-flags/ai-summary"))["revision"]
        ok(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(revision, comment=comment)))
    entries = audit(api, flag["id"])
    assert [entry["comment"] for entry in entries] == ["three", "two", "one", ""]
    newest = entries[0]
    assert newest["creatorName"] == featbit_double.config.token_name
    assert newest["creatorEmail"] == "Access token"
    assert (newest["refId"], newest["refType"]) == (flag["id"], "FeatureFlag")
    assert (
        json.loads(newest["dataChange"]["current"])["revision"] == ok(api.get("/feature-flags/ai-summary"))["revision"]
    )
    assert entries[-1]["dataChange"]["previous"] == ""
    page = ok(api.get("/audit-logs", params={"pageIndex": 1, "pageSize": 2}))
    assert page["totalCount"] == 5
    assert [entry["comment"] for entry in page["items"]] == ["one", ""]


# ---- faults -------------------------------------------------------------------------------------


def test_latency_fault_slows_management_requests(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.faults.latency = 0.3
    started = time.monotonic()
    ok(api.get("/feature-flags"))
    assert time.monotonic() - started >= 0.3


def test_error_burst_fails_the_next_requests_then_recovers(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.faults.update(errors=2, error_status=502)
    assert [api.get("/feature-flags").status_code for _ in range(3)] == [502, 502, 200]


def test_timeout_fault_holds_the_request_until_reset(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.faults.timeouts = 1
    with pytest.raises(httpx.ReadTimeout):
        api.get("/feature-flags", timeout=0.3)
    featbit_double.reset()
    ok(api.get("/feature-flags"))


def test_conflict_fault_simulates_another_writer(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    featbit_double.faults.conflicts = 1
    failed(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"])), 409, "Conflict")
    fresh = ok(api.get("/feature-flags/ai-summary"))["revision"]
    assert fresh != flag["revision"]
    assert audit(api, flag["id"])[0]["creatorName"] == "Someone Else"
    ok(api.put("/feature-flags/ai-summary/targeting", json=targeting_body(fresh)))


def test_faults_and_reset_are_driven_over_http_with_the_token(featbit_double: FeatBitDouble) -> None:
    admin = f"{featbit_double.api_url}/_double"
    auth = {"Authorization": featbit_double.token}
    assert httpx.post(f"{admin}/faults", json={"errors": 1}).status_code == 401
    current = httpx.post(
        f"{admin}/faults", json={"errors": 1, "errorStatus": 500, "latency": 0.01}, headers=auth
    ).json()
    assert current["errors"] == 1
    assert httpx.get(f"{admin}/faults", headers=auth).json()["errorStatus"] == 500
    assert httpx.post(f"{admin}/faults", json={"errors": -1}, headers=auth).status_code == 400
    featbit_double.create_flag(key="ai-summary")
    assert httpx.post(f"{admin}/reset", headers=auth).status_code == 204
    assert featbit_double.faults.errors == 0
    flags = httpx.get(f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}/feature-flags", headers=auth)
    assert ok(flags)["totalCount"] == 0


# ---- evaluation server --------------------------------------------------------------------------


def stream_url(double: FeatBitDouble, token: str, kind: str = "server") -> str:
    return f"{double.streaming_url}/streaming?token={token}&type={kind}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="undecodable"),
        pytest.param("expired", id="older-than-30s"),
        pytest.param("other-env", id="another-environments-secret"),
    ],
)
async def test_invalid_streaming_token_is_accepted_then_closed_4003(featbit_double: FeatBitDouble, token: str) -> None:
    tokens = {
        "garbage": "QQWBS" + "A" * 10,
        "expired": encode_connection_token(featbit_double.env_secret, now_ms() - 31_000, split=5),
        "other-env": build_token(new_env_secret(uuid.uuid4())),
    }
    async with aiohttp.ClientSession() as session, session.ws_connect(stream_url(featbit_double, tokens[token])) as ws:
        message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 4003)


async def test_streaming_protocol_full_push_and_pong(featbit_double: FeatBitDouble) -> None:
    featbit_double.create_flag(key="ai-summary")
    featbit_double.create_segment(key="internal", included=["qa-1"])
    url = stream_url(featbit_double, build_token(featbit_double.env_secret))
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"messageType": "data-sync", "data": {"timestamp": 0}})
        full = (await ws.receive_json(timeout=5))["data"]
        assert full["eventType"] == "full"
        [sent_flag] = full["featureFlags"]
        assert sent_flag["key"] == "ai-summary"
        assert set(sent_flag) == SDK_FLAG_FIELDS
        assert [s["included"] for s in full["segments"]] == [["qa-1"]]

        await ws.send_json({"messageType": "ping", "data": None})
        assert await ws.receive_json(timeout=5) == {"messageType": "pong", "data": {}}

        featbit_double.create_flag(key="other")
        push = (await ws.receive_json(timeout=5))["data"]
        assert (push["eventType"], [f["key"] for f in push["featureFlags"]], push["segments"]) == (
            "patch",
            ["other"],
            [],
        )


async def test_resync_sends_only_what_changed_after_the_sdks_timestamp(featbit_double: FeatBitDouble) -> None:
    featbit_double.create_flag(key="old")
    url = stream_url(featbit_double, build_token(featbit_double.env_secret))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.send_json({"messageType": "data-sync", "data": {"timestamp": 0}})
            full = (await ws.receive_json(timeout=5))["data"]
        cursor = max(_ms(item["updatedAt"]) for item in full["featureFlags"] + full["segments"])
        featbit_double.create_flag(key="new")
        async with session.ws_connect(url) as ws:
            await ws.send_json({"messageType": "data-sync", "data": {"timestamp": cursor}})
            patch = (await ws.receive_json(timeout=5))["data"]
            await ws.send_json(
                {"messageType": "data-sync", "data": {"timestamp": _ms(patch["featureFlags"][0]["updatedAt"])}}
            )
            nothing = (await ws.receive_json(timeout=5))["data"]
    assert (patch["eventType"], [f["key"] for f in patch["featureFlags"]]) == ("patch", ["new"])
    assert (nothing["featureFlags"], nothing["segments"]) == ([], [])


def test_insight_events_need_a_decodable_secret(featbit_double: FeatBitDouble) -> None:
    url = f"{featbit_double.eval_url}/api/public/insight/track"
    events = [{"user": {"keyId": "u1", "name": "u1", "customizedProperties": []}, "variations": []}]
    assert httpx.post(url, json=events, headers={"Authorization": "nope"}).status_code == 401
    accepted = httpx.post(url, json=events, headers={"Authorization": featbit_double.env_secret})
    assert (accepted.status_code, accepted.content) == (200, b"")
    wait_for("the insight to be recorded", lambda: featbit_double.insight_events == events, timeout=10)


def test_polling_returns_data_only_when_something_changed(featbit_double: FeatBitDouble) -> None:
    url = f"{featbit_double.eval_url}/api/public/sdk/server/latest-all"
    auth = {"Authorization": featbit_double.env_secret}
    empty = httpx.get(url, headers=auth)
    assert (empty.status_code, empty.content) == (200, b"")
    featbit_double.create_flag(key="ai-summary")
    body = httpx.get(url, headers=auth).json()
    assert body["messageType"] == "data-sync"
    assert [f["key"] for f in body["data"]["featureFlags"]] == ["ai-summary"]
    newest = _ms(body["data"]["featureFlags"][0]["updatedAt"])
    assert httpx.get(url, params={"timestamp": newest}, headers=auth).content == b""


# ---- as a process -------------------------------------------------------------------------------


def test_double_runs_as_a_process_that_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "featbit.json"
    command = [sys.executable, "-m", "airollout_testbed.featbit_double", "--token", "api-given", "--ready-file"]
    process = subprocess.Popen([*command, str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("the ready file", ready.exists, timeout=20)
        info = json.loads(ready.read_text())
        assert info["token"] == "api-given"
        assert str(env_id_of_secret(info["env_secret"])) == info["env_id"]
        assert httpx.get(f"{info['api_url']}/health/liveness").text == "Healthy"
        faults = httpx.post(
            f"{info['api_url']}/_double/faults", json={"errors": 1}, headers={"Authorization": "api-given"}
        )
        assert faults.json()["errors"] == 1
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
        assert process.returncode == 0, output
        assert "api-given" not in output
        assert info["env_secret"] not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
