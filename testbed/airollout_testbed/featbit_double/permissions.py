"""What FeatBit asks of an access token before it acts, and whether a token's policy allows it.

Most management routes carry one permission attribute (`[Authorize(Permissions.ToggleFlag)]`), checked
before the request body is even read. `PUT .../targeting` carries none: FeatBit applies the new targeting,
diffs it against the old (`FlagComparer`, `SegmentComparer`) and asks for one permission per kind of change
(featbit-api.md §3.5). A write that changes the default rule needs `UpdateFlagDefaultRule`, one that changes
rules needs `UpdateFlagTargetingRules`, one that changes target users needs `UpdateFlagIndividualTargeting`,
and one that changes nothing needs nothing. The diff here is the port of those comparers as far as they
decide permissions, blind spots included: `includedInExpt` and `exptIncludeAllTargets` are never compared,
a dispatch key cleared to null is no change, and target users of a variation the flag lacks are not looked
at. Where FeatBit's comparer would throw (a null list, a rollout without two bounds, a segment condition
whose value is not a JSON list of strings) `Uncomparable` is raised, and the request answers 500 as it does.

Policies are FeatBit's `PolicyStatement`s without resource patterns: the double serves one environment, so
a statement is an effect and a set of actions. FeatBit's rule (`PolicyHelper.IsAllowed`) applies: a
permission no statement mentions is denied, and one a deny statement mentions is denied whatever allows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airollout_testbed.featbit_double.model import SEGMENT_CONDITION_PROPERTIES, JsonObject

__all__ = [
    "ALL_ACTIONS",
    "PERMISSIONS",
    "Policy",
    "Uncomparable",
    "flag_targeting_permissions",
    "segment_targeting_permissions",
]

ALL_ACTIONS = "*"
"""The action that stands for every permission in a statement, as in FeatBit."""

PERMISSIONS = frozenset(
    {
        # Workspaces and IAM
        "UpdateWorkspaceGeneralSettings",
        "UpdateWorkspaceLicense",
        "UpdateWorkspaceSSOSettings",
        "CanManageIAM",
        # Projects
        "CanAccessProject",
        "CreateProject",
        "DeleteProject",
        "UpdateProjectSettings",
        # Environments
        "CanAccessEnv",
        "CreateEnv",
        "DeleteEnv",
        "UpdateEnvSettings",
        "DeleteEnvSecret",
        "CreateEnvSecret",
        "UpdateEnvSecret",
        # Flags
        "CreateFlag",
        "ArchiveFlag",
        "RestoreFlag",
        "DeleteFlag",
        "CloneFlag",
        "CopyFlagTo",
        "ToggleFlag",
        "UpdateFlagName",
        "UpdateFlagDescription",
        "UpdateFlagOffVariation",
        "UpdateFlagVariations",
        "UpdateFlagTags",
        "UpdateFlagDefaultRule",
        "UpdateFlagIndividualTargeting",
        "UpdateFlagTargetingRules",
        # Segments
        "CreateSegment",
        "ArchiveSegment",
        "RestoreSegment",
        "DeleteSegment",
        "UpdateSegmentName",
        "UpdateSegmentDescription",
        "UpdateSegmentTags",
        "UpdateSegmentTargetingUsers",
        "UpdateSegmentRules",
    }
)
"""Every permission FeatBit defines (`Domain/Policies/Permissions.cs`); a policy may name only these."""

_MULTI_VALUE_OPS = ("IsOneOf", "NotOneOf")
_ROLLOUT_TOLERANCE = 0.00001  # RolloutVariation.IsRolloutEquals


class Uncomparable(ValueError):
    """FeatBit's comparer would throw on this change, which FeatBit answers with a 500."""


def _actions(actions: Iterable[str]) -> frozenset[str]:
    if isinstance(actions, str):
        raise TypeError("actions are a collection of permission names, not one string")
    named = frozenset(actions)
    unknown = sorted(named - PERMISSIONS - {ALL_ACTIONS})
    if unknown:
        raise ValueError(f"FeatBit defines no permission {', '.join(map(repr, unknown))}")
    return named


@dataclass(frozen=True)
class Policy:
    """An access token's statements: actions allowed and actions denied, across the environment."""

    allow: frozenset[str] = frozenset({ALL_ACTIONS})
    deny: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, allow: Iterable[str] = (ALL_ACTIONS,), deny: Iterable[str] = ()) -> Policy:
        """A policy from permission names (or `"*"`); unknown names raise `ValueError`."""
        return cls(allow=_actions(allow), deny=_actions(deny))

    def grants(self, permission: str) -> bool:
        allowed = ALL_ACTIONS in self.allow or permission in self.allow
        denied = ALL_ACTIONS in self.deny or permission in self.deny
        return allowed and not denied

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": sorted(self.allow), "deny": sorted(self.deny)}


# ---- walking what FeatBit walks -----------------------------------------------------------------


def _walk(items: Sequence[Any] | None) -> Sequence[Any]:
    """A list the comparer iterates: null, or a null element it dereferences, makes it throw."""
    if items is None or any(item is None for item in items):
        raise Uncomparable("a targeting collection or one of its items is null")
    return items


def _ids(items: Sequence[JsonObject]) -> set[Any]:
    return {item["id"] for item in items}


