"""FeatBitClient against httpx.MockTransport: faults a mock produces exactly, retries, backoff, secrecy.

Behaviour against a FeatBit-like server lives in tests/integration/test_featbit_client_contract.py.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import airollout.featbit
from airollout.featbit import (
    Exposure,
    FeatBitClient,
    FeatBitError,
    FeatBitRejected,
    FeatBitUnavailable,
    FlagNotFound,
    InvalidToken,
    PermissionDenied,
    RevisionConflict,
    SegmentNotFound,
    build_targeting,
)

TOKEN = "api-c2VjcmV0LXRva2VuLWRvLW5vdC1sZWFr"
ENV = "6f9b4a10-0000-4000-8000-00000000e4e4"
FLAG_PATH = f"/api/v1/envs/{ENV}/feature-flags/checkout-ai"
FLAG: dict[str, Any] = {
    "id": "5d3c7a2e-0000-4000-8000-000000000001",
    "key": "checkout-ai",
    "revision": "rev-1",
    "variations": [
        {"id": "canary", "name": "canary", "value": "true"},
        {"id": "stable", "name": "stable", "value": "false"},
    ],
    "targetUsers": [],
    "rules": [],
    "fallthrough": {
        "dispatchKey": None,
        "includedInExpt": True,
        "variations": [{"id": "stable", "rollout": [0, 1], "exptRollout": 1}],
    },
    "exptIncludeAllTargets": True,
}

Handler = Callable[[httpx.Request], httpx.Response]


def _ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "errors": [], "data": data})


def _failed(status: int, *codes: str) -> httpx.Response:
    return httpx.Response(status, json={"success": False, "errors": list(codes), "data": None})


class _Recorder:
    """A transport answering from a handler, remembering every request and every backoff sleep."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self._handler = handler

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, **options: Any) -> FeatBitClient:
        options = {"sleep": self._sleep, "random": lambda: 1.0, **options}
        return FeatBitClient("http://featbit.test:5000", TOKEN, transport=httpx.MockTransport(self.handle), **options)

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def _sequence(*answers: httpx.Response | Exception) -> Handler:
    """A handler that gives the answers in turn, raising the exceptions."""
    remaining: Iterator[httpx.Response | Exception] = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(remaining)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


def test_the_public_surface_is_pinned() -> None:
    assert sorted(airollout.featbit.__all__) == [
        "AUDIENCE_RULE_ID",
        "Exposure",
        "FeatBitClient",
        "FeatBitError",
        "FeatBitRejected",
        "FeatBitUnavailable",
        "FlagNotFound",
        "GRANTED_RULE_ID",
        "InvalidToken",
        "MANAGED_RULE_PREFIX",
        "PermissionDenied",
        "RevisionConflict",
        "SegmentNotFound",
        "VariationNotFound",
        "build_targeting",
        "fingerprint",
        "targeting_of",
    ]


async def test_requests_carry_the_raw_token_and_return_the_envelopes_data() -> None:
    recorder = _Recorder(_sequence(_ok(FLAG)))

    async with recorder.client() as client:
        flag = await client.get_flag(ENV, "checkout-ai")

    assert flag == FLAG
    assert recorder.paths == [f"GET {FLAG_PATH}"]
    assert recorder.requests[0].headers["Authorization"] == TOKEN
    assert "Organization" not in recorder.requests[0].headers


async def test_a_5xx_burst_is_retried_until_it_passes() -> None:
    recorder = _Recorder(_sequence(_failed(503), _failed(500, "InternalServerError"), _ok(FLAG)))

    async with recorder.client() as client:
        flag = await client.get_flag(ENV, "checkout-ai")

    assert flag["revision"] == "rev-1"
    assert len(recorder.requests) == 3
    assert recorder.sleeps == [0.2, 0.4]


