"""FeatBit's JSON shapes: request binding, validation codes and the views each route returns.

FeatBit binds request bodies into C# classes, so a field a client leaves out becomes that
class's default and a field of the wrong JSON type is a model-binding error (400 with
ProblemDetails) before any handler runs. Reproducing that here keeps stored flags complete: the
real SDK indexes fields such as `dispatchKey` without a fallback, and FeatBit always serialises
them, even as null. Validation reproduces FeatBit's FluentValidation codes (featbit-api.md §1.4).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CHANGE_REQUEST",
    "CREATE_FLAG",
    "CREATE_SEGMENT",
    "EMPTY_GUID",
    "FLAG",
    "SEGMENT_CONDITION_PROPERTIES",
    "SEGMENT_TARGETING",
    "UPDATE_OFF_VARIATION",
    "UPDATE_TARGETING",
    "UPDATE_VARIATIONS",
    "BindingError",
    "JsonObject",
    "create_flag_errors",
    "create_segment_errors",
    "flag_view",
    "off_variation_errors",
    "sdk_flag",
    "sdk_segment",
    "segment_targeting_errors",
    "segment_view",
    "variations_errors",
]

JsonObject = dict[str, Any]
Binder = Callable[[object, str], Any]

EMPTY_GUID = str(uuid.UUID(int=0))
SEGMENT_CONDITION_PROPERTIES = ("User is in segment", "User is not in segment")
_KEY_PATTERN = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_LENGTH = 128
_VARIATION_TYPES = ("boolean", "json", "number", "string")
_SEGMENT_TYPES = ("environment-specific", "shared")


class BindingError(ValueError):
    """A request that does not fit FeatBit's C# types; `path` names the JSON path or parameter."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _null() -> None:
    return None


def _false() -> bool:
    return False


def _true() -> bool:
    return True


def _zero() -> float:
    return 0.0


def _empty_string() -> str:
    return ""


def _empty_list() -> list[Any]:
    return []


def _empty_guid() -> str:
    return EMPTY_GUID


