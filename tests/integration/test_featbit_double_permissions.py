"""The double refuses what FeatBit refuses: a token's policy decides 403 per permission, on exactly the
routes that need it (featbit-api.md §1.2-1.4, §3.5), including `PUT .../targeting`, where FeatBit picks
the permissions by diffing the old and new targeting; and the control API that mints such tokens."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from tests.integration.test_featbit_double import audit, failed, ok, targeting_body

FLAG_PERMISSIONS = (
    "CanAccessEnv",
    "ToggleFlag",
    "UpdateFlagDefaultRule",
    "UpdateFlagTargetingRules",
    "UpdateFlagIndividualTargeting",
)
"""The permissions a rollout needs, each of which a test takes away in turn."""

Client = Callable[[str], httpx.Client]


@pytest.fixture
def client(featbit_double: FeatBitDouble) -> Iterator[Client]:
    """Opens HTTP clients on the double's environment routes, each authenticated with a given token."""
    opened: list[httpx.Client] = []

    def open_with(token: str) -> httpx.Client:
        opened.append(
            httpx.Client(
                base_url=f"{featbit_double.api_url}/api/v1/envs/{featbit_double.env_id}",
                headers={"Authorization": token},
                timeout=5.0,
            )
        )
        return opened[-1]

    yield open_with
    for each in opened:
        each.close()


def internal_rule(rule_id: str = "internal") -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "dispatchKey": None,
        "includedInExpt": False,
        "conditions": [{"id": f"{rule_id}-c", "property": "keyId", "op": "EndsWith", "value": "@example.com"}],
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }


def targeting_of(flag: dict[str, Any]) -> dict[str, Any]:
    return {
        part: copy.deepcopy(flag[part]) for part in ("targetUsers", "rules", "fallthrough", "exptIncludeAllTargets")
    }


def with_fallthrough_at(targeting: dict[str, Any], share: float) -> dict[str, Any]:
    return {
        **targeting,
        "fallthrough": {
            "dispatchKey": "keyId",
            "includedInExpt": True,
            "variations": [
                {"id": "canary", "rollout": [0, share], "exptRollout": 1},
                {"id": "stable", "rollout": [share, 1], "exptRollout": 1},
            ],
        },
    }


# ---- one request per permission: what each route needs -------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request on a flag of its own, and the permission FeatBit asks for it (None: only a valid token)."""

    name: str
    needs: str | None
    send: Callable[[httpx.Client, dict[str, Any]], httpx.Response]


def _put_targeting(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., httpx.Response]:
    def send(api: httpx.Client, flag: dict[str, Any]) -> httpx.Response:
        body = targeting_body(flag["revision"], change(targeting_of(flag)), comment="probe")
        return api.put(f"/feature-flags/{flag['key']}/targeting", json=body)

    return send


PROBES = (
    Probe("list flags", "CanAccessEnv", lambda api, flag: api.get("/feature-flags")),
    Probe("read flag", "CanAccessEnv", lambda api, flag: api.get(f"/feature-flags/{flag['key']}")),
    Probe("list segments", "CanAccessEnv", lambda api, flag: api.get("/segments")),
    Probe("toggle", "ToggleFlag", lambda api, flag: api.put(f"/feature-flags/{flag['key']}/toggle/false")),
    Probe("default rule", "UpdateFlagDefaultRule", _put_targeting(lambda t: with_fallthrough_at(t, 0.25))),
    Probe("rules", "UpdateFlagTargetingRules", _put_targeting(lambda t: {**t, "rules": [internal_rule()]})),
    Probe(
        "target users",
        "UpdateFlagIndividualTargeting",
        _put_targeting(lambda t: {**t, "targetUsers": [{"variationId": "canary", "keyIds": ["qa-1"]}]}),
    ),
    Probe("unchanged targeting", None, _put_targeting(lambda t: t)),
    Probe("audit log", None, lambda api, flag: api.get("/audit-logs")),
    Probe(
        "json patch",
        None,
        lambda api, flag: api.patch(
            f"/feature-flags/{flag['key']}", json=[{"op": "add", "path": "/tags/-", "value": "x"}]
        ),
    ),
)