@pytest.mark.parametrize(
    "fault",
    [
        _failed(502),
        httpx.ConnectError(f"proxy refused Authorization: {TOKEN}"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["5xx", "connect", "timeout", "disconnect"],
)
async def test_transient_faults_are_tried_max_attempts_times_then_reported_unavailable(
    fault: httpx.Response | Exception,
) -> None:
    recorder = _Recorder(_sequence(*[fault] * 4))

    async with recorder.client(max_attempts=4) as client:
        with pytest.raises(FeatBitUnavailable, match="4 attempts") as caught:
            await client.get_flag(ENV, "checkout-ai")

    assert len(recorder.requests) == 4
    assert len(recorder.sleeps) == 3
    assert "http://featbit.test:5000" in str(caught.value)


async def test_the_backoff_doubles_up_to_its_cap() -> None:
    recorder = _Recorder(_sequence(*[_failed(503)] * 7))

    async with recorder.client(max_attempts=7, backoff_base=0.25, backoff_cap=1.5) as client:
        with pytest.raises(FeatBitUnavailable):
            await client.get_flag(ENV, "checkout-ai")

    assert recorder.sleeps == [0.25, 0.5, 1.0, 1.5, 1.5, 1.5]


@given(st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=5, max_size=5))
async def test_jitter_keeps_each_delay_between_half_and_all_of_the_backoff(draws: list[float]) -> None:
    recorder = _Recorder(_sequence(*[_failed(503)] * 6))
    randoms = iter(draws)

    async with recorder.client(max_attempts=6, random=lambda: next(randoms)) as client:
        with pytest.raises(FeatBitUnavailable):
            await client.get_flag(ENV, "checkout-ai")

    for attempt, delay in enumerate(recorder.sleeps, start=1):
        ceiling = min(3.0, 0.2 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (_failed(401, "Unauthorized"), InvalidToken, ["401", "access token", "Secret"]),
        (_failed(403, "Forbidden"), PermissionDenied, ["403", "CanAccessEnv", "does not exist"]),
        (_failed(404, "ResourceNotFound"), FlagNotFound, ["404", "'checkout-ai'", ENV]),
        (_failed(400, "key_is_invalid"), FeatBitRejected, ["400", "key_is_invalid"]),
        (_failed(422, "KeyHasBeenUsed"), FeatBitRejected, ["422", "KeyHasBeenUsed"]),
        (_failed(200, "Path /x does not exist"), FeatBitRejected, ["200", "Path /x does not exist"]),
        (httpx.Response(404), FeatBitError, ["no such route", "API server"]),
        (
            httpx.Response(400, json={"title": "One or more validation errors occurred.", "status": 400}),
            FeatBitRejected,
            ["400", "validation errors"],
        ),
        (httpx.Response(200, text="<html>login</html>"), FeatBitError, ["unexpected answer", "login"]),
    ],
    ids=["401", "403", "404", "400", "422", "200-unsuccessful", "404-no-route", "400-problem", "html"],
)
async def test_a_4xx_is_never_retried_and_maps_to_an_actionable_error(
    answer: httpx.Response, error: type[FeatBitError], words: list[str]
) -> None:
    recorder = _Recorder(_sequence(answer))

    async with recorder.client() as client:
        with pytest.raises(error) as caught:
            await client.get_flag(ENV, "checkout-ai")

    assert type(caught.value) is error
    assert len(recorder.requests) == 1
    assert recorder.sleeps == []
    assert all(word in str(caught.value) for word in words), str(caught.value)