def _string(value: object, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BindingError(path, "The JSON value could not be converted to System.String.")


def _boolean(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise BindingError(path, "The JSON value could not be converted to System.Boolean.")


def _number(value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise BindingError(path, "The JSON value could not be converted to System.Double.")


def _guid(value: object, path: str) -> str:
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise BindingError(path, "The JSON value could not be converted to System.Guid.")


def _array(item: Binder) -> Binder:
    def bind(value: object, path: str) -> list[Any] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise BindingError(path, "The JSON value could not be converted to a collection.")
        return [item(element, f"{path}[{index}]") for index, element in enumerate(value)]

    return bind


def _object(*fields: tuple[str, Binder, Callable[[], Any]]) -> Binder:
    """Bind an object: known fields only, each absent one set to its C# default."""

    def bind(value: object, path: str) -> JsonObject | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise BindingError(path, "The JSON value could not be converted to an object.")
        return {
            name: binder(value[name], f"{path}.{name}") if name in value else default()
            for name, binder, default in fields
        }

    return bind


_VARIATION = _object(("id", _string, _null), ("name", _string, _null), ("value", _string, _null))
_ROLLOUT_VARIATION = _object(
    ("id", _string, _null), ("rollout", _array(_number), _null), ("exptRollout", _number, _zero)
)
_CONDITION = _object(
    ("id", _string, _null), ("property", _string, _null), ("op", _string, _null), ("value", _string, _null)
)
_TARGET_USER = _object(("keyIds", _array(_string), _null), ("variationId", _string, _null))
_TARGET_RULE = _object(
    ("id", _string, _null),
    ("name", _string, _null),
    ("dispatchKey", _string, _null),
    ("includedInExpt", _boolean, _false),
    ("conditions", _array(_CONDITION), _null),
    ("variations", _array(_ROLLOUT_VARIATION), _null),
)
_FALLTHROUGH = _object(
    ("dispatchKey", _string, _null),
    ("includedInExpt", _boolean, _false),
    ("variations", _array(_ROLLOUT_VARIATION), _null),
)
_FLAG_TARGETING = _object(
    ("targetUsers", _array(_TARGET_USER), _null),
    ("rules", _array(_TARGET_RULE), _null),
    ("fallthrough", _FALLTHROUGH, _null),
    ("exptIncludeAllTargets", _boolean, _true),
)
_MATCH_RULE = _object(("id", _string, _null), ("name", _string, _null), ("conditions", _array(_CONDITION), _empty_list))

CHANGE_REQUEST = _object(("comment", _string, _empty_string))
"""`ResourceChangeRequest`: the optional `{"comment"}` body of toggle, archive and restore."""

UPDATE_TARGETING = _object(
    ("revision", _guid, _empty_guid), ("targeting", _FLAG_TARGETING, _null), ("comment", _string, _empty_string)
)
CREATE_FLAG = _object(
    ("name", _string, _null),
    ("key", _string, _null),
    ("isEnabled", _boolean, _false),
    ("description", _string, _null),
    ("variationType", _string, _null),
    ("variations", _array(_VARIATION), _null),
    ("enabledVariationId", _string, _null),
    ("disabledVariationId", _string, _null),
    ("tags", _array(_string), _null),
)
UPDATE_OFF_VARIATION = _object(
    ("revision", _guid, _empty_guid), ("offVariationId", _string, _null), ("comment", _string, _empty_string)
)
UPDATE_VARIATIONS = _object(
    ("revision", _guid, _empty_guid),
    ("variations", _array(_VARIATION), _null),
    ("comment", _string, _empty_string),
)
CREATE_SEGMENT = _object(
    ("type", _string, _null),
    ("name", _string, _null),
    ("key", _string, _null),
    ("description", _string, _null),
    ("scopes", _array(_string), _empty_list),
)
SEGMENT_TARGETING = _object(
    ("included", _array(_string), _empty_list),
    ("excluded", _array(_string), _empty_list),
    ("rules", _array(_MATCH_RULE), _empty_list),
    ("comment", _string, _null),
)
FLAG = _object(
    ("id", _guid, _empty_guid),
    ("createdAt", _string, _null),
    ("updatedAt", _string, _null),
    ("creatorId", _guid, _empty_guid),
    ("updatorId", _guid, _empty_guid),
    ("envId", _guid, _empty_guid),
    ("revision", _guid, _empty_guid),
    ("name", _string, _null),
    ("description", _string, _null),
    ("key", _string, _null),
    ("variationType", _string, _null),
    ("variations", _array(_VARIATION), _null),
    ("targetUsers", _array(_TARGET_USER), _null),
    ("rules", _array(_TARGET_RULE), _null),
    ("isEnabled", _boolean, _false),
    ("disabledVariationId", _string, _null),
    ("fallthrough", _FALLTHROUGH, _null),
    ("exptIncludeAllTargets", _boolean, _false),
    ("tags", _array(_string), _null),
    ("isArchived", _boolean, _false),
)
"""The full flag document (featbit-api.md §2.1); a JSON-Patch result is re-bound through it."""


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _valid_key(key: str) -> bool:
    return len(key) <= _MAX_LENGTH and _KEY_PATTERN.fullmatch(key) is not None


def _variation_list_error(variations: list[JsonObject | None] | None) -> str | None:
    # FeatBit attaches its error code to the `Must` only, so an empty list keeps the default code.
    if not variations:
        return "NotEmptyValidator"
    if any(item is None or _blank(item["id"]) or _blank(item["name"]) for item in variations):
        return "variations_is_invalid"
    return None


def create_flag_errors(request: JsonObject) -> list[str]:
    """`CreateFeatureFlagValidator`: one code per failing property, in declaration order."""
    errors: list[str] = []
    name, key = request["name"], request["key"]
    if _blank(name):
        errors.append("name_is_required")
    elif len(name) > _MAX_LENGTH:
        errors.append("name_is_invalid")
    if _blank(key):
        errors.append("key_is_required")
    elif not _valid_key(key):
        errors.append("key_is_invalid")
    if request["variationType"] not in _VARIATION_TYPES:
        errors.append("variationType_is_invalid")
    variations = request["variations"]
    if code := _variation_list_error(variations):
        errors.append(code)
    ids = {item["id"] for item in variations or () if item is not None}
    if request["disabledVariationId"] not in ids:
        errors.append("disabledVariationId_is_invalid")
    if request["enabledVariationId"] not in ids:
        errors.append("enabledVariationId_is_invalid")
    return errors


def variations_errors(request: JsonObject) -> list[str]:
    """`UpdateVariationsValidator`."""
    code = _variation_list_error(request["variations"])
    return [code] if code else []


def off_variation_errors(request: JsonObject) -> list[str]:
    """`UpdateOffVariationValidator`."""
    return ["offVariationId_is_required"] if _blank(request["offVariationId"]) else []


def create_segment_errors(request: JsonObject) -> list[str]:
    """`CreateSegmentValidator` (note: an empty name is `name_is_invalid` here, not `_is_required`)."""
    errors: list[str] = []
    if request["type"] not in _SEGMENT_TYPES:
        errors.append("type_is_invalid")
    if _blank(request["name"]):
        errors.append("name_is_invalid")
    key = request["key"]
    if _blank(key):
        errors.append("key_is_required")
    elif _KEY_PATTERN.fullmatch(key) is None:
        errors.append("key_is_invalid")
    scopes = request["scopes"]
    if not scopes or any(scope is None or "*" in scope for scope in scopes):
        errors.append("scopes_is_invalid")
    return errors


def segment_targeting_errors(request: JsonObject) -> list[str]:
    """Segment rules may not test segment membership themselves."""
    conditions = [condition for rule in request["rules"] if rule is not None for condition in rule["conditions"] or ()]
    if any(c is not None and c["property"] in SEGMENT_CONDITION_PROPERTIES for c in conditions):
        return ["rules_is_invalid"]
    return []


_SDK_FLAG_FIELDS = (
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
)
_SDK_SEGMENT_FIELDS = ("id", "envId", "name", "description", "included", "excluded", "rules", "updatedAt", "isArchived")


def sdk_flag(flag: JsonObject) -> JsonObject:
    """A flag as the evaluation server sends it to SDKs (§4.4): no revision, no creator fields."""
    return {name: flag[name] for name in _SDK_FLAG_FIELDS}


def sdk_segment(segment: JsonObject) -> JsonObject:
    """A segment as the evaluation server sends it to SDKs (§4.4)."""
    return {name: segment[name] for name in _SDK_SEGMENT_FIELDS}


def _serves(flag: JsonObject) -> JsonObject:
    def served(variations: list[JsonObject] | None) -> list[str]:
        return [v["id"] for v in variations or () if v["rollout"] and v["rollout"][1] - v["rollout"][0] != 0]

    ids = {t["variationId"] for t in flag["targetUsers"] if t["keyIds"]}
    ids.update(vid for rule in flag["rules"] for vid in served(rule["variations"]))
    ids.update(served(flag["fallthrough"]["variations"]))
    values = {v["id"]: v["value"] for v in flag["variations"]}
    return {
        "enabledVariations": [v["value"] for v in flag["variations"] if v["id"] in ids],
        "disabledVariation": values.get(flag["disabledVariationId"]),
    }


def flag_view(flag: JsonObject, last_change: JsonObject | None) -> JsonObject:
    """`FeatureFlagVm`, the list item of §3.1.

    FeatBit looks the creator and the last operator up among users; an access token is not a
    user, so the creator is null and the operator shows as FeatBit's "Ghost".
    """
    return {
        "id": flag["id"],
        "name": flag["name"],
        "description": flag["description"],
        "key": flag["key"],
        "isEnabled": flag["isEnabled"],
        "variationType": flag["variationType"],
        "variations": flag["variations"],
        "createdAt": flag["createdAt"],
        "updatedAt": flag["updatedAt"],
        "creator": None,
        "serves": _serves(flag),
        "tags": flag["tags"],
        "lastChange": None
        if last_change is None
        else {
            "operator": {"id": EMPTY_GUID, "name": "Ghost", "email": "Ghost"},
            "happenedAt": last_change["createdAt"],
            "comment": last_change["comment"],
        },
    }


def segment_view(segment: JsonObject) -> JsonObject:
    """`SegmentVm`, the list item of §3.8."""
    fields = ("id", "name", "key", "type", "scopes", "tags", "description", "createdAt", "updatedAt")
    return {name: segment[name] for name in fields}
