"""The operator's only connection to FeatBit's management API.

A thin async httpx client. Beyond sending requests, it owns three things the rest of the operator should
not have to think about:

* turning FeatBit's answers (a `{success, errors, data}` envelope, and statuses that sometimes mislead,
  such as 403 for an unknown flag) into the typed errors of `airollout.featbit.errors`;
* retrying what is worth retrying (5xx, connection errors, timeouts) with capped, jittered exponential
  backoff, and never a 4xx;
* optimistic concurrency: `write_targeting` re-reads and re-derives the targeting when FeatBit answers 409,
  instead of blindly resending a stale body.

The access token lives only in the httpx client's default headers, whose repr httpx masks. It never
reaches a log line, an exception message or this class's repr.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from airollout import __version__
from airollout.featbit.errors import (
    FeatBitError,
    FeatBitRejected,
    FeatBitUnavailable,
    FlagNotFound,
    InvalidToken,
    PermissionDenied,
    RevisionConflict,
    SegmentNotFound,
)
from airollout.featbit.targeting import targeting_of

__all__ = ["COMMENT_LIMIT", "FeatBitClient"]

logger = logging.getLogger(__name__)

COMMENT_LIMIT = 512
"""FeatBit's audit-log comment column (audit_logs.comment varchar(512))."""
_TARGETING_KEYS = ("targetUsers", "rules", "fallthrough", "exptIncludeAllTargets")
_SEGMENT_PAGE_SIZE = 100
_BODY_EXCERPT = 200
# Failures that say nothing about the request itself: the same request may well succeed a moment later.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class _Call:
    """What a request is for, so that a failure can be explained in the caller's terms."""

    action: str  # completes "could not ...", e.g. "read flag 'checkout' in environment 1234"
    permission: str  # the FeatBit permission(s) the access token needs
    missing: str = ""  # what a 404 means, e.g. "flag 'checkout' does not exist in environment 1234"
    not_found: type[FeatBitError] = FeatBitRejected
    forbidden_also: str = ""  # what a 403 may also mean, where FeatBit hides a missing resource behind it


def _flag_call(action: str, env_id: str, key: str, permission: str, *, hides_missing_flag: bool) -> _Call:
    missing = f"flag {key!r} does not exist in environment {env_id}"
    hidden = "the flag does not exist" if hides_missing_flag else "the environment does not exist"
    return _Call(f"{action} flag {key!r} in environment {env_id}", permission, missing, FlagNotFound, hidden)