def _first(items: Sequence[JsonObject], item_id: Any) -> JsonObject:
    return next(item for item in items if item["id"] == item_id)


def _bound(rollout: Sequence[Any] | None, index: int) -> float:
    if rollout is None or len(rollout) <= index:
        raise Uncomparable("a rollout without two bounds")
    value: float = rollout[index]
    return value


def _rollouts_differ(original: Sequence[JsonObject] | None, current: Sequence[JsonObject] | None) -> bool:
    """`FlagComparer.CompareRolloutVariations`: count, ids missing from `current`, then bounds in order."""
    original, current = _walk(original), _walk(current)
    if len(original) != len(current) or _ids(original) - _ids(current):
        return True
    return any(
        abs(_bound(a["rollout"], i) - _bound(b["rollout"], i)) >= _ROLLOUT_TOLERANCE
        for a, b in zip(original, current, strict=True)
        for i in (0, 1)
    )


def _dispatch_key_set(original: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    # FeatBit records a dispatch key change only when the new key is not null.
    return current["dispatchKey"] is not None and original["dispatchKey"] != current["dispatchKey"]


def _json_strings(value: Any) -> list[str | None]:
    """`JsonSerializer.Deserialize<List<string>>`, which throws on anything but a JSON list of strings."""
    try:
        values = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or any(v is not None and not isinstance(v, str) for v in values):
        raise Uncomparable("a condition value that is not a JSON list of strings")
    return values


def _condition_changed(original: JsonObject, current: JsonObject) -> bool:
    """`CompareCondition`: segment and multi-value conditions compare their values as sets."""
    same_property = original["property"] == current["property"]
    values_compared = same_property and original["value"] != current["value"]
    if (values_compared and original["property"] in SEGMENT_CONDITION_PROPERTIES) or (
        values_compared and original["op"] == current["op"] and original["op"] in _MULTI_VALUE_OPS
    ):
        return set(_json_strings(original["value"])) != set(_json_strings(current["value"]))
    return any(original[part] != current[part] for part in ("property", "op", "value"))


def _rule_changed(original: JsonObject, current: JsonObject, *, serves: bool) -> bool:
    """`CompareRule`: name, conditions by id, and for a flag's rules what they serve."""
    if original["name"] != current["name"]:
        return True
    before, after = _walk(original["conditions"]), _walk(current["conditions"])
    if _ids(before) != _ids(after):
        return True
    if any(_condition_changed(_first(before, c["id"]), _first(after, c["id"])) for c in before):
        return True
    return serves and (
        _rollouts_differ(original["variations"], current["variations"]) or _dispatch_key_set(original, current)
    )


def _rules_changed(
    original: Sequence[JsonObject] | None, current: Sequence[JsonObject] | None, *, serves: bool
) -> bool:
    """`CompareRules`: rules are matched by id, so a reordering alone is no change."""
    original, current = _walk(original), _walk(current)
    if not original or not current:
        return bool(original) != bool(current)
    if _ids(original) != _ids(current):
        return True
    return any(_rule_changed(_first(original, r["id"]), _first(current, r["id"]), serves=serves) for r in original)


def _keys(target: JsonObject | None) -> list[Any]:
    return list((target or {}).get("keyIds") or ())


def _target_users_changed(
    variations: Sequence[JsonObject], original: Sequence[JsonObject] | None, current: Sequence[JsonObject] | None
) -> bool:
    """`CompareTargetUsers`: per variation of the flag, the first entry serving it, compared as key sets."""
    original, current = _walk(original), _walk(current)
    for variation in variations:
        before = _keys(next((t for t in original if t["variationId"] == variation["id"]), None))
        after = _keys(next((t for t in current if t["variationId"] == variation["id"]), None))
        if set(before) != set(after):
            return True
    return False


def flag_targeting_permissions(flag: JsonObject, targeting: JsonObject | None) -> frozenset[str]:
    """The permissions FeatBit asks for before replacing `flag`'s targeting with `targeting`."""
    if targeting is None or targeting["fallthrough"] is None or flag["fallthrough"] is None:
        raise Uncomparable("no targeting or no fallthrough")
    needed: set[str] = set()
    before, after = flag["fallthrough"], targeting["fallthrough"]
    if _rollouts_differ(before["variations"], after["variations"]) or _dispatch_key_set(before, after):
        needed.add("UpdateFlagDefaultRule")
    if _target_users_changed(_walk(flag["variations"]), flag["targetUsers"], targeting["targetUsers"]):
        needed.add("UpdateFlagIndividualTargeting")
    if _rules_changed(flag["rules"], targeting["rules"], serves=True):
        needed.add("UpdateFlagTargetingRules")
    return frozenset(needed)


def segment_targeting_permissions(segment: JsonObject, updated: JsonObject) -> frozenset[str]:
    """The permissions FeatBit asks for before giving `segment` the targeting of `updated`."""
    needed: set[str] = set()
    if any(set(segment[part]) != set(updated[part]) for part in ("included", "excluded")):
        needed.add("UpdateSegmentTargetingUsers")
    if _rules_changed(segment["rules"], updated["rules"], serves=False):
        needed.add("UpdateSegmentRules")
    return frozenset(needed)