def _targeting_server(conflicts: int, flags: list[dict[str, Any]]) -> Handler:
    """Answers GETs with the next flag version and PUT targeting with 409 `conflicts` times, then success."""
    state = {"conflicts": conflicts, "reads": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            flag = flags[min(state["reads"], len(flags) - 1)]
            state["reads"] += 1
            return _ok(flag)
        if state["conflicts"]:
            state["conflicts"] -= 1
            return _failed(409, "Conflict")
        return _ok("rev-new")

    return handler


async def test_a_conflict_re_reads_the_flag_and_derives_the_targeting_again() -> None:
    edited = {**FLAG, "revision": "rev-2", "targetUsers": [{"keyIds": ["qa-1"], "variationId": "canary"}]}
    recorder = _Recorder(_targeting_server(1, [FLAG, edited]))
    seen: list[str] = []

    def derive(flag: dict[str, Any]) -> dict[str, Any]:
        seen.append(flag["revision"])
        return build_targeting(flag, Exposure(5), candidate="canary", control="stable")

    async with recorder.client() as client:
        revision = await client.write_targeting(ENV, "checkout-ai", derive, comment="step 1: 5%")

    assert revision == "rev-new"
    assert seen == ["rev-1", "rev-2"]
    assert recorder.paths == [f"GET {FLAG_PATH}", f"PUT {FLAG_PATH}/targeting"] * 2
    final = json.loads(recorder.requests[-1].content)
    assert final["revision"] == "rev-2"
    assert final["comment"] == "step 1: 5%"
    assert final["targeting"]["targetUsers"] == edited["targetUsers"]


async def test_conflicts_beyond_the_limit_give_up_with_a_revision_conflict() -> None:
    recorder = _Recorder(_targeting_server(10, [FLAG]))

    def derive(flag: dict[str, Any]) -> dict[str, Any]:
        return build_targeting(flag, Exposure(5), candidate="canary", control="stable")

    async with recorder.client() as client:
        with pytest.raises(RevisionConflict, match="3 times in a row"):
            await client.write_targeting(ENV, "checkout-ai", derive, comment="step 1: 5%", max_conflicts=2)

    assert recorder.paths.count(f"PUT {FLAG_PATH}/targeting") == 3


async def test_an_unchanged_targeting_is_not_written_again() -> None:
    current = {**FLAG, **build_targeting(FLAG, Exposure(5), candidate="canary", control="stable")}
    recorder = _Recorder(_sequence(_ok(current)))

    async with recorder.client() as client:
        revision = await client.write_targeting(
            ENV,
            "checkout-ai",
            lambda flag: build_targeting(flag, Exposure(5), candidate="canary", control="stable"),
            comment="step 1: 5%",
        )

    assert revision == "rev-1"
    assert recorder.paths == [f"GET {FLAG_PATH}"]


async def test_a_toggle_sends_its_comment_and_returns_the_revision() -> None:
    recorder = _Recorder(_sequence(_ok("rev-9")))

    async with recorder.client() as client:
        revision = await client.toggle(ENV, "checkout-ai", False, comment="kill switch: error rate breached")

    assert revision == "rev-9"
    assert recorder.paths == [f"PUT {FLAG_PATH}/toggle/false"]
    assert json.loads(recorder.requests[0].content) == {"comment": "kill switch: error rate breached"}


async def test_a_403_on_toggle_for_an_unknown_flag_is_reported_as_flag_not_found() -> None:
    recorder = _Recorder(_sequence(_failed(403, "Forbidden"), _failed(404, "ResourceNotFound")))

    async with recorder.client() as client:
        with pytest.raises(FlagNotFound, match="does not exist") as caught:
            await client.toggle(ENV, "checkout-ai", False, comment="kill switch")

    assert isinstance(caught.value.__cause__, PermissionDenied)


async def test_a_403_on_toggle_for_an_existing_flag_names_the_missing_permission() -> None:
    recorder = _Recorder(_sequence(_failed(403, "Forbidden"), _ok(FLAG)))

    async with recorder.client() as client:
        with pytest.raises(PermissionDenied, match="the flag exists, so the token lacks the ToggleFlag"):
            await client.toggle(ENV, "checkout-ai", True, comment="resume")


async def test_writes_without_a_comment_or_with_partial_targeting_are_refused_before_sending() -> None:
    recorder = _Recorder(_sequence())

    async with recorder.client() as client:
        with pytest.raises(ValueError, match="comment"):
            await client.toggle(ENV, "checkout-ai", False, comment=" ")
        with pytest.raises(ValueError, match="lacks rules"):
            await client.put_targeting(
                ENV,
                "checkout-ai",
                revision="rev-1",
                targeting={"targetUsers": [], "rules": None, "fallthrough": {}, "exptIncludeAllTargets": True},
                comment="step 1",
            )
        with pytest.raises(ValueError, match="must not be empty"):
            await client.get_flag(ENV, "")

    assert recorder.requests == []


async def test_segments_resolve_by_key_or_id_across_pages() -> None:
    items = [{"id": f"id-{i}", "key": f"seg-{i}"} for i in range(150)]

    def handler(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["pageIndex"]), int(request.url.params["pageSize"])
        return _ok({"totalCount": len(items), "items": items[page * size : (page + 1) * size]})

    recorder = _Recorder(handler)
    async with recorder.client() as client:
        resolved = await client.resolve_segments(ENV, ["seg-149", "id-3", "seg-0"])

    assert resolved == {"seg-149": "id-149", "id-3": "id-3", "seg-0": "id-0"}
    assert len(recorder.requests) == 2
    assert recorder.requests[0].url.params["isArchived"] == "false"


async def test_unknown_segments_are_all_named_in_one_error() -> None:
    recorder = _Recorder(_sequence(_ok({"totalCount": 1, "items": [{"id": "id-1", "key": "internal"}]})))

    async with recorder.client() as client:
        with pytest.raises(SegmentNotFound) as caught:
            await client.resolve_segments(ENV, ["internal", "beta", "qa"])

    assert all(word in str(caught.value) for word in ("'beta'", "'qa'", "internal", ENV))


async def test_the_token_never_appears_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = httpx.Response(400, text=f"bad header Authorization: {TOKEN}")
    answers: list[httpx.Response | Exception] = [
        _failed(401, "Unauthorized"),
        _failed(503),
        httpx.ConnectError(f"proxy refused Authorization: {TOKEN}"),
        _failed(503),
        _failed(503),
        echo,
        _failed(403, "Forbidden"),
        _failed(403, "Forbidden"),
    ]
    recorder = _Recorder(_sequence(*answers))
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    async with recorder.client(max_attempts=3) as client:
        for _ in range(4):
            try:
                await client.toggle(ENV, "checkout-ai", False, comment="kill switch")
            except FeatBitError as exc:
                errors.append(exc)
        texts = [repr(client), str(vars(client)), caplog.text]

    assert len(errors) == 4
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    assert not [text for text in texts if TOKEN in text]


async def test_a_token_read_from_a_secret_with_a_trailing_newline_still_works() -> None:
    recorder = _Recorder(_sequence(_ok(FLAG)))
    transport = httpx.MockTransport(recorder.handle)

    async with FeatBitClient("http://featbit.test:5000", TOKEN + "\n", transport=transport) as client:
        await client.get_flag(ENV, "checkout-ai")

    assert recorder.requests[0].headers["Authorization"] == TOKEN


@pytest.mark.parametrize("token", ["", "  ", "api-abc def", "api-\u00e9t\u00e9", "api-\x00"])
def test_a_token_a_header_cannot_carry_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ValueError, match="access token") as caught:
        FeatBitClient("http://featbit.test:5000", token)

    assert not token.strip() or token.strip() not in str(caught.value)


