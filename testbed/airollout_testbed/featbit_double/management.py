"""The management API ("Open API") routes of FeatBit's API server, as an access token sees them.

Status codes follow FeatBit's pipeline order (featbit-api.md §1.4): route match (a malformed
GUID is a plain 404), authentication (401), the permission attribute (403, which is also what an
unknown environment, or an unknown flag on a flag-scoped route, produces), model binding (400
ProblemDetails), validation (400 codes), then the handler's own outcomes (404, 409, 422, 500, and
the 403 of a targeting change whose diff needs a permission the token lacks).

Which permission each route needs, as FeatBit's controllers declare it:

    GET    feature-flags, feature-flags/{key}, segments, segments/{id}   CanAccessEnv
    POST   feature-flags                                                 CreateFlag
    PUT    feature-flags/{key}/toggle/{status}                           ToggleFlag
    PUT    feature-flags/{key}/off-variation | variations                UpdateFlagOffVariation | UpdateFlagVariations
    PUT    feature-flags/{key}/archive | restore                         ArchiveFlag | RestoreFlag
    PUT    feature-flags/{key}/targeting       by diff: UpdateFlagDefaultRule, UpdateFlagTargetingRules,
                                               UpdateFlagIndividualTargeting (nothing when nothing changes)
    POST   segments                                                      CreateSegment
    PUT    segments/{id}/targeting             by diff: UpdateSegmentTargetingUsers, UpdateSegmentRules
    PATCH  feature-flags/{key}, GET audit-logs                           none (any valid token)
    GET    /api/v1/projects                    none; lists only what CanAccessProject/CanAccessEnv allow

A few `/_double/...` admin routes, for the double's own token only, let another process drive
faults, resets and the policies of minted tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from airollout_testbed.featbit_double.access_tokens import AccessToken, AccessTokens, UnknownToken
from airollout_testbed.featbit_double.faults import Faults
from airollout_testbed.featbit_double.json_patch import JsonPatchError
from airollout_testbed.featbit_double.model import (
    CHANGE_REQUEST,
    CREATE_FLAG,
    CREATE_SEGMENT,
    SEGMENT_TARGETING,
    UPDATE_OFF_VARIATION,
    UPDATE_TARGETING,
    UPDATE_VARIATIONS,
    Binder,
    BindingError,
    JsonObject,
)
from airollout_testbed.featbit_double.responses import envelope, failure, problem
from airollout_testbed.featbit_double.store import (
    BusinessRuleViolated,
    FeatBitError,
    Forbidden,
    InternalServerError,
    ResourceNotFound,
    RevisionConflict,
    Store,
    ValidationFailed,
)

__all__ = ["ManagementApi"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: dict[type[FeatBitError], int] = {
    ValidationFailed: 400,
    Forbidden: 403,
    ResourceNotFound: 404,
    RevisionConflict: 409,
    BusinessRuleViolated: 422,
    InternalServerError: 500,
}
_ENV = "/api/v1/envs/{env_id}"
_FLAG = _ENV + "/feature-flags/{key}"
_CALLER = web.RequestKey("caller", AccessToken)


def _query_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BindingError(name, f"The value '{value}' is not valid.") from None


def _paging(request: web.Request) -> dict[str, int]:
    """FeatBit's `PagedRequest`: a 0-based page index and 10 items a page by default."""
    index, size = _query_int(request, "pageIndex"), _query_int(request, "pageSize")
    return {"page_index": 0 if index is None else index, "page_size": 10 if size is None else size}


def _parse_bool(name: str, value: str) -> bool:
    # .NET's bool.Parse: case-insensitive, surrounding white space allowed.
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise BindingError(name, f"The value '{value}' is not valid.")
    return text == "true"


