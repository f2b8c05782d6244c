"""The targeting built for each rollout stage, checked as data and through the real FeatBit Python SDK."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

import pytest
from fbclient.common_types import FBUser
from fbclient.evaluator import Evaluator
from hypothesis import given, settings
from hypothesis import strategies as st

from airollout.featbit import (
    AUDIENCE_RULE_ID,
    GRANTED_RULE_ID,
    Exposure,
    VariationNotFound,
    build_targeting,
    fingerprint,
    targeting_of,
)

FLAG: dict[str, Any] = {
    "id": "5d3c7a2e-0000-4000-8000-000000000001",
    "key": "checkout-ai",
    "name": "Checkout AI",
    "variationType": "boolean",
    "variations": [
        {"id": "canary", "name": "canary", "value": "true"},
        {"id": "stable", "name": "stable", "value": "false"},
        {"id": "shadow", "name": "shadow", "value": "false"},
    ],
    "targetUsers": [],
    "rules": [],
    "isEnabled": True,
    "disabledVariationId": "stable",
    "fallthrough": {
        "dispatchKey": None,
        "includedInExpt": True,
        "variations": [{"id": "stable", "rollout": [0, 1], "exptRollout": 1}],
    },
    "exptIncludeAllTargets": True,
    "revision": "8c1d0e7a-0000-4000-8000-000000000002",
}
USERS = [f"user-{i}" for i in range(400)]
INTERNAL = {"id": "seg-internal", "included": ["user-7", "user-300"], "excluded": [], "rules": []}
BETA = {"id": "seg-beta", "included": [f"user-{i}" for i in range(0, 400, 2)], "excluded": [], "rules": []}

percentages = st.floats(min_value=0, max_value=100, allow_nan=False)
segment_ids = st.lists(st.text("abcdef0123456789-", min_size=1, max_size=12), max_size=3).map(tuple)
variation_ids = st.sampled_from(["canary", "stable", "shadow"])
foreign_rules = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "name": st.text(max_size=10),
            "dispatchKey": st.none(),
            "includedInExpt": st.booleans(),
            "conditions": st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.uuids().map(str),
                        "property": st.sampled_from(["country", "plan"]),
                        "op": st.just("Equal"),
                        "value": st.text(min_size=1, max_size=5),
                    }
                ),
                min_size=1,
                max_size=2,
            ),
            "variations": variation_ids.map(lambda v: [{"id": v, "rollout": [0, 1], "exptRollout": 1}]),
        }
    ),
    max_size=3,
)
target_users = st.lists(
    st.fixed_dictionaries(
        {"keyIds": st.lists(st.sampled_from(USERS), min_size=1, max_size=3), "variationId": variation_ids}
    ),
    max_size=2,
)
exposures = st.builds(Exposure, percentages, segment_ids, segment_ids)


def _build(flag: Mapping[str, Any], exposure: Exposure | None, **kwargs: Any) -> dict[str, Any]:
    return build_targeting(flag, exposure, candidate="canary", control="stable", **kwargs)


def _applied(flag: Mapping[str, Any], targeting: Mapping[str, Any]) -> dict[str, Any]:
    """The flag as FeatBit stores it after the PUT: JSON in, JSON out."""
    result: dict[str, Any] = json.loads(json.dumps({**flag, **targeting}))
    return result


def _served(
    flag: Mapping[str, Any],
    users: Iterable[str],
    segments: Iterable[Mapping[str, Any]] = (),
    **attributes: str,
) -> dict[str, str]:
    """Which variation the real SDK serves each user, as the SDK would after a data sync."""
    synced = {**_applied(flag, {}), "variationMap": {v["id"]: v["value"] for v in flag["variations"]}}
    by_id = {segment["id"]: segment for segment in segments}
    evaluator = Evaluator(lambda key: synced, by_id.get)
    return {user: evaluator.evaluate(synced, FBUser(user, user, **attributes)).id for user in users}


def _candidates(flag: Mapping[str, Any], **kwargs: Any) -> set[str]:
    return {user for user, variation in _served(flag, USERS, **kwargs).items() if variation == "canary"}


@given(percentages)
def test_fallthrough_ranges_cover_0_to_1_contiguously_with_the_candidate_first(percentage: float) -> None:
    variations = _build(FLAG, Exposure(percentage))["fallthrough"]["variations"]

    assert variations[0]["rollout"][0] == 0
    assert variations[-1]["rollout"][1] == 1
    for before, after in pairwise(variations):
        assert before["rollout"][1] == after["rollout"][0]
    assert all(v["rollout"][0] < v["rollout"][1] for v in variations)
    assert [v["id"] for v in variations] in (["canary", "stable"], ["canary"], ["stable"])
    assert all(v["exptRollout"] == 1 for v in variations)


@given(percentages)
def test_candidate_share_equals_the_percentage_to_four_decimals(percentage: float) -> None:
    variations = _build(FLAG, Exposure(percentage))["fallthrough"]["variations"]

    share = sum(v["rollout"][1] - v["rollout"][0] for v in variations if v["id"] == "canary")
    assert math.isclose(share * 100, percentage, abs_tol=0.005 + 1e-9)
    assert all(round(bound, 4) == bound for v in variations for bound in v["rollout"])


@pytest.mark.parametrize(("percentage", "served"), [(0, "stable"), (100, "canary")])
def test_0_and_100_percent_serve_one_variation_over_the_whole_range(percentage: float, served: str) -> None:
    fallthrough = _build(FLAG, Exposure(percentage))["fallthrough"]

    assert fallthrough["variations"] == [{"id": served, "rollout": [0, 1], "exptRollout": 1}]
    assert fallthrough["dispatchKey"] is None


def test_a_split_is_bucketed_on_the_dispatch_key() -> None:
    fallthrough = _build(FLAG, Exposure(50), dispatch_key="tenant")["fallthrough"]
    flag = _applied(FLAG, {"fallthrough": fallthrough})

    by_tenant = {_served(flag, ["user-0"], tenant=f"tenant-{i}")["user-0"] for i in range(100)}

    assert fallthrough["dispatchKey"] == "tenant"
    assert len(set(_served(flag, USERS, tenant="acme").values())) == 1
    assert by_tenant == {"canary", "stable"}


@settings(max_examples=60, deadline=None)
@given(percentages, percentages, segment_ids)
def test_users_served_the_candidate_keep_it_as_the_percentage_grows(
    first: float, second: float, granted: tuple[str, ...]
) -> None:
    low, high = sorted((first, second))
    at_low = _applied(FLAG, _build(FLAG, Exposure(low, granted)))
    at_high = _applied(at_low, _build(at_low, Exposure(high, granted)))

    assert _candidates(at_low) <= _candidates(at_high)


@pytest.mark.parametrize("percentage", [1, 5, 25, 50, 90])
def test_the_sdk_serves_the_candidate_to_about_the_percentage_of_users(percentage: float) -> None:
    flag = _applied(FLAG, _build(FLAG, Exposure(percentage)))
    users = [f"person-{i}" for i in range(4000)]

    served = _served(flag, users)

    share = sum(variation == "canary" for variation in served.values()) / len(users)
    assert abs(share * 100 - percentage) < 2.5


@given(foreign_rules, target_users, st.lists(st.one_of(st.none(), exposures), min_size=1, max_size=4))
def test_foreign_rules_and_target_users_survive_every_stage_ahead_of_the_operators_rules(
    rules: list[dict[str, Any]], targets: list[dict[str, Any]], stages: list[Exposure | None]
) -> None:
    flag = {**FLAG, "rules": rules, "targetUsers": targets}
    original = copy.deepcopy(flag)

    for exposure in stages:
        targeting = _build(flag, exposure)
        assert targeting["targetUsers"] == targets
        assert targeting["rules"][: len(rules)] == rules
        assert all(rule["id"] in (GRANTED_RULE_ID, AUDIENCE_RULE_ID) for rule in targeting["rules"][len(rules) :])
        flag = _applied(flag, targeting)

    assert original == {**FLAG, "rules": rules, "targetUsers": targets}


@given(foreign_rules, target_users, exposures)
def test_building_again_from_the_written_flag_changes_nothing(
    rules: list[dict[str, Any]], targets: list[dict[str, Any]], exposure: Exposure
) -> None:
    written = _applied(FLAG, _build({**FLAG, "rules": rules, "targetUsers": targets}, exposure))

    again = _build(written, exposure)

    assert again == _build(written, exposure)
    assert targeting_of(written) == targeting_of(again)
    assert fingerprint(written) == fingerprint(again)


def test_rolled_back_serves_everyone_the_control() -> None:
    exposed = _applied(FLAG, _build(FLAG, Exposure(50, ("seg-internal",), ("seg-beta",))))

    rolled_back = _applied(exposed, _build(exposed, None))

    assert rolled_back["rules"] == []
    assert set(_served(rolled_back, USERS, [INTERNAL, BETA]).values()) == {"stable"}


def test_rolled_back_keeps_a_humans_targeting() -> None:
    human_rule = {
        "id": "r-1",
        "name": "QA",
        "dispatchKey": None,
        "includedInExpt": False,
        "conditions": [{"id": "c-1", "property": "plan", "op": "Equal", "value": "qa"}],
        "variations": [{"id": "shadow", "rollout": [0, 1], "exptRollout": 1}],
    }
    flag = {**FLAG, "rules": [human_rule], "targetUsers": [{"keyIds": ["user-1"], "variationId": "canary"}]}

    rolled_back = _applied(flag, _build(flag, None))

    assert _served(rolled_back, ["user-1", "user-2"]) == {"user-1": "canary", "user-2": "stable"}
    assert _served(rolled_back, ["user-2"], plan="qa") == {"user-2": "shadow"}


@given(percentages)
def test_granted_segment_members_get_the_candidate_at_any_percentage(percentage: float) -> None:
    flag = _applied(FLAG, _build(FLAG, Exposure(percentage, granted_segment_ids=("seg-internal",))))

    served = _served(flag, ["user-7", "user-300"], [INTERNAL])

    assert set(served.values()) == {"canary"}


def test_the_percentage_applies_only_to_the_audience() -> None:
    flag = _applied(FLAG, _build(FLAG, Exposure(100, audience_segment_ids=("seg-beta",))))
    half = _applied(FLAG, _build(FLAG, Exposure(50, audience_segment_ids=("seg-beta",))))

    assert _candidates(flag, segments=[BETA]) == set(BETA["included"])
    assert _candidates(half, segments=[BETA]) < set(BETA["included"])
    assert len(_candidates(half, segments=[BETA])) > 0


def test_segment_rules_use_the_condition_shape_the_sdks_understand() -> None:
    rules = _build(FLAG, Exposure(5, ("seg-internal", "seg-qa"), ("seg-beta",)))["rules"]

    assert [rule["id"] for rule in rules] == [GRANTED_RULE_ID, AUDIENCE_RULE_ID]
    granted, audience = (rule["conditions"] for rule in rules)
    assert granted == [
        {
            "id": "airollout-granted-segments",
            "property": "User is in segment",
            "op": None,
            "value": '["seg-internal", "seg-qa"]',
        }
    ]
    assert json.loads(audience[0]["value"]) == ["seg-beta"]
    assert rules[0]["variations"] == [{"id": "canary", "rollout": [0, 1], "exptRollout": 1}]
    assert [v["rollout"] for v in rules[1]["variations"]] == [[0, 0.05], [0.05, 1]]
    assert not any(rule["includedInExpt"] for rule in rules)


def test_the_flags_experiment_setting_is_kept() -> None:
    targeting = _build({**FLAG, "exptIncludeAllTargets": False}, Exposure(5))

    assert targeting["exptIncludeAllTargets"] is False
    assert set(targeting) == {"targetUsers", "rules", "fallthrough", "exptIncludeAllTargets"}


@pytest.mark.parametrize(("candidate", "control", "missing"), [("canry", "stable", "canry"), ("canary", "old", "old")])
def test_an_unknown_variation_is_named_with_the_flags_variation_ids(candidate: str, control: str, missing: str) -> None:
    with pytest.raises(VariationNotFound) as caught:
        build_targeting(FLAG, Exposure(5), candidate=candidate, control=control)

    message = str(caught.value)
    assert repr(missing) in message
    assert all(repr(v) in message for v in ("canary", "stable", "shadow"))
    assert "checkout-ai" in message
    assert isinstance(caught.value, ValueError)


def test_the_candidate_and_control_must_differ() -> None:
    with pytest.raises(ValueError, match="different"):
        build_targeting(FLAG, Exposure(5), candidate="canary", control="canary")


@pytest.mark.parametrize("percentage", [-0.1, 100.01, math.nan, math.inf])
def test_an_exposure_outside_0_to_100_percent_is_refused(percentage: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        Exposure(percentage)


@pytest.mark.parametrize("ids", [("",), (" ",), "seg-internal"])
def test_an_exposure_needs_real_segment_ids(ids: Any) -> None:
    with pytest.raises(ValueError, match="segment ids"):
        Exposure(5, granted_segment_ids=ids)


def test_targeting_of_ignores_representation_noise() -> None:
    written = _applied(FLAG, _build(FLAG, Exposure(25, ("seg-internal",))))
    noisy = copy.deepcopy(written)
    noisy["targetUsers"] = None
    noisy["fallthrough"]["variations"].insert(0, {"id": "shadow", "rollout": [0, 0], "exptRollout": 1})
    noisy["fallthrough"]["variations"][1]["exptRollout"] = 1.0
    noisy["rules"][0]["conditions"][0]["id"] = "renumbered"
    noisy["rules"][0]["conditions"][0]["op"] = ""
    noisy["rules"][0]["dispatchKey"] = "keyId"
    noisy["unrelated"] = "field"

    assert targeting_of(noisy) == targeting_of(written)
    assert fingerprint(noisy) == fingerprint(written)


def test_fingerprint_tells_apart_what_changes_who_is_served_what() -> None:
    human = {"id": "r-1", "name": "QA", "conditions": [], "variations": []}
    base = {**FLAG, "rules": [human]}
    at_5 = _build(base, Exposure(5, ("seg-internal",)))
    reordered = {**at_5, "rules": list(reversed(at_5["rules"]))}

    assert fingerprint(at_5) != fingerprint(_build(base, Exposure(6, ("seg-internal",))))
    assert fingerprint(at_5) != fingerprint(reordered)
    assert fingerprint(at_5) != fingerprint(_build(base, Exposure(5, ("seg-qa",))))
    assert fingerprint(at_5) != fingerprint(_build(base, None))
    assert len(fingerprint(at_5)) == 16


def test_an_odd_rule_someone_else_wrote_is_carried_and_compared_without_failing() -> None:
    odd = {"id": "r-odd", "name": "odd", "conditions": [], "variations": [{"id": "canary", "rollout": [0.5]}]}
    flag = {**FLAG, "rules": [odd]}

    targeting = _build(flag, Exposure(5))

    assert targeting["rules"] == [odd]
    assert targeting_of(_applied(flag, targeting)) == targeting_of(targeting)
