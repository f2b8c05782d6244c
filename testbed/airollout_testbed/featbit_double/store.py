"""The double's state: one environment's flags, segments and audit log, with FeatBit's write rules.

Every flag write gets a new `revision` GUID (the optimistic-concurrency token) and a strictly
later `updatedAt`: FeatBit's SDKs keep an item only if its `updatedAt` grows (§4.5), and two
writes inside one millisecond must still both reach them. Each write is saved, then recorded in
the audit log, then handed to `notify` so the streaming side can push it, in FeatBit's order: when
the audit insert fails (a comment longer than PostgreSQL's varchar(512), or the injected fault) the
change stays saved, the request answers 500 and no SDK hears of it. The store is shared by the
server's event loop and by synchronous test code, so every public method takes one lock.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from airollout_testbed.featbit_double.json_patch import JsonPatchError, apply_patch
from airollout_testbed.featbit_double.model import (
    FLAG,
    SEGMENT_CONDITION_PROPERTIES,
    BindingError,
    JsonObject,
    create_flag_errors,
    create_segment_errors,
    flag_view,
    off_variation_errors,
    sdk_flag,
    sdk_segment,
    segment_targeting_errors,
    segment_view,
    variations_errors,
)
from airollout_testbed.featbit_double.permissions import (
    Policy,
    Uncomparable,
    flag_targeting_permissions,
    segment_targeting_permissions,
)

__all__ = [
    "Actor",
    "AuditInsertFails",
    "BusinessRuleViolated",
    "Environment",
    "FeatBitError",
    "Forbidden",
    "InternalServerError",
    "Kind",
    "Notify",
    "ResourceNotFound",
    "RevisionConflict",
    "Store",
    "ValidationFailed",
]

Kind = Literal["flag", "segment"]
Notify = Callable[[Kind, JsonObject, int], None]
"""Called under the store lock with an item as SDKs see it and its `updatedAt` in ms."""
AuditInsertFails = Callable[[], bool]
"""Asked once per saved write whose comment fits: True makes that write's audit insert fail."""

_COMMENT_LIMIT = 512  # audit_logs.comment is varchar(512) in FeatBit's PostgreSQL schema

_ORG_KEY = "airollout"
_PROJECT_KEY, _PROJECT_NAME = "sandbox", "Sandbox"
_ENV_KEY, _ENV_NAME = "dev", "Dev"


class FeatBitError(Exception):
    """A failure FeatBit reports with an error code in its response envelope."""

    def __init__(self, *codes: str) -> None:
        super().__init__(", ".join(codes))
        self.codes = list(codes)


class ResourceNotFound(FeatBitError):
    """FeatBit's `EntityNotFoundException` (404)."""

    def __init__(self) -> None:
        super().__init__("ResourceNotFound")


class Forbidden(FeatBitError):
    """The permission check denied the request (403)."""

    def __init__(self) -> None:
        super().__init__("Forbidden")


class RevisionConflict(FeatBitError):
    """The request's revision is not the flag's current one (409)."""

    def __init__(self) -> None:
        super().__init__("Conflict")


class BusinessRuleViolated(FeatBitError):
    """FeatBit's `BusinessException`, e.g. `KeyHasBeenUsed`."""


class ValidationFailed(FeatBitError):
    """FluentValidation codes such as `name_is_required`."""


class InternalServerError(FeatBitError):
    """What FeatBit answers when its own code fails, e.g. on a null targeting collection (500)."""

    def __init__(self) -> None:
        super().__init__("InternalServerError")


@dataclass(frozen=True)
class Actor:
    """Who a write is attributed to in the audit log."""

    id: str
    name: str
    email: str


_OTHER_WRITER = Actor(id="5e1f3c1a-0b7e-4c44-9d2f-7a3b6c9d0e11", name="Someone Else", email="someone.else@example.com")
"""The author of simulated concurrent edits: a portal user, not the access token."""