@pytest.mark.parametrize("url", ["featbit:5000", "ftp://featbit", "http://"])
def test_the_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        FeatBitClient(url, TOKEN)


CANARY_25 = {
    **{part: FLAG[part] for part in ("targetUsers", "rules", "exptIncludeAllTargets")},
    "fallthrough": {
        "dispatchKey": "keyId",
        "includedInExpt": True,
        "variations": [
            {"id": "canary", "rollout": [0, 0.25], "exptRollout": 1},
            {"id": "stable", "rollout": [0.25, 1], "exptRollout": 1},
        ],
    },
}


async def test_a_write_saved_behind_a_500_is_written_again_so_sdks_hear_of_it() -> None:
    # FeatBit saved the first PUT, failed its audit insert and answered 500; the retry meets 409, and the
    # re-read flag already carries the change. Skipping the write now would leave SDKs on the old targeting.
    saved = {**FLAG, **CANARY_25, "revision": "rev-2"}
    recorder = _Recorder(_sequence(_ok(FLAG), httpx.Response(500), _failed(409, "Conflict"), _ok(saved), _ok("rev-3")))
    async with recorder.client() as client:
        revision = await client.write_targeting(ENV, "checkout-ai", lambda _: CANARY_25, comment="stage 25%")
    assert revision == "rev-3"
    assert recorder.paths == [f"GET {FLAG_PATH}"] + [f"PUT {FLAG_PATH}/targeting"] * 2 + [
        f"GET {FLAG_PATH}",
        f"PUT {FLAG_PATH}/targeting",
    ]
    assert json.loads(recorder.requests[-1].content)["revision"] == "rev-2"


async def test_a_kill_switch_saved_behind_a_500_is_published_again_as_stored() -> None:
    off = {**FLAG, "isEnabled": False, "revision": "rev-2"}
    recorder = _Recorder(_sequence(httpx.Response(500), _ok("rev-2"), _ok(off), _ok("rev-3")))
    async with recorder.client() as client:
        revision = await client.toggle(ENV, "checkout-ai", False, comment="kill switch")
    assert revision == "rev-3"
    assert recorder.paths[-1] == f"PUT {FLAG_PATH}/targeting"
    republished = json.loads(recorder.requests[-1].content)
    assert republished["targeting"] == {
        part: FLAG[part] for part in ("targetUsers", "rules", "fallthrough", "exptIncludeAllTargets")
    }


async def test_a_clean_write_of_what_is_already_there_sends_nothing() -> None:
    recorder = _Recorder(_sequence(_ok({**FLAG, **CANARY_25})))
    async with recorder.client() as client:
        assert await client.write_targeting(ENV, "checkout-ai", lambda _: CANARY_25, comment="again") == "rev-1"
    assert recorder.paths == [f"GET {FLAG_PATH}"]
