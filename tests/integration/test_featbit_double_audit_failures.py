"""Commit, then 500: a write whose audit-log insert fails, as on FeatBit with PostgreSQL.

FeatBit saves the flag, then inserts the audit entry, then publishes the change to SDKs. When the insert
fails (a comment longer than `audit_logs.comment` varchar(512), or any other audit failure), the change
stays saved, the request answers 500, and no SDK hears of it until a later change or a reconnect. These
tests hold the double to that, through the management API and FeatBit's own SDK.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fbclient import FBClient

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.waiting import wait_for
from tests.integration.test_featbit_double import CANARY_AT_25, audit, failed, ok, targeting_body

FLAG = "ai-summary"
USER = {"key": "user-1", "name": "user-1"}
STABLE_TO_ALL = {
    **CANARY_AT_25,
    "fallthrough": {
        "dispatchKey": None,
        "includedInExpt": True,
        "variations": [{"id": "stable", "rollout": [0, 1], "exptRollout": 1}],
    },
}
"""A targeting change the SDK shows at once: the default rule moves everyone from `canary` to `stable`."""


@pytest.fixture
def api(featbit_double: FeatBitDouble) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}",
        headers={"Authorization": featbit_double.token},
        timeout=5.0,
    ) as client:
        yield client


def put_targeting(api: httpx.Client, targeting: dict[str, Any], comment: str = "rollout step") -> httpx.Response:
    revision = ok(api.get(f"/feature-flags/{FLAG}"))["revision"]
    return api.put(f"/feature-flags/{FLAG}/targeting", json=targeting_body(revision, targeting, comment))


def served(client: FBClient, flag: str = FLAG) -> str | None:
    variation: str | None = client.variation_detail(flag, USER, None).variation_id
    return variation


WRITES: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "targeting": lambda api: put_targeting(api, STABLE_TO_ALL),
    "toggle": lambda api: api.put(f"/feature-flags/{FLAG}/toggle/false", json={"comment": "kill"}),
    "off-variation": lambda api: api.put(
        f"/feature-flags/{FLAG}/off-variation",
        json={"revision": ok(api.get(f"/feature-flags/{FLAG}"))["revision"], "offVariationId": "canary"},
    ),
    "archive": lambda api: api.put(f"/feature-flags/{FLAG}/archive"),
    "json-patch": lambda api: api.patch(
        f"/feature-flags/{FLAG}", json=[{"op": "add", "path": "/tags/-", "value": "x"}]
    ),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_whose_audit_insert_fails_is_saved_and_answers_500_with_no_audit_entry(
    featbit_double: FeatBitDouble, api: httpx.Client, write: str
) -> None:
    before = featbit_double.create_flag(key=FLAG, is_enabled=True)
    featbit_double.faults.audit_failures = 1
    failed(WRITES[write](api), 500, "InternalServerError")
    after = ok(api.get(f"/feature-flags/{FLAG}"))
    assert after["revision"] != before["revision"]
    assert after["updatedAt"] > before["updatedAt"]
    assert [entry["operation"] for entry in audit(api, before["id"])] == ["Create"]
    assert featbit_double.faults.audit_failures == 0


@pytest.mark.parametrize("cause", ["fault", "comment-of-513-characters"])
def test_the_sdk_hears_of_a_change_whose_audit_failed_only_with_the_next_change(
    featbit_double: FeatBitDouble, api: httpx.Client, featbit_client: Callable[..., FBClient], cause: str
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    client = featbit_client()
    assert served(client) == "canary"
    comment = "x" * 513 if cause != "fault" else "rollout step"
    featbit_double.faults.audit_failures = int(cause == "fault")
    failed(put_targeting(api, STABLE_TO_ALL, comment), 500, "InternalServerError")
    assert featbit_double.get_flag(FLAG)["fallthrough"] == STABLE_TO_ALL["fallthrough"]
    # Pushes arrive in order: once a later change has reached the SDK, a push of the first would have too.
    featbit_double.create_flag(key="barrier")
    wait_for("the next push to reach the SDK", lambda: served(client, "barrier") is not None, timeout=10)
    assert served(client) == "canary"
    # The next change to the flag, even one that changes nothing, carries the whole flag.
    ok(put_targeting(api, STABLE_TO_ALL))
    wait_for("the SDK to serve the saved change", lambda: served(client) == "stable", timeout=10)


def test_a_reconnecting_sdk_catches_up_on_a_change_whose_audit_failed(
    featbit_double: FeatBitDouble, api: httpx.Client, featbit_client: Callable[..., FBClient]
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    client = featbit_client()
    featbit_double.faults.audit_failures = 1
    failed(put_targeting(api, STABLE_TO_ALL), 500, "InternalServerError")
    time.sleep(1.0)  # ample for a push over loopback, had there been one
    assert served(client) == "canary"
    featbit_double.drop_streaming_connections()
    wait_for("the SDK to resync", lambda: served(client) == "stable", timeout=15)
    assert len(featbit_double.data_sync_timestamps) == 2


@pytest.mark.parametrize(("length", "status"), [(512, 200), (513, 500)])
def test_a_comment_is_stored_up_to_512_characters_and_a_longer_one_fails_after_saving(
    featbit_double: FeatBitDouble, api: httpx.Client, length: int, status: int
) -> None:
    flag = featbit_double.create_flag(key=FLAG, is_enabled=True)
    # PostgreSQL counts varchar lengths in characters, not bytes: 512 two-byte characters still fit.
    response = api.put(f"/feature-flags/{FLAG}/toggle/false", json={"comment": "é" * length})
    assert response.status_code == status, response.text
    assert featbit_double.get_flag(FLAG)["isEnabled"] is False
    comments = [entry["comment"] for entry in audit(api, flag["id"])]
    assert comments == (["é" * 512, ""] if status == 200 else [""])


def test_retrying_a_request_that_answered_500_finds_its_change_already_saved(
    featbit_double: FeatBitDouble, api: httpx.Client
) -> None:
    flag = featbit_double.create_flag(key=FLAG, is_enabled=True)
    body = targeting_body(flag["revision"], STABLE_TO_ALL, "rollout step")
    featbit_double.faults.audit_failures = 3
    failed(api.put(f"/feature-flags/{FLAG}/targeting", json=body), 500, "InternalServerError")
    # The same body again: its revision is stale now, and a refused request does not use up a failure.
    failed(api.put(f"/feature-flags/{FLAG}/targeting", json=body), 409, "Conflict")
    failed(api.put(f"/feature-flags/{FLAG}/toggle/false"), 500, "InternalServerError")
    # A toggle to the state the flag is already in changes nothing, so nothing can fail.
    revision = ok(api.put(f"/feature-flags/{FLAG}/toggle/false"))
    assert revision == featbit_double.get_flag(FLAG)["revision"]
    assert featbit_double.faults.audit_failures == 1
    assert [entry["operation"] for entry in audit(api, flag["id"])] == ["Create"]


def test_audit_failures_are_set_over_the_fault_api(featbit_double: FeatBitDouble, api: httpx.Client) -> None:
    featbit_double.create_flag(key=FLAG)
    faults = f"{featbit_double.api_url}/_double/faults"
    own = {"Authorization": featbit_double.token}
    assert httpx.post(faults, json={"auditFailures": 1}, headers=own).json()["auditFailures"] == 1
    failed(api.put(f"/feature-flags/{FLAG}/toggle/true"), 500, "InternalServerError")
    assert httpx.get(faults, headers=own).json()["auditFailures"] == 0
    assert httpx.post(faults, json={"auditFailures": 0.5}, headers=own).status_code == 400