@dataclass(frozen=True)
class Environment:
    """The one project and environment the double serves."""

    id: str
    server_secret: str
    client_secret: str
    project_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    workspace_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: _iso(_now_ms()))

    @property
    def resource_name(self) -> str:
        """FeatBit's RN for the environment; a segment reaches SDKs only if a scope prefixes it."""
        return f"organization/{_ORG_KEY}:project/{_PROJECT_KEY}:env/{_ENV_KEY}"

    def project_view(self) -> JsonObject:
        """`ProjectWithEnvs`, as `GET /api/v1/projects` lists it."""
        secrets = [
            {"id": str(uuid.uuid5(uuid.UUID(self.id), kind)), "name": name, "type": kind, "value": value}
            for kind, name, value in (
                ("server", "Server Key", self.server_secret),
                ("client", "Client Key", self.client_secret),
            )
        ]
        environment = {
            "id": self.id,
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "projectId": self.project_id,
            "name": _ENV_NAME,
            "key": _ENV_KEY,
            "description": "",
            "secrets": secrets,
            "settings": {"requireChangeComment": False},
        }
        return {"id": self.project_id, "name": _PROJECT_NAME, "key": _PROJECT_KEY, "environments": [environment]}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def _snapshot(item: JsonObject | None) -> str:
    # DataChange holds the whole entity serialised, or "" on creation.
    return "" if item is None else json.dumps(item, separators=(",", ":"))


def _new_guid() -> str:
    return str(uuid.uuid4())


@dataclass
class _AuditEntry:
    view: JsonObject
    keyword: str
    created_ms: int


def _require(policy: Policy, needed: Callable[[], frozenset[str]]) -> None:
    """FeatBit learns what a targeting change needs by diffing it; a diff that throws is a 500."""
    try:
        permissions = needed()
    except Uncomparable:
        raise InternalServerError() from None
    if not all(policy.grants(permission) for permission in permissions):
        raise Forbidden()


def _page(items: list[JsonObject], page_index: int, page_size: int) -> JsonObject:
    start = max(page_index, 0) * max(page_size, 0)
    return {"totalCount": len(items), "items": items[start : start + max(page_size, 0)]}


