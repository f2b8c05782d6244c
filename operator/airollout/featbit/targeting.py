"""The targeting a FeatBit flag must carry for one rollout stage, built as data.

FeatBit's `PUT .../targeting` replaces a flag's whole targeting, so the operator has to send everything,
including what it does not own. The split of ownership:

* The operator owns the fallthrough (the default rule) and the rules whose id starts with
  `MANAGED_RULE_PREFIX`.
* Everything else (individual `targetUsers` and rules someone wrote in FeatBit's UI) is copied through
  unchanged and placed before the operator's rules, so a human's targeting wins over the rollout and
  survives every stage, including a rollback. The flag's kill switch (`isEnabled`) is the way to override
  it too.

Percentages become cumulative `rollout` ranges over [0, 1] in list order, rounded to 4 decimals like
FeatBit's UI and CLI (a resolution of 0.01 %). The candidate comes first and starts at 0: a user's bucket
is fixed, so whoever is served the candidate at 5 % is still served it at 25 %.

Pure: no I/O framework is imported here (an import-linter contract checks it), so the planner and tests
can call it freely.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airollout.featbit.errors import VariationNotFound

__all__ = [
    "AUDIENCE_RULE_ID",
    "GRANTED_RULE_ID",
    "MANAGED_RULE_PREFIX",
    "Exposure",
    "build_targeting",
    "fingerprint",
    "targeting_of",
]

MANAGED_RULE_PREFIX = "airollout-"
GRANTED_RULE_ID = "airollout-granted"
AUDIENCE_RULE_ID = "airollout-audience"

_IN_SEGMENT = "User is in segment"
_DECIMALS = 4


@dataclass(frozen=True)
class Exposure:
    """What one rollout stage serves.

    `percentage` (0..100) of the audience gets the candidate. The audience is everyone, or, when
    `audience_segment_ids` is set, only members of those segments; everyone else gets the control.
    Members of `granted_segment_ids` (e.g. internal users) get the candidate whatever the percentage.
    """

    percentage: float
    granted_segment_ids: tuple[str, ...] = ()
    audience_segment_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.percentage) and 0 <= self.percentage <= 100):
            raise ValueError(f"exposure percentage must be between 0 and 100, got {self.percentage!r}")
        for ids in (self.granted_segment_ids, self.audience_segment_ids):
            if isinstance(ids, str) or not all(isinstance(i, str) and i.strip() for i in ids):
                raise ValueError(f"segment ids must be a tuple of non-empty strings, got {ids!r}")


def build_targeting(
    flag: Mapping[str, Any],
    exposure: Exposure | None,
    *,
    candidate: str,
    control: str,
    dispatch_key: str | None = "keyId",
) -> dict[str, Any]:
    """The full `targeting` body for `PUT .../targeting` that serves `exposure` on `flag`.

    `flag` is the flag as read from FeatBit; its foreign rules and `targetUsers` are kept. `exposure`
    None means rolled back: the operator's rules are removed and the fallthrough serves the control.
    `candidate` and `control` are variation ids of the flag. `dispatch_key` is the user attribute that
    buckets percentage splits (None buckets on the user key, as `"keyId"` does).
    """
    _check_variations(flag, candidate, control)
    rules = [copy.deepcopy(dict(rule)) for rule in _list(flag, "rules") if not _is_managed(rule)]
    fallthrough_shares = [(control, 1.0)]
    if exposure is not None:
        split = _split(exposure.percentage, candidate, control)
        if exposure.granted_segment_ids:
            rules.append(
                _rule(
                    GRANTED_RULE_ID,
                    "AIRollout: granted segments",
                    exposure.granted_segment_ids,
                    [(candidate, 1.0)],
                    dispatch_key,
                )
            )
        if exposure.audience_segment_ids:
            rules.append(
                _rule(
                    AUDIENCE_RULE_ID,
                    "AIRollout: audience",
                    exposure.audience_segment_ids,
                    split,
                    dispatch_key,
                )
            )
        else:
            fallthrough_shares = split
    return {
        "targetUsers": [copy.deepcopy(dict(target)) for target in _list(flag, "targetUsers")],
        "rules": rules,
        "fallthrough": _serve(fallthrough_shares, dispatch_key, included_in_expt=True),
        "exptIncludeAllTargets": _expt_include_all_targets(flag),
    }


def targeting_of(flag: Mapping[str, Any]) -> dict[str, Any]:
    """The four targeting parts of a flag (or of a targeting body), normalised for comparison.

    Two targetings that serve every user the same way through the same rules normalise equal, whatever
    the representation noise FeatBit or a human introduced: missing or null lists, blank dispatch keys,
    `1` vs `1.0`, zero-width `rollout` entries (the UI keeps them for 0 % variations), condition ids, and
    a dispatch key on a serve that has no split. Everything else counts, in order: rule order decides which
    rule matches, and a renamed or re-sampled rule (`exptRollout`) is a change the operator corrects.
    """
    return {
        "targetUsers": [
            {"variationId": target.get("variationId"), "keyIds": list(target.get("keyIds") or [])}
            for target in _list(flag, "targetUsers")
        ],
        "rules": [
            {
                "id": rule.get("id"),
                "name": rule.get("name"),
                "conditions": [
                    {
                        "property": cond.get("property"),
                        "op": cond.get("op") or None,
                        "value": cond.get("value"),
                    }
                    for cond in rule.get("conditions") or []
                ],
                **_normal_serve(rule),
            }
            for rule in _list(flag, "rules")
        ],
        "fallthrough": _normal_serve(flag.get("fallthrough") or {}),
        "exptIncludeAllTargets": _expt_include_all_targets(flag),
    }


def fingerprint(flag: Mapping[str, Any]) -> str:
    """A short stable hash of `targeting_of(flag)`: equal exactly when the normalised targetings are.

    Small enough for a status field, so the operator can tell whether someone changed the flag since it
    last wrote it without keeping the whole targeting.
    """
    canonical = json.dumps(targeting_of(flag), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _check_variations(flag: Mapping[str, Any], candidate: str, control: str) -> None:
    if candidate == control:
        raise ValueError(f"candidate and control must be different variations, both are {candidate!r}")
    known = [str(variation.get("id")) for variation in _list(flag, "variations")]
    for wanted in (candidate, control):
        if wanted not in known:
            raise VariationNotFound(
                f"flag {flag.get('key')!r} has no variation with id {wanted!r}; its variation ids are "
                f"{', '.join(repr(k) for k in known) or 'none'}. Name the candidate and control by id."
            )


def _is_managed(rule: Mapping[str, Any]) -> bool:
    return str(rule.get("id") or "").startswith(MANAGED_RULE_PREFIX)


def _list(flag: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    # FeatBit serialises null lists as null; treat them as empty rather than failing on a hand-made flag.
    return list(flag.get(name) or [])


def _expt_include_all_targets(flag: Mapping[str, Any]) -> bool:
    # Not the operator's setting: keep the flag's, defaulting to FeatBit's own default when absent.
    return flag.get("exptIncludeAllTargets") is not False


def _split(percentage: float, candidate: str, control: str) -> list[tuple[str, float]]:
    share = round(percentage / 100, _DECIMALS)
    return [(candidate, share), (control, 1.0 - share)]


def _serve(shares: list[tuple[str, float]], dispatch_key: str | None, *, included_in_expt: bool) -> dict[str, Any]:
    """Cumulative `rollout` ranges for (variation id, share) pairs, leaving out 0 % variations.

    Leaving them out keeps 0 % and 100 % clean: a whole serve is `[0, 1]`, which every SDK treats as
    "always matches" without hashing.
    """
    variations: list[dict[str, Any]] = []
    start = 0.0
    for variation_id, share in shares:
        end = min(round(start + share, _DECIMALS), 1.0)
        if end > start:
            variations.append({"id": variation_id, "rollout": [start, end], "exptRollout": 1})
        start = end
    if variations:
        variations[-1]["rollout"][1] = 1.0
    return {
        "dispatchKey": dispatch_key if len(variations) > 1 else None,
        "includedInExpt": included_in_expt,
        "variations": variations,
    }


def _rule(
    rule_id: str,
    name: str,
    segment_ids: tuple[str, ...],
    shares: list[tuple[str, float]],
    dispatch_key: str | None,
) -> dict[str, Any]:
    condition = {
        "id": f"{rule_id}-segments",
        "property": _IN_SEGMENT,
        "op": None,  # the SDKs take a falsy op as "this is a segment condition"
        "value": json.dumps(list(segment_ids)),
    }
    serve = _serve(shares, dispatch_key, included_in_expt=False)
    return {"id": rule_id, "name": name, "conditions": [condition], **serve}


def _normal_serve(serve: Mapping[str, Any]) -> dict[str, Any]:
    variations = []
    for variation in serve.get("variations") or []:
        bounds = [round(float(bound), _DECIMALS) for bound in variation.get("rollout") or ()]
        # A zero-width range never matches: leave it out. Odd shapes someone else wrote are kept as is.
        if len(bounds) != 2 or bounds[1] > bounds[0]:
            expt = variation.get("exptRollout")
            variations.append(
                {
                    "id": variation.get("id"),
                    "rollout": bounds,
                    "exptRollout": round(float(1 if expt is None else expt), _DECIMALS),
                }
            )
    dispatch_key = serve.get("dispatchKey")
    split = len(variations) > 1 or any(v["rollout"] != [0.0, 1.0] for v in variations)
    return {
        "dispatchKey": dispatch_key if split and isinstance(dispatch_key, str) and dispatch_key.strip() else None,
        "includedInExpt": bool(serve.get("includedInExpt", False)),
        "variations": variations,
    }