@pytest.mark.parametrize("missing", FLAG_PERMISSIONS)
def test_a_missing_permission_is_forbidden_on_exactly_the_routes_that_need_it(
    featbit_double: FeatBitDouble, client: Client, missing: str
) -> None:
    api = client(featbit_double.mint_token(f"without-{missing}", deny=[missing]))
    answers: dict[str, int] = {}
    for index, probe in enumerate(PROBES):
        flag = featbit_double.create_flag(key=f"flag-{index}", is_enabled=True)
        response = probe.send(api, flag)
        answers[probe.name] = response.status_code
        if response.status_code == 403:
            assert response.json() == {"success": False, "errors": ["Forbidden"], "data": None}
            assert featbit_double.get_flag(flag["key"]) == flag, f"{probe.name} changed the flag although refused"
        else:
            assert response.json()["success"] is True, (probe.name, response.text)
    assert answers == {probe.name: 403 if probe.needs == missing else 200 for probe in PROBES}


def test_a_targeting_write_needs_every_permission_its_diff_touches(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=True)
    both = with_fallthrough_at({**targeting_of(flag), "rules": [internal_rule()]}, 0.05)
    for lacking in ("UpdateFlagDefaultRule", "UpdateFlagTargetingRules"):
        api = client(featbit_double.mint_token(f"without-{lacking}", deny=[lacking]))
        failed(
            api.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], both)),
            403,
            "Forbidden",
        )
    # An allow-list grants only what it names, as FeatBit's statements do: these two are enough here.
    exact = client(featbit_double.mint_token("exact", allow=["UpdateFlagDefaultRule", "UpdateFlagTargetingRules"]))
    ok(exact.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], both)))
    failed(exact.get("/feature-flags/ai-summary"), 403, "Forbidden")


def _rule_edits() -> dict[str, Callable[[dict[str, Any]], None]]:
    def rename(rule: dict[str, Any]) -> None:
        rule["name"] = "renamed"

    def add_condition(rule: dict[str, Any]) -> None:
        rule["conditions"].append({"id": "c2", "property": "country", "op": "Equal", "value": "fr"})

    def change_condition(rule: dict[str, Any]) -> None:
        rule["conditions"][0]["value"] = "@example.org"

    def change_serve(rule: dict[str, Any]) -> None:
        rule["variations"] = [{"id": "stable", "rollout": [0, 1], "exptRollout": 1}]

    def set_dispatch_key(rule: dict[str, Any]) -> None:
        rule["dispatchKey"] = "country"

    return {f.__name__: f for f in (rename, add_condition, change_condition, change_serve, set_dispatch_key)}


@pytest.mark.parametrize("edit", sorted(_rule_edits()))
def test_every_kind_of_rule_edit_needs_the_targeting_rules_permission(
    featbit_double: FeatBitDouble, client: Client, edit: str
) -> None:
    featbit_double.create_flag(key="ai-summary", is_enabled=True)
    own = client(featbit_double.token)
    flag = featbit_double.get_flag("ai-summary")
    ok(
        own.put(
            "/feature-flags/ai-summary/targeting",
            json=targeting_body(flag["revision"], {**targeting_of(flag), "rules": [internal_rule()]}),
        )
    )
    flag = featbit_double.get_flag("ai-summary")
    edited = targeting_of(flag)
    _rule_edits()[edit](edited["rules"][0])
    api = client(featbit_double.mint_token("no-rules", deny=["UpdateFlagTargetingRules"]))
    failed(
        api.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], edited)), 403, "Forbidden"
    )


def _blind_spots() -> dict[str, Callable[[dict[str, Any]], None]]:
    def expt_include_all_targets(targeting: dict[str, Any]) -> None:
        targeting["exptIncludeAllTargets"] = False

    def included_in_expt(targeting: dict[str, Any]) -> None:
        targeting["fallthrough"]["includedInExpt"] = not targeting["fallthrough"]["includedInExpt"]

    def dispatch_key_cleared(targeting: dict[str, Any]) -> None:
        targeting["fallthrough"]["dispatchKey"] = None

    def rules_reordered(targeting: dict[str, Any]) -> None:
        targeting["rules"].reverse()

    def segment_values_reordered(targeting: dict[str, Any]) -> None:
        condition = targeting["rules"][0]["conditions"][0]
        condition["value"] = json.dumps(list(reversed(json.loads(condition["value"]))))

    return {
        f.__name__: f
        for f in (
            expt_include_all_targets,
            included_in_expt,
            dispatch_key_cleared,
            rules_reordered,
            segment_values_reordered,
        )
    }