class FeatBitClient:
    """Async client for the subset of FeatBit's management API (the "Open API") that AIRollout uses.

    `base_url` is the API server (self-hosted default `http://localhost:5000`), not the evaluation
    server. `token` is a FeatBit access token, sent raw in `Authorization` as FeatBit expects.
    Each attempt gets `timeout` seconds; a request is tried at most `max_attempts` times, over at most
    `max_connections` connections (a client is a pool: the kill switch has one of its own). `sleep` and
    `random` are seams for tests of the backoff.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 4,
        max_connections: int = 16,
        backoff_base: float = 0.2,
        backoff_cap: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"FeatBit base URL must be an http(s) URL, got {base_url!r}")
        # Secrets written with `echo` end in a newline; a header cannot carry it.
        token = token.strip()
        if not token:
            raise ValueError("the FeatBit access token is empty")
        if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
            raise ValueError("the FeatBit access token contains characters an HTTP header cannot carry")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._base_url = str(url).rstrip("/")
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={
                "Authorization": token,
                "Accept": "application/json",
                "User-Agent": f"airollout/{__version__}",
            },
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"FeatBitClient(base_url={self._base_url!r})"

    async def __aenter__(self) -> FeatBitClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_flag(self, env_id: str, key: str) -> dict[str, Any]:
        """The full flag, including its `revision`, variations and targeting."""
        call = _flag_call("read", env_id, key, "CanAccessEnv", hides_missing_flag=False)
        return _object(await self._request("GET", _flag_path(env_id, key), call), call)

    async def put_targeting(
        self,
        env_id: str,
        key: str,
        *,
        revision: str,
        targeting: Mapping[str, Any],
        comment: str,
        uncertain: list[str] | None = None,
    ) -> str:
        """Replace the flag's targeting if it is still at `revision`; return the new revision.

        A flag changed since `revision` raises `RevisionConflict`; prefer `write_targeting`, which
        handles that.
        """
        missing = [part for part in _TARGETING_KEYS if targeting.get(part) is None]
        if missing:
            # FeatBit replaces all four parts and fails with a 500 on a null list: refuse before sending.
            raise ValueError(f"targeting for flag {key!r} lacks {', '.join(missing)}")
        call = _flag_call(
            "update the targeting of",
            env_id,
            key,
            "UpdateFlagDefaultRule, UpdateFlagTargetingRules or UpdateFlagIndividualTargeting",
            hides_missing_flag=False,
        )
        body = {"revision": revision, "targeting": dict(targeting), "comment": _comment(comment)}
        path = _flag_path(env_id, key, "/targeting")
        return str(await self._request("PUT", path, call, json=body, uncertain=uncertain))

    async def write_targeting(
        self,
        env_id: str,
        key: str,
        derive: Callable[[dict[str, Any]], Mapping[str, Any]],
        *,
        comment: str,
        max_conflicts: int = 3,
        force: bool = False,
    ) -> str:
        """Read the flag, derive its targeting from what was read, write it; return the flag's revision.

        On a 409 the flag is read again and the targeting derived again from the fresh flag, so a change
        someone made in the meantime is built upon, not overwritten. After `max_conflicts` conflicts in a
        row, `RevisionConflict` is raised. When the derived targeting equals the flag's current one nothing
        is written, so repeating a stage costs one read and leaves no noise in FeatBit's audit log, unless
        ``force``, or unless an attempt failed in a way that may have saved the change without publishing
        it (see `republish`).
        """
        _comment(comment)
        if max_conflicts < 0:
            raise ValueError(f"max_conflicts must not be negative, got {max_conflicts}")
        for conflicts in range(max_conflicts + 1):
            if conflicts:
                await self._sleep(self._backoff(conflicts))
            flag = await self.get_flag(env_id, key)
            targeting = derive(flag)
            revision = flag.get("revision")
            if not isinstance(revision, str):
                raise FeatBitError(
                    f"flag {key!r} in environment {env_id} has no revision: FeatBit 5.3.3 or later is needed "
                    "to update targeting"
                )
            if targeting_of(flag) == targeting_of(targeting) and not force:
                return revision
            uncertain: list[str] = []
            try:
                return await self.put_targeting(
                    env_id, key, revision=revision, targeting=targeting, comment=comment, uncertain=uncertain
                )
            except RevisionConflict:
                # A 409 after a 5xx is most likely our own write, saved but perhaps never sent to SDKs.
                force = force or bool(uncertain)
                logger.info("Flag %r changed while its targeting was being written; reading it again.", key)
        raise RevisionConflict(
            f"flag {key!r} in environment {env_id} changed {max_conflicts + 1} times in a row while its "
            "targeting was being written; something else keeps editing it (another operator, a script?)",
            status=409,
            codes=("Conflict",),
        )

    async def toggle(self, env_id: str, key: str, enabled: bool, *, comment: str) -> str:
        """Switch the flag on or off (the kill switch); return its revision.

        FeatBit answers 403 both for a missing ToggleFlag permission and for an unknown flag, so a 403 is
        followed by one read of the flag to tell which. When an attempt failed in a way that may have
        saved the switch without publishing it, the flag is published again (`republish`) before this
        returns: a switch the SDKs never heard of is no switch.
        """
        state = "true" if enabled else "false"
        verb = f"switch {'on' if enabled else 'off'}"
        call = _flag_call(verb, env_id, key, "ToggleFlag", hides_missing_flag=True)
        path = _flag_path(env_id, key, f"/toggle/{state}")
        uncertain: list[str] = []
        try:
            body = {"comment": _comment(comment)}
            revision = str(await self._request("PUT", path, call, json=body, uncertain=uncertain))
        except PermissionDenied as denied:
            try:
                await self.get_flag(env_id, key)
            except FlagNotFound as missing:
                raise FlagNotFound(
                    f"{call.missing} (FeatBit answered 403 to the switch and 404 to reading the flag)",
                    status=missing.status,
                    codes=missing.codes,
                ) from denied
            except FeatBitError:
                raise denied from None
            raise PermissionDenied(
                f"FeatBit denied the access token permission to {call.action} (403 Forbidden): the flag "
                "exists, so the token lacks the ToggleFlag permission for it",
                status=403,
                codes=denied.codes,
            ) from denied
        if uncertain:
            return await self.republish(env_id, key, comment=comment)
        return revision

    async def republish(self, env_id: str, key: str, *, comment: str) -> str:
        """Write the flag's targeting back unchanged, so FeatBit sends the flag as stored to every SDK.

        FeatBit saves a change before it records the audit entry and pushes the change to SDKs; when the
        audit insert fails it answers 500, the change stays saved and is never pushed. A retry then finds
        the change already made (a toggle to the state it is in is a no-op, a targeting write a 409) and
        would leave SDKs serving the old state. An unchanged targeting write needs no permission beyond
        the token's access to the environment, and is saved and pushed like any other.
        """
        return await self.write_targeting(env_id, key, _stored_targeting, comment=comment, force=True)

    async def resolve_segments(self, env_id: str, keys: Sequence[str]) -> dict[str, str]:
        """Map segment keys (ids are accepted too) to segment ids, in the order given.

        Archived segments do not count. Every unknown key is named in one `SegmentNotFound`.
        """
        if not keys:
            return {}
        call = _Call(f"list the segments of environment {env_id}", "CanAccessEnv")
        path = f"{_env_path(env_id)}/segments"
        by_key: dict[str, str] = {}
        ids: set[str] = set()
        page = 0
        while True:
            params: dict[str, str | int] = {"pageIndex": page, "pageSize": _SEGMENT_PAGE_SIZE, "isArchived": "false"}
            data = _object(await self._request("GET", path, call, params=params), call)
            items = data.get("items") or []
            for item in items:
                by_key[str(item.get("key"))] = str(item.get("id"))
                ids.add(str(item.get("id")))
            page += 1
            if not items or page * _SEGMENT_PAGE_SIZE >= int(data.get("totalCount") or 0):
                break
        missing = [key for key in keys if key not in by_key and key not in ids]
        if missing:
            known = ", ".join(sorted(by_key)) or "none"
            raise SegmentNotFound(
                f"no segment with key or id {', '.join(map(repr, missing))} in environment {env_id} "
                f"(archived segments do not count); its segment keys are: {known}"
            )
        return {key: by_key.get(key, key) for key in keys}

    async def audit_log(self, env_id: str, flag_id: str, *, page_size: int = 20) -> list[dict[str, Any]]:
        """The first page of a flag's audit log, as FeatBit orders it. Takes the flag's id, not its key."""
        call = _Call(f"read the audit log of flag {flag_id} in environment {env_id}", "CanAccessEnv")
        params: dict[str, str | int] = {
            "refType": "FeatureFlag",
            "refId": flag_id,
            "pageIndex": 0,
            "pageSize": page_size,
        }
        data = _object(await self._request("GET", f"{_env_path(env_id)}/audit-logs", call, params=params), call)
        return [dict(item) for item in data.get("items") or []]

    async def create_flag(
        self,
        env_id: str,
        *,
        key: str,
        variations: Sequence[tuple[str, str]],
        enabled_variation_id: str,
        disabled_variation_id: str,
        name: str | None = None,
        variation_type: str = "boolean",
        is_enabled: bool = False,
        description: str = "",
    ) -> dict[str, Any]:
        """Create a flag with `(id, value)` variations and return it. For demos and tests.

        Give variations meaningful ids (`"canary"`, `"stable"`): the id is what OpenFeature reports as the
        evaluated variant.
        """
        call = _Call(f"create flag {key!r} in environment {env_id}", "CreateFlag")
        body = {
            "name": name or key,
            "key": key,
            "isEnabled": is_enabled,
            "description": description,
            "variationType": variation_type,
            "variations": [{"id": vid, "name": vid, "value": value} for vid, value in variations],
            "enabledVariationId": enabled_variation_id,
            "disabledVariationId": disabled_variation_id,
            "tags": [],
        }
        path = f"{_env_path(env_id)}/feature-flags"
        return _object(await self._request("POST", path, call, json=body), call)

    async def create_segment(
        self,
        env_id: str,
        *,
        key: str,
        scopes: Sequence[str],
        name: str | None = None,
        included: Sequence[str] = (),
        description: str = "",
        comment: str = "created for an AIRollout demo",
    ) -> dict[str, Any]:
        """Create an environment segment, add `included` user keys, and return it. For demos and tests.

        `scopes` are resource names such as `organization/<org>:project/<project>:env/<env>` (FeatBit
        requires at least one); a segment reaches an environment's SDKs only if one of them covers it.
        """
        create = _Call(f"create segment {key!r} in environment {env_id}", "CreateSegment")
        body = {
            "type": "environment-specific",
            "name": name or key,
            "key": key,
            "description": description,
            "scopes": list(scopes),
        }
        path = f"{_env_path(env_id)}/segments"
        segment = _object(await self._request("POST", path, create, json=body), create)
        if included:
            segment_id = str(segment["id"])
            update = _Call(
                f"set the users of segment {key!r} in environment {env_id}",
                "UpdateSegmentTargetingUsers",
                f"segment {key!r} ({segment_id}) does not exist in environment {env_id}",
                SegmentNotFound,
            )
            targeting = {"included": list(included), "excluded": [], "rules": [], "comment": _comment(comment)}
            await self._request("PUT", f"{path}/{_quote(segment_id)}/targeting", update, json=targeting)
            segment = {**segment, "included": list(included), "excluded": []}
        return segment

    async def _request(
        self,
        method: str,
        path: str,
        call: _Call,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        uncertain: list[str] | None = None,
    ) -> Any:
        """Send one logical request, retrying transient failures; return the envelope's `data`.

        ``uncertain`` collects the failures after which FeatBit may have acted all the same (a 5xx, a
        timeout): a write that succeeds on a retry may then need publishing again.
        """
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except _TRANSIENT as exc:
                failure = self._describe(exc)
            except httpx.HTTPError as exc:
                raise FeatBitUnavailable(f"could not {call.action} at {self._base_url}: {self._describe(exc)}") from exc
            else:
                logger.debug("FeatBit %s %s -> %d", method, path, response.status_code)
                if response.status_code < 500:
                    return self._unwrap(response, call)
                failure = f"HTTP {response.status_code}{self._detail(response)}"
            if uncertain is not None:
                uncertain.append(failure)
            if attempt == self._max_attempts:
                raise FeatBitUnavailable(
                    f"could not {call.action}: FeatBit at {self._base_url} kept failing "
                    f"({self._max_attempts} attempts, last: {failure}); check that the FeatBit API server "
                    "is up and reachable from the operator"
                )
            delay = self._backoff(attempt)
            logger.warning(
                "FeatBit %s %s failed (%s); retrying in %.2fs (attempt %d of %d).",
                method,
                path,
                failure,
                delay,
                attempt + 1,
                self._max_attempts,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        # Jitter in [delay/2, delay]: spreads retries of several operators apart, never retries at once.
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return float(delay * (0.5 + 0.5 * self._random()))

    def _unwrap(self, response: httpx.Response, call: _Call) -> Any:
        status = response.status_code
        envelope = _envelope(response)
        codes = _codes(envelope)
        quoted = f" {', '.join(codes)}" if codes else ""
        if status == 401:
            raise InvalidToken(
                f"FeatBit rejected the access token (401) while trying to {call.action}: check the Secret that "
                "holds the FeatBit access token (it must be an active FeatBit API access token, which is sent "
                "without a 'Bearer' prefix)",
                status=status,
                codes=codes,
            )
        if status == 403:
            also = f", or {call.forbidden_also} (FeatBit answers 403 for that too)" if call.forbidden_also else ""
            raise PermissionDenied(
                f"FeatBit denied the access token permission to {call.action} (403{quoted}): the token "
                f"lacks the {call.permission} permission{also}",
                status=status,
                codes=codes,
            )
        if status in (404, 405) and envelope is None:
            # Not FeatBit's own "not found" but the web server's: the route itself is missing.
            raise FeatBitError(
                f"could not {call.action}: {self._base_url} has no such route ({status}); check that it is "
                "FeatBit's API server (not its evaluation server) and that FeatBit is 5.4 or later",
                status=status,
            )
        if status == 404:
            raise call.not_found(
                f"{call.missing or f'could not {call.action}: it does not exist'} (404{quoted})",
                status=status,
                codes=codes,
            )
        if status == 409:
            raise RevisionConflict(
                f"could not {call.action}: the flag changed since it was read (409{quoted})",
                status=status,
                codes=codes,
            )
        if status >= 400 or (envelope is not None and envelope.get("success") is False):
            raise FeatBitRejected(
                f"FeatBit refused to {call.action} ({status}"
                f"{': ' + ', '.join(codes) if codes else self._detail(response)})",
                status=status,
                codes=codes,
            )
        if envelope is None or not 200 <= status < 300:
            raise FeatBitError(
                f"could not {call.action}: unexpected answer {status}{self._detail(response)} from "
                f"{self._base_url}; check that it is FeatBit's API server",
                status=status,
            )
        return envelope.get("data")

    def _detail(self, response: httpx.Response) -> str:
        """A short excerpt of an unexpected body, for the error message, with the token masked."""
        envelope = _envelope(response)
        if envelope is not None:
            codes = _codes(envelope)
            return f" ({', '.join(codes)})" if codes else ""
        text = self._redact(" ".join(response.text.split())[:_BODY_EXCERPT])
        return f": {text!r}" if text else ""

    def _describe(self, exc: httpx.HTTPError) -> str:
        return f"{type(exc).__name__}: {self._redact(str(exc))}" if str(exc) else type(exc).__name__

    def _redact(self, text: str) -> str:
        # Bodies and transport errors are not ours: mask the token in case one echoes the request.
        return text.replace(self._http.headers["Authorization"], "***")


def _stored_targeting(flag: Mapping[str, Any]) -> dict[str, Any]:
    """The flag's four targeting parts exactly as FeatBit stores them (null lists as empty ones)."""
    targeting = {part: flag.get(part) for part in _TARGETING_KEYS}
    targeting["targetUsers"] = targeting["targetUsers"] or []
    targeting["rules"] = targeting["rules"] or []
    if targeting["exptIncludeAllTargets"] is None:
        targeting["exptIncludeAllTargets"] = True
    return targeting


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    """FeatBit's `{success, errors, data}` body, or None when the body is something else."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "success" in body else None


def _codes(envelope: Mapping[str, Any] | None) -> tuple[str, ...]:
    errors = envelope.get("errors") if envelope is not None else None
    return tuple(str(code) for code in errors) if isinstance(errors, list) else ()


def _object(data: Any, call: _Call) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FeatBitError(f"could not {call.action}: FeatBit answered {type(data).__name__} data, not an object")
    return data


def _comment(comment: str) -> str:
    """The comment as FeatBit can store it: one line, at most `COMMENT_LIMIT` characters.

    FeatBit records the comment in its audit log, the only trace of why the operator changed a flag. Its
    column is varchar(512): a longer comment saves the flag, fails the audit insert and answers 500, and
    the change is never pushed to SDKs. The start, which names the rollout, is what is kept.
    """
    text = " ".join(comment.split())
    if not text:
        raise ValueError("every change to FeatBit must carry a comment saying who changed it and why")
    return text if len(text) <= COMMENT_LIMIT else text[: COMMENT_LIMIT - 1] + "…"


def _quote(segment: str) -> str:
    if not segment.strip():
        raise ValueError("FeatBit environment ids, flag keys and segment ids must not be empty")
    return quote(segment, safe="")


def _env_path(env_id: str) -> str:
    # FeatBit's routes only match a GUID here; anything else would come back as a bare 404.
    try:
        uuid.UUID(env_id)
    except ValueError:
        raise ValueError(
            f"FeatBit environment ids are GUIDs, got {env_id!r}; GET /api/v1/projects lists them"
        ) from None
    return f"/api/v1/envs/{env_id}"


def _flag_path(env_id: str, key: str, suffix: str = "") -> str:
    return f"{_env_path(env_id)}/feature-flags/{_quote(key)}{suffix}"