def _query_bool(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    return None if value is None else _parse_bool(name, value)


def _guid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


async def _json(request: web.Request) -> Any:
    text = await request.text()
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError as error:
        raise BindingError("$", f"'{error.msg}' at position {error.pos}.") from None


async def _body(request: web.Request, binder: Binder, *, optional: bool = False) -> JsonObject:
    """Bind a JSON body; an optional body (`[FromBody] T? = null`) may be absent or null."""
    value = await _json(request)
    if value is None:
        if not optional:
            raise BindingError("$", "A non-empty request body is required.")
        value = {}
    bound: JsonObject = binder(value, "$")
    return bound


class ManagementApi:
    """FeatBit's API server (default port 5000) for one environment and one access token."""

    def __init__(
        self,
        store: Store,
        *,
        tokens: AccessTokens,
        faults: Faults,
        timeout_hold: float,
        reset: Callable[[], Awaitable[None]],
        drop_streaming: Callable[[], Awaitable[int]],
    ) -> None:
        self._store = store
        self._env_id = store.environment.id
        self._tokens = tokens
        self._faults = faults
        self._timeout_hold = timeout_hold
        self._reset = reset
        self._drop_streaming = drop_streaming
        self._release: asyncio.Event | None = None
        self.app = web.Application(middlewares=[self._errors, self._inject_faults, self._authenticate])
        self._add_routes(self.app.router)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/health/liveness", self._healthy)
        router.add_get("/health/readiness", self._healthy)
        router.add_get("/api/v1/projects", self._projects)
        router.add_get(_ENV + "/feature-flags", self._list_flags)
        router.add_post(_ENV + "/feature-flags", self._create_flag)
        router.add_get(_FLAG, self._get_flag)
        router.add_patch(_FLAG, self._patch_flag)
        router.add_put(_FLAG + "/toggle/{status}", self._toggle)
        router.add_put(_FLAG + "/targeting", self._update_targeting)
        router.add_put(_FLAG + "/off-variation", self._update_off_variation)
        router.add_put(_FLAG + "/variations", self._update_variations)
        router.add_put(_FLAG + "/archive", self._archive)
        router.add_put(_FLAG + "/restore", self._restore)
        router.add_get(_ENV + "/segments", self._list_segments)
        router.add_post(_ENV + "/segments", self._create_segment)
        router.add_get(_ENV + "/segments/{segment_id}", self._get_segment)
        router.add_put(_ENV + "/segments/{segment_id}/targeting", self._update_segment_targeting)
        router.add_get(_ENV + "/audit-logs", self._audit_logs)
        router.add_get("/_double/faults", self._get_faults)
        router.add_post("/_double/faults", self._set_faults)
        router.add_post("/_double/reset", self._reset_route)
        router.add_post("/_double/tokens", self._mint_token)
        router.add_post("/_double/tokens/policy", self._set_token_policy)

    async def release_held_requests(self) -> None:
        """Answer every request a timeout fault is holding; must run on the server's loop."""
        if self._release is not None:
            self._release.set()
            self._release = None

    # ---- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except FeatBitError as error:
            return failure(_STATUS[type(error)], error.codes)
        except BindingError as error:
            return problem(error.path, error.message)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unexpected failure in %s %s", request.method, request.path)
            return failure(500, ["InternalServerError"])

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if self._faults.latency > 0:
            await asyncio.sleep(self._faults.latency)
        if self._faults.take("timeouts"):
            if self._release is None:
                self._release = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self._timeout_hold)
            return web.Response(status=504, text="504: Gateway Timeout")
        if self._faults.take("errors"):
            return web.Response(status=self._faults.error_status)
        return await handler(request)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/health/"):
            return await handler(request)
        value = request.headers.get("Authorization", "")
        # "Bearer ..." would go to FeatBit's portal (JWT) scheme, which the double does not serve.
        caller = None if not value or value.startswith("Bearer ") else self._tokens.find(value)
        if caller is None:
            response = failure(401, ["Unauthorized"])
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if request.path.startswith("/_double/") and caller.value != self._tokens.own.value:
            # The control API is the rig's, not FeatBit's: a token under test must not widen its own policy.
            return web.json_response({"error": "the /_double routes take the double's own token"}, status=403)
        request[_CALLER] = caller
        return await handler(request)

    # ---- addressing and permission checks ----------------------------------------------------

    def _path_guid(self, request: web.Request, name: str) -> str:
        # FeatBit's routes constrain these to GUIDs, so anything else matches no route.
        guid = _guid(request.match_info[name])
        if guid is None:
            raise web.HTTPNotFound()
        return guid

    def _is_own_env(self, request: web.Request) -> bool:
        return self._path_guid(request, "env_id") == self._env_id

    def _permit_env(self, request: web.Request, permission: str) -> None:
        """A permission attribute resolved at environment level (CanAccessEnv, CreateFlag, CreateSegment)."""
        if not self._is_own_env(request) or not request[_CALLER].policy.grants(permission):
            raise Forbidden()

    def _permit_flag(self, request: web.Request, permission: str) -> str:
        """A flag-scoped permission attribute: FeatBit denies when it cannot resolve the flag's resource."""
        key = request.match_info["key"]
        if not self._is_own_env(request) or not self._store.has_flag(key):
            raise Forbidden()
        if not request[_CALLER].policy.grants(permission):
            raise Forbidden()
        return key

    def _lookup_flag(self, request: web.Request) -> str:
        """Routes without a permission attribute load the flag first, so unknown means 404."""
        if not self._is_own_env(request):
            raise ResourceNotFound()
        return request.match_info["key"]

    # ---- routes ------------------------------------------------------------------------------

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="Healthy")

    async def _projects(self, request: web.Request) -> web.Response:
        # FeatBit filters the list by the caller's policy instead of refusing it.
        policy = request[_CALLER].policy
        if not policy.grants("CanAccessProject"):
            return envelope([])
        project = self._store.environment.project_view()
        if not policy.grants("CanAccessEnv"):
            project["environments"] = []
        return envelope([project])

    async def _list_flags(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CanAccessEnv")
        page = self._store.list_flags(
            name=request.query.get("name"),
            tags=request.query.getall("tags", []),
            is_enabled=_query_bool(request, "isEnabled"),
            is_archived=_query_bool(request, "isArchived") or False,
            sort_by=request.query.get("sortBy", "created_at"),
            **_paging(request),
        )
        return envelope(page)

    async def _get_flag(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CanAccessEnv")
        return envelope(self._store.get_flag(request.match_info["key"]))

    async def _create_flag(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CreateFlag")
        return envelope(self._store.create_flag(await _body(request, CREATE_FLAG), request[_CALLER].actor))

    async def _toggle(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request, "ToggleFlag")
        status = _parse_bool("status", request.match_info["status"])
        change = await _body(request, CHANGE_REQUEST, optional=True)
        return envelope(self._store.toggle(key, status, change["comment"], request[_CALLER].actor))

    async def _update_targeting(self, request: web.Request) -> web.Response:
        key = self._lookup_flag(request)
        update = await _body(request, UPDATE_TARGETING)
        if self._faults.take("conflicts"):
            self._store.edit_concurrently(key)
        caller = request[_CALLER]
        return envelope(self._store.update_targeting(key, update, caller.actor, caller.policy))

    async def _update_off_variation(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request, "UpdateFlagOffVariation")
        update = await _body(request, UPDATE_OFF_VARIATION)
        return envelope(self._store.update_off_variation(key, update, request[_CALLER].actor))

    async def _update_variations(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request, "UpdateFlagVariations")
        update = await _body(request, UPDATE_VARIATIONS)
        return envelope(self._store.update_variations(key, update, request[_CALLER].actor))

    async def _set_archived(self, request: web.Request, archived: bool) -> web.Response:
        key = self._permit_flag(request, "ArchiveFlag" if archived else "RestoreFlag")
        change = await _body(request, CHANGE_REQUEST, optional=True)
        self._store.set_archived(key, archived, change["comment"], request[_CALLER].actor)
        return envelope(True)

    async def _archive(self, request: web.Request) -> web.Response:
        return await self._set_archived(request, True)

    async def _restore(self, request: web.Request) -> web.Response:
        return await self._set_archived(request, False)

    async def _patch_flag(self, request: web.Request) -> web.Response:
        key = self._lookup_flag(request)
        operations = await _json(request)
        if not isinstance(operations, list):
            # FeatBit's JSON Patch deserialiser throws on anything but an array.
            raise InternalServerError()
        try:
            self._store.patch_flag(key, operations, request[_CALLER].actor)
        except JsonPatchError as error:
            # FeatBit reports a failed patch in the envelope but keeps HTTP 200.
            return failure(200, [str(error)], data=False)
        return envelope(True)

    async def _list_segments(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CanAccessEnv")
        page = self._store.list_segments(
            name=request.query.get("name"),
            is_archived=_query_bool(request, "isArchived") or False,
            **_paging(request),
        )
        return envelope(page)

    async def _get_segment(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CanAccessEnv")
        return envelope(self._store.get_segment(self._path_guid(request, "segment_id")))

    async def _create_segment(self, request: web.Request) -> web.Response:
        self._permit_env(request, "CreateSegment")
        return envelope(self._store.create_segment(await _body(request, CREATE_SEGMENT), request[_CALLER].actor))

    async def _update_segment_targeting(self, request: web.Request) -> web.Response:
        # No permission attribute, and FeatBit loads the segment by id alone, ignoring envId.
        self._path_guid(request, "env_id")
        segment_id = self._path_guid(request, "segment_id")
        update = await _body(request, SEGMENT_TARGETING)
        caller = request[_CALLER]
        self._store.update_segment_targeting(segment_id, update, caller.actor, caller.policy)
        return envelope(True)

    async def _audit_logs(self, request: web.Request) -> web.Response:
        # No permission attribute here: another environment simply has no entries.
        own_env = self._is_own_env(request)
        creator = request.query.get("creatorId")
        if creator is not None and _guid(creator) is None:
            raise BindingError("creatorId", f"The value '{creator}' is not valid.")
        page = self._store.audit_logs(
            ref_type=request.query.get("refType"),
            ref_id=request.query.get("refId"),
            query=request.query.get("query"),
            creator_id=_guid(creator) if creator else None,
            from_ms=_query_int(request, "from"),
            to_ms=_query_int(request, "to"),
            **_paging(request),
        )
        return envelope(page if own_env else {"totalCount": 0, "items": []})

    # ---- admin -------------------------------------------------------------------------------

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults.to_json())

    async def _set_faults(self, request: web.Request) -> web.Response:
        """Set the knobs present in the body; `dropStreamingConnections: true` also drops SDKs."""
        try:
            body = await _admin_body(request)
            drop = body.pop("dropStreamingConnections", False)
            if not isinstance(drop, bool):
                raise ValueError("dropStreamingConnections is a boolean")
            self._faults.update_from_json(body)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        dropped = await self._drop_streaming() if drop else 0
        return web.json_response({**self._faults.to_json(), "droppedStreamingConnections": dropped})

    async def _reset_route(self, request: web.Request) -> web.Response:
        await self._reset()
        return web.Response(status=204)

    async def _mint_token(self, request: web.Request) -> web.Response:
        """`{"name", "allow"?, "deny"?}`: a new token; `allow` defaults to `["*"]`, `deny` to `[]`."""
        try:
            body = await _admin_body(request)
            name = body.get("name")
            if not isinstance(name, str):
                raise ValueError("name is a string")
            token = self._tokens.mint(name, allow=_actions(body, "allow", ["*"]), deny=_actions(body, "deny", []))
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(token.to_json())

    async def _set_token_policy(self, request: web.Request) -> web.Response:
        """`{"token", "allow"?, "deny"?}`: replace that token's policy, from its next request on."""
        try:
            body = await _admin_body(request)
            value = body.get("token")
            if not isinstance(value, str):
                raise ValueError("token is a string")
            allow, deny = _actions(body, "allow", ["*"]), _actions(body, "deny", [])
            token = self._tokens.set_policy(value, allow=allow, deny=deny)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        except UnknownToken:
            return web.json_response({"error": "no such access token"}, status=404)
        return web.json_response(token.to_json())


async def _admin_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error.msg}") from None
    if not isinstance(body, dict):
        raise ValueError("a JSON object is expected")
    return body


def _actions(body: dict[str, Any], name: str, default: list[str]) -> list[str]:
    actions = body.get(name, default)
    if not isinstance(actions, list) or not all(isinstance(action, str) for action in actions):
        raise ValueError(f"{name} is a list of permission names")
    return actions