@pytest.mark.parametrize("change", sorted(_blind_spots()))
def test_changes_featbits_comparer_does_not_see_need_no_permission(
    featbit_double: FeatBitDouble, client: Client, change: str
) -> None:
    featbit_double.create_flag(key="ai-summary", is_enabled=True)
    segments = [featbit_double.create_segment(key=key)["id"] for key in ("internal", "beta")]
    in_segments = {
        "id": "in-segments",
        "name": "in segments",
        "dispatchKey": None,
        "includedInExpt": False,
        "conditions": [{"id": "s", "property": "User is in segment", "op": None, "value": json.dumps(segments)}],
        "variations": [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}],
    }
    flag = featbit_double.get_flag("ai-summary")
    start = with_fallthrough_at({**targeting_of(flag), "rules": [in_segments, internal_rule()]}, 0.25)
    ok(
        client(featbit_double.token).put(
            "/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], start)
        )
    )
    flag = featbit_double.get_flag("ai-summary")
    changed = targeting_of(flag)
    _blind_spots()[change](changed)
    assert changed != targeting_of(flag)
    nothing = client(featbit_double.mint_token("nothing", allow=[]))
    ok(nothing.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], changed)))
    assert targeting_of(featbit_double.get_flag("ai-summary")) == changed


def test_unknown_flag_and_stale_revision_are_found_before_the_permission_check(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary", is_enabled=True)
    nothing = client(featbit_double.mint_token("nothing", allow=[]))
    change = with_fallthrough_at(targeting_of(flag), 0.5)
    failed(
        nothing.put("/feature-flags/nope/targeting", json=targeting_body(flag["revision"], change)),
        404,
        "ResourceNotFound",
    )
    ok(client(featbit_double.token).put("/feature-flags/ai-summary/toggle/false"))
    failed(
        nothing.put("/feature-flags/ai-summary/targeting", json=targeting_body(flag["revision"], change)),
        409,
        "Conflict",
    )
    # A null list makes FeatBit's diff throw before it can ask for anything.
    fresh = featbit_double.get_flag("ai-summary")["revision"]
    failed(
        nothing.put("/feature-flags/ai-summary/targeting", json=targeting_body(fresh, {**change, "rules": None})),
        500,
        "InternalServerError",
    )


@pytest.mark.parametrize(
    ("missing", "route", "body"),
    [
        ("CreateFlag", "/feature-flags", {"name": "x", "key": "x", "variationType": "boolean"}),
        ("UpdateFlagOffVariation", "/feature-flags/ai-summary/off-variation", {"offVariationId": "canary"}),
        ("UpdateFlagVariations", "/feature-flags/ai-summary/variations", {"variations": []}),
        ("ArchiveFlag", "/feature-flags/ai-summary/archive", None),
        (
            "CreateSegment",
            "/segments",
            {"type": "environment-specific", "name": "s", "key": "s", "scopes": ["organization/x"]},
        ),
    ],
)
def test_other_permission_attributes_are_checked_before_the_body_is_read(
    featbit_double: FeatBitDouble, client: Client, missing: str, route: str, body: dict[str, Any] | None
) -> None:
    featbit_double.create_flag(key="ai-summary")
    api = client(featbit_double.mint_token(f"without-{missing}", deny=[missing]))
    send = api.post if route in ("/feature-flags", "/segments") else api.put
    # 403 whatever the body holds: FeatBit checks the attribute before it binds or validates the body.
    failed(send(route, json=body), 403, "Forbidden")
    assert featbit_double.get_flag("ai-summary")["isArchived"] is False


def test_segment_targeting_needs_the_permission_of_what_it_changes(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    segment = featbit_double.create_segment(key="internal")
    rule = {
        "id": "r",
        "name": "staff",
        "conditions": [{"id": "c", "property": "keyId", "op": "EndsWith", "value": "@x"}],
    }
    no_users = client(featbit_double.mint_token("no-users", deny=["UpdateSegmentTargetingUsers"]))
    no_rules = client(featbit_double.mint_token("no-rules", deny=["UpdateSegmentRules"]))
    path = f"/segments/{segment['id']}/targeting"
    users = {"included": ["qa-1"], "excluded": [], "rules": []}
    failed(no_users.put(path, json=users), 403, "Forbidden")
    ok(no_rules.put(path, json=users))
    failed(no_rules.put(path, json={**users, "rules": [rule]}), 403, "Forbidden")
    ok(no_users.put(path, json={**users, "rules": [rule]}))
    after = ok(client(featbit_double.token).get(f"/segments/{segment['id']}"))
    assert (after["included"], [r["id"] for r in after["rules"]]) == (["qa-1"], ["r"])


def test_project_list_shows_only_what_the_policy_lets_the_token_access(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    projects = f"{featbit_double.api_url}/api/v1/projects"
    [project] = ok(client(featbit_double.token).get(projects))
    assert [env["id"] for env in project["environments"]] == [featbit_double.env_id]
    [hidden_env] = ok(client(featbit_double.mint_token("no-env", deny=["CanAccessEnv"])).get(projects))
    assert (hidden_env["id"], hidden_env["environments"]) == (project["id"], [])
    assert ok(client(featbit_double.mint_token("no-project", deny=["CanAccessProject"])).get(projects)) == []


def test_writes_are_audited_under_the_name_of_the_token_that_made_them(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    flag = featbit_double.create_flag(key="ai-summary")
    ok(client(featbit_double.mint_token("release-bot")).put("/feature-flags/ai-summary/toggle/true"))
    [toggle, create] = audit(client(featbit_double.token), flag["id"])
    assert (toggle["creatorName"], toggle["creatorEmail"]) == ("release-bot", "Access token")
    assert create["creatorName"] == featbit_double.config.token_name


def test_a_policy_changed_in_python_applies_from_the_next_request(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    featbit_double.create_flag(key="ai-summary")
    token = featbit_double.mint_token("ops", deny=["ToggleFlag"])
    api = client(token)
    failed(api.put("/feature-flags/ai-summary/toggle/true"), 403, "Forbidden")
    featbit_double.set_token_policy(token)
    ok(api.put("/feature-flags/ai-summary/toggle/true"))
    featbit_double.set_token_policy(featbit_double.token, deny=["CanAccessEnv"])
    failed(client(featbit_double.token).get("/feature-flags"), 403, "Forbidden")
    with pytest.raises(ValueError, match="FlipFlag"):
        featbit_double.mint_token("typo", deny=["FlipFlag"])


def test_tokens_are_minted_and_repoliced_over_the_control_api_with_the_own_token_only(
    featbit_double: FeatBitDouble, client: Client
) -> None:
    featbit_double.create_flag(key="ai-summary")
    admin = f"{featbit_double.api_url}/_double/tokens"
    own = {"Authorization": featbit_double.token}
    minted = httpx.post(admin, json={"name": "ci", "deny": ["ToggleFlag"]}, headers=own).json()
    assert (minted["name"], minted["allow"], minted["deny"]) == ("ci", ["*"], ["ToggleFlag"])
    token = minted["token"]
    assert token.startswith("api-")
    failed(client(token).put("/feature-flags/ai-summary/toggle/true"), 403, "Forbidden")
    # A token under test cannot widen its own policy.
    assert httpx.post(f"{admin}/policy", json={"token": token}, headers={"Authorization": token}).status_code == 403
    widened = httpx.post(f"{admin}/policy", json={"token": token, "allow": ["*"]}, headers=own)
    assert widened.json()["deny"] == []
    ok(client(token).put("/feature-flags/ai-summary/toggle/true"))
    assert httpx.post(admin, json={"name": "x", "allow": ["FlipFlag"]}, headers=own).status_code == 400
    assert httpx.post(admin, json={"allow": ["*"]}, headers=own).status_code == 400
    assert httpx.post(f"{admin}/policy", json={"token": "api-unknown"}, headers=own).status_code == 404
    featbit_double.set_token_policy(featbit_double.token, deny=["*"])
    assert httpx.post(f"{featbit_double.api_url}/_double/reset", headers=own).status_code == 204
    failed(client(token).get("/feature-flags"), 401, "Unauthorized")
    ok(client(featbit_double.token).get("/feature-flags"))
