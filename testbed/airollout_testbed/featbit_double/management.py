"""The management API ("Open API") routes of FeatBit's API server, as an access token sees them.

Status codes follow FeatBit's pipeline order (featbit-api.md §1.4): route match (a malformed
GUID is a plain 404), authentication (401), the permission check (403, which is also what an
unknown environment, or an unknown flag on a flag-scoped route, produces), model binding (400
ProblemDetails), validation (400 codes), then the handler's own outcomes (404, 409, 422, 500).
A few `/_double/...` admin routes let another process drive faults and resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

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
    Actor,
    BusinessRuleViolated,
    FeatBitError,
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
    ResourceNotFound: 404,
    RevisionConflict: 409,
    BusinessRuleViolated: 422,
    InternalServerError: 500,
}
_ENV = "/api/v1/envs/{env_id}"
_FLAG = _ENV + "/feature-flags/{key}"


class _Forbidden(Exception):
    """The permission check denied the request (403)."""


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
        token: str,
        actor: Actor,
        faults: Faults,
        timeout_hold: float,
        reset: Callable[[], Awaitable[None]],
        drop_streaming: Callable[[], Awaitable[int]],
    ) -> None:
        self._store = store
        self._env_id = store.environment.id
        self._token = token
        self._actor = actor
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
        except _Forbidden:
            return failure(403, ["Forbidden"])
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
        token = request.headers.get("Authorization", "")
        # "Bearer ..." would go to FeatBit's portal (JWT) scheme, which the double does not serve.
        if not token or token.startswith("Bearer ") or not hmac.compare_digest(token, self._token):
            response = failure(401, ["Unauthorized"])
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
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

    def _permit_env(self, request: web.Request) -> None:
        """An env-scoped permission (CanAccessEnv, CreateFlag, CreateSegment)."""
        if not self._is_own_env(request):
            raise _Forbidden()

    def _permit_flag(self, request: web.Request) -> str:
        """A flag-scoped permission: FeatBit denies when it cannot resolve the flag's resource."""
        key = request.match_info["key"]
        if not self._is_own_env(request) or not self._store.has_flag(key):
            raise _Forbidden()
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
        return envelope([self._store.environment.project_view()])

    async def _list_flags(self, request: web.Request) -> web.Response:
        self._permit_env(request)
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
        self._permit_env(request)
        return envelope(self._store.get_flag(request.match_info["key"]))

    async def _create_flag(self, request: web.Request) -> web.Response:
        self._permit_env(request)
        return envelope(self._store.create_flag(await _body(request, CREATE_FLAG), self._actor))

    async def _toggle(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request)
        status = _parse_bool("status", request.match_info["status"])
        change = await _body(request, CHANGE_REQUEST, optional=True)
        return envelope(self._store.toggle(key, status, change["comment"], self._actor))

    async def _update_targeting(self, request: web.Request) -> web.Response:
        key = self._lookup_flag(request)
        update = await _body(request, UPDATE_TARGETING)
        if self._faults.take("conflicts"):
            self._store.edit_concurrently(key)
        return envelope(self._store.update_targeting(key, update, self._actor))

    async def _update_off_variation(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request)
        update = await _body(request, UPDATE_OFF_VARIATION)
        return envelope(self._store.update_off_variation(key, update, self._actor))

    async def _update_variations(self, request: web.Request) -> web.Response:
        key = self._permit_flag(request)
        update = await _body(request, UPDATE_VARIATIONS)
        return envelope(self._store.update_variations(key, update, self._actor))

    async def _set_archived(self, request: web.Request, archived: bool) -> web.Response:
        key = self._permit_flag(request)
        change = await _body(request, CHANGE_REQUEST, optional=True)
        self._store.set_archived(key, archived, change["comment"], self._actor)
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
            self._store.patch_flag(key, operations, self._actor)
        except JsonPatchError as error:
            # FeatBit reports a failed patch in the envelope but keeps HTTP 200.
            return failure(200, [str(error)], data=False)
        return envelope(True)

    async def _list_segments(self, request: web.Request) -> web.Response:
        self._permit_env(request)
        page = self._store.list_segments(
            name=request.query.get("name"),
            is_archived=_query_bool(request, "isArchived") or False,
            **_paging(request),
        )
        return envelope(page)

    async def _get_segment(self, request: web.Request) -> web.Response:
        self._permit_env(request)
        return envelope(self._store.get_segment(self._path_guid(request, "segment_id")))

    async def _create_segment(self, request: web.Request) -> web.Response:
        self._permit_env(request)
        return envelope(self._store.create_segment(await _body(request, CREATE_SEGMENT), self._actor))

    async def _update_segment_targeting(self, request: web.Request) -> web.Response:
        # No permission attribute, and FeatBit loads the segment by id alone, ignoring envId.
        self._path_guid(request, "env_id")
        segment_id = self._path_guid(request, "segment_id")
        update = await _body(request, SEGMENT_TARGETING)
        self._store.update_segment_targeting(segment_id, update, self._actor)
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
            body = json.loads(await request.text() or "{}")
            if not isinstance(body, dict):
                raise ValueError("a JSON object of fault knobs is expected")
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