class Store:
    """One environment's flags (by id), segments (by id) and audit log."""

    def __init__(self, environment: Environment, notify: Notify, audit_insert_fails: AuditInsertFails) -> None:
        self.environment = environment
        self._notify = notify
        self._audit_insert_fails = audit_insert_fails
        self._lock = threading.RLock()
        self._flags: dict[str, JsonObject] = {}
        self._segments: dict[str, JsonObject] = {}
        self._audit: list[_AuditEntry] = []
        # Never reset: updatedAt must keep growing for SDKs that outlive a reset.
        self._last_ms = 0

    def reset(self) -> None:
        with self._lock:
            self._flags.clear()
            self._segments.clear()
            self._audit.clear()

    def _tick(self) -> int:
        self._last_ms = max(_now_ms(), self._last_ms + 1)
        return self._last_ms

    def _record(
        self,
        ref_type: str,
        item: JsonObject,
        operation: str,
        previous: JsonObject | None,
        comment: str | None,
        actor: Actor,
        ms: int,
        *,
        may_fail: bool,
    ) -> None:
        """Insert the audit entry; raise as FeatBit's failing insert does, after the entity is saved."""
        too_long = comment is not None and len(comment) > _COMMENT_LIMIT
        if too_long or (may_fail and self._audit_insert_fails()):
            raise InternalServerError()
        view = {
            "id": _new_guid(),
            "refId": item["id"],
            "refType": ref_type,
            "operation": operation,
            "dataChange": {"previous": _snapshot(previous), "current": _snapshot(item)},
            "comment": comment,
            "creatorId": actor.id,
            "creatorName": actor.name,
            "creatorEmail": actor.email,
            "createdAt": _iso(ms),
            "instructions": [],
        }
        keyword = ",".join(str(item[name]) for name in ("key", "name") if item.get(name) is not None)
        self._audit.append(_AuditEntry(view=view, keyword=keyword, created_ms=ms))

    # ---- flags -------------------------------------------------------------------------------

    def _find_flag(self, key: str) -> JsonObject:
        for flag in self._flags.values():
            if flag["key"] == key:
                return flag
        raise ResourceNotFound()

    def has_flag(self, key: str) -> bool:
        with self._lock:
            return any(flag["key"] == key for flag in self._flags.values())

    def get_flag(self, key: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._find_flag(key))

    def _commit_flag(
        self,
        previous: JsonObject | None,
        flag: JsonObject,
        operation: str,
        comment: str | None,
        actor: Actor,
        *,
        new_revision: bool = True,
        push: bool = True,
        audit_may_fail: bool = True,
    ) -> str:
        ms = self._tick()
        flag["updatedAt"] = _iso(ms)
        flag["updatorId"] = actor.id
        if previous is None:
            flag["createdAt"] = flag["updatedAt"]
        if new_revision:
            flag["revision"] = _new_guid()
        self._flags[flag["id"]] = flag
        self._record("FeatureFlag", flag, operation, previous, comment, actor, ms, may_fail=audit_may_fail)
        if push:
            self._notify("flag", sdk_flag(flag), ms)
        return str(flag["revision"])

    def create_flag(self, request: JsonObject, actor: Actor) -> JsonObject:
        """`CreateFeatureFlag`: the fallthrough serves the enabled variation to everyone."""
        if errors := create_flag_errors(request):
            raise ValidationFailed(*errors)
        with self._lock:
            key = request["key"].lower()
            if any(flag["key"].lower() == key for flag in self._flags.values()):
                raise BusinessRuleViolated("KeyHasBeenUsed")
            flag: JsonObject = {
                "id": _new_guid(),
                "createdAt": None,
                "updatedAt": None,
                "creatorId": actor.id,
                "updatorId": actor.id,
                "envId": self.environment.id,
                "revision": None,
                "name": request["name"],
                "description": request["description"],
                "key": request["key"],
                "variationType": request["variationType"],
                "variations": request["variations"],
                "targetUsers": [],
                "rules": [],
                "isEnabled": request["isEnabled"],
                "disabledVariationId": request["disabledVariationId"],
                "fallthrough": {
                    "dispatchKey": None,
                    "includedInExpt": True,
                    "variations": [{"id": request["enabledVariationId"], "rollout": [0, 1], "exptRollout": 1}],
                },
                "exptIncludeAllTargets": True,
                "tags": request["tags"] or [],
                "isArchived": False,
            }
            self._commit_flag(None, flag, "Create", "", actor)
            return copy.deepcopy(flag)

    def _change_flag(
        self,
        key: str,
        change: Callable[[JsonObject], None],
        operation: str,
        comment: str | None,
        actor: Actor,
        expected_revision: str | None = None,
        audit_may_fail: bool = True,
    ) -> str:
        flag = self._find_flag(key)
        if expected_revision is not None and flag["revision"] != expected_revision:
            raise RevisionConflict()
        updated = copy.deepcopy(flag)
        change(updated)
        return self._commit_flag(flag, updated, operation, comment, actor, audit_may_fail=audit_may_fail)

    def toggle(self, key: str, status: bool, comment: str | None, actor: Actor) -> str:
        """Returns the revision; a flag already in that state is left alone, with no audit entry."""
        with self._lock:
            flag = self._find_flag(key)
            if flag["isEnabled"] == status:
                return str(flag["revision"])
            return self._change_flag(key, lambda f: f.update(isEnabled=status), "Update", comment, actor)

    def update_targeting(self, key: str, request: JsonObject, actor: Actor, policy: Policy) -> str:
        """Replace targetUsers, rules, fallthrough and exptIncludeAllTargets, checking the revision,
        then the permissions the change needs (FeatBit's order: 404, 409, 500 on a null list, 403)."""
        targeting = request["targeting"]
        with self._lock:
            flag = self._find_flag(key)
            if flag["revision"] != request["revision"]:
                raise RevisionConflict()
            _require(policy, lambda: flag_targeting_permissions(flag, targeting))
            return self._change_flag(key, lambda f: f.update(targeting), "Update", request["comment"], actor)

    def update_off_variation(self, key: str, request: JsonObject, actor: Actor) -> str:
        if errors := off_variation_errors(request):
            raise ValidationFailed(*errors)
        with self._lock:
            return self._change_flag(
                key,
                lambda f: f.update(disabledVariationId=request["offVariationId"]),
                "Update",
                request["comment"],
                actor,
                expected_revision=request["revision"],
            )

    def update_variations(self, key: str, request: JsonObject, actor: Actor) -> str:
        if errors := variations_errors(request):
            raise ValidationFailed(*errors)
        with self._lock:
            return self._change_flag(
                key,
                lambda f: f.update(variations=request["variations"]),
                "Update",
                request["comment"],
                actor,
                expected_revision=request["revision"],
            )

    def set_archived(self, key: str, archived: bool, comment: str | None, actor: Actor) -> None:
        """Archive or restore; a flag already in that state is left alone."""
        with self._lock:
            if self._find_flag(key)["isArchived"] != archived:
                operation = "Archive" if archived else "Restore"
                self._change_flag(key, lambda f: f.update(isArchived=archived), operation, comment, actor)

    def patch_flag(self, key: str, operations: object, actor: Actor) -> None:
        """Apply a JSON Patch: no revision check and no comment (raises `JsonPatchError`)."""
        with self._lock:
            flag = self._find_flag(key)
            patched = apply_patch(flag, operations)
            try:
                bound: JsonObject = FLAG(patched, "$")
            except BindingError as error:
                raise JsonPatchError(f"The value is invalid for target location: {error.path}.") from error
            if bound["id"] != flag["id"]:
                raise JsonPatchError("The property at path '/id' could not be updated.")
            self._commit_flag(flag, bound, "Update", "", actor)

    def edit_concurrently(self, key: str) -> None:
        """Simulate another writer saving the flag: a new revision, an audit entry and a push."""
        with self._lock:
            # Another request's write: the audit fault is meant for the request under test.
            comment = "Edited concurrently by another user"
            self._change_flag(key, lambda f: None, "Update", comment, _OTHER_WRITER, audit_may_fail=False)

    def list_flags(
        self,
        *,
        name: str | None,
        tags: list[str],
        is_enabled: bool | None,
        is_archived: bool,
        sort_by: str,
        page_index: int,
        page_size: int,
    ) -> JsonObject:
        """`GetFeatureFlagList` (§3.1)."""
        with self._lock:
            needle = (name or "").strip().lower()
            flags = [
                flag
                for flag in self._flags.values()
                if flag["isArchived"] == is_archived
                and (not needle or needle in flag["name"].lower() or needle in flag["key"].lower())
                and (is_enabled is None or flag["isEnabled"] == is_enabled)
                and all(tag in (flag["tags"] or ()) for tag in tags)
            ]
            if sort_by == "key":
                flags.sort(key=lambda flag: flag["key"])
            else:
                flags.sort(key=lambda flag: flag["createdAt"], reverse=True)
            views = [flag_view(flag, self._last_change(flag["id"])) for flag in flags]
            return copy.deepcopy(_page(views, page_index, page_size))

    def _last_change(self, ref_id: str) -> JsonObject | None:
        for entry in reversed(self._audit):
            if entry.view["refId"] == ref_id:
                return entry.view
        return None

    # ---- segments ----------------------------------------------------------------------------

    def _find_segment(self, segment_id: str) -> JsonObject:
        segment = self._segments.get(segment_id)
        if segment is None:
            raise ResourceNotFound()
        return segment

    def _in_scope(self, segment: JsonObject) -> bool:
        rn = self.environment.resource_name + ":"
        return any(rn.startswith(scope + ":") for scope in segment["scopes"] or ())

    def _commit_segment(
        self, previous: JsonObject | None, segment: JsonObject, operation: str, comment: str | None, actor: Actor
    ) -> None:
        ms = self._tick()
        segment["updatedAt"] = _iso(ms)
        if previous is None:
            segment["createdAt"] = segment["updatedAt"]
        self._segments[segment["id"]] = segment
        self._record("Segment", segment, operation, previous, comment, actor, ms, may_fail=True)
        if self._in_scope(segment):
            self._notify("segment", sdk_segment(segment), ms)

    def get_segment(self, segment_id: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._find_segment(segment_id))

    def create_segment(self, request: JsonObject, actor: Actor) -> JsonObject:
        """`CreateSegment`: targeting starts empty. FeatBit does not check key uniqueness here."""
        if errors := create_segment_errors(request):
            raise ValidationFailed(*errors)
        if request["type"] == "shared":
            # Shareable segments are a licensed feature the double does not have.
            raise BusinessRuleViolated("Unauthorized")
        with self._lock:
            segment: JsonObject = {
                "id": _new_guid(),
                "createdAt": None,
                "updatedAt": None,
                "workspaceId": self.environment.workspace_id,
                "envId": self.environment.id,
                "name": request["name"],
                "key": request["key"],
                "type": request["type"],
                "scopes": request["scopes"],
                "description": request["description"] or "",
                "included": [],
                "excluded": [],
                "rules": [],
                "tags": [],
                "isArchived": False,
            }
            self._commit_segment(None, segment, "Create", "", actor)
            return copy.deepcopy(segment)

    def update_segment_targeting(self, segment_id: str, request: JsonObject, actor: Actor, policy: Policy) -> None:
        """Replace included/excluded/rules; flags that use the segment get a later `updatedAt`.

        As in FeatBit, those flags keep their revision and are not pushed: SDKs receive only the
        segment, and each flag gets an audit entry naming the segment. The change needs the
        permissions its diff asks for (users, rules), checked once the segment is found.
        """
        if request["rules"] is None:
            # FeatBit's validator walks the rules and fails with a 500 on null.
            raise InternalServerError()
        if errors := segment_targeting_errors(request):
            raise ValidationFailed(*errors)
        with self._lock:
            segment = self._find_segment(segment_id)
            updated = copy.deepcopy(segment)
            updated.update(
                included=request["included"] or [], excluded=request["excluded"] or [], rules=request["rules"]
            )
            _require(policy, lambda: segment_targeting_permissions(segment, updated))
            self._commit_segment(segment, updated, "Update", request["comment"], actor)
            comment = f"Referenced segment '{updated['name']}' has been updated."
            for flag in [f for f in self._flags.values() if self._references(f, segment_id)]:
                touched = copy.deepcopy(flag)
                self._commit_flag(flag, touched, "Update", comment, actor, new_revision=False, push=False)

    @staticmethod
    def _references(flag: JsonObject, segment_id: str) -> bool:
        for rule in flag["rules"] or ():
            for condition in rule["conditions"] or ():
                if condition["property"] in SEGMENT_CONDITION_PROPERTIES:
                    try:
                        if segment_id in json.loads(condition["value"] or "[]"):
                            return True
                    except (json.JSONDecodeError, TypeError):
                        continue
        return False

    def list_segments(self, *, name: str | None, is_archived: bool, page_index: int, page_size: int) -> JsonObject:
        """`GetSegmentList`: segments whose scope covers the environment, last updated first."""
        with self._lock:
            needle = (name or "").lower()
            segments = [
                segment
                for segment in self._segments.values()
                if self._in_scope(segment)
                and segment["isArchived"] == is_archived
                and needle in (segment["name"] or "").lower()
            ]
            segments.sort(key=lambda segment: _ms(segment["updatedAt"]), reverse=True)
            return copy.deepcopy(_page([segment_view(s) for s in segments], page_index, page_size))

    # ---- audit log and SDK data ----------------------------------------------------------------

    def audit_logs(
        self,
        *,
        ref_type: str | None,
        ref_id: str | None,
        query: str | None,
        creator_id: str | None,
        from_ms: int | None,
        to_ms: int | None,
        page_index: int,
        page_size: int,
    ) -> JsonObject:
        """`GetAuditLogList`, newest first."""
        with self._lock:
            needle = (query or "").lower()
            views = [
                entry.view
                for entry in reversed(self._audit)
                if (not ref_type or entry.view["refType"] == ref_type)
                and (not ref_id or entry.view["refId"] == ref_id)
                and (not creator_id or entry.view["creatorId"] == creator_id)
                and (from_ms is None or entry.created_ms >= from_ms)
                and (to_ms is None or entry.created_ms <= to_ms)
                and (not needle or needle in entry.keyword.lower() or needle in (entry.view["comment"] or "").lower())
            ]
            return copy.deepcopy(_page(views, page_index, page_size))

    def sync_payload(self, timestamp: int) -> tuple[JsonObject, int]:
        """The data-sync reply for an SDK whose newest item is `timestamp` ms (0: everything).

        Also returns the cursor: every write up to it is in the reply or older than `timestamp`,
        so pushes with a later `updatedAt` are exactly what the SDK still lacks.
        """
        with self._lock:
            flags = [sdk_flag(f) for f in self._flags.values() if _ms(f["updatedAt"]) > timestamp]
            segments = [
                sdk_segment(s) for s in self._segments.values() if self._in_scope(s) and _ms(s["updatedAt"]) > timestamp
            ]
            data = {
                "eventType": "full" if timestamp == 0 else "patch",
                "featureFlags": flags,
                "segments": segments,
            }
            return copy.deepcopy(data), self._last_ms
