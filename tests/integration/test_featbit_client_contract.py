"""FeatBitClient against the FeatBit double: each error class from a real HTTP exchange, and the happy path
from a stage's targeting down to what FeatBit's own SDK serves."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fbclient import FBClient

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
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users

pytestmark = pytest.mark.integration

FLAG = "checkout-ai"
COMMENT = "AIRollout default/checkout-ai: stage 1 (5%), guardrails healthy"


@pytest.fixture
def double(featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(key=FLAG, variations=[("canary", "true"), ("stable", "false")], is_enabled=True)
    return featbit_double


@pytest.fixture
async def client(double: FeatBitDouble) -> AsyncIterator[FeatBitClient]:
    # Short timeouts and backoff keep fault tests fast; the production defaults are seconds.
    async with FeatBitClient(double.api_url, double.token, timeout=0.5, max_attempts=3, backoff_base=0.01) as client:
        yield client


def _stage(exposure: Exposure | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda flag: build_targeting(flag, exposure, candidate="canary", control="stable")


async def test_a_stage_written_through_the_client_is_what_the_sdk_serves(
    double: FeatBitDouble, client: FeatBitClient, featbit_client: Callable[..., FBClient]
) -> None:
    internal = double.create_segment(key="internal", included=["user-1", "user-2"])
    segments = await client.resolve_segments(double.env_id, ["internal"])
    sdk = featbit_client()
    users = synthetic_users(2000)
    insider = {"key": "user-1", "name": "insider"}

    revision = await client.write_targeting(
        double.env_id, FLAG, _stage(Exposure(5, granted_segment_ids=tuple(segments.values()))), comment=COMMENT
    )

    assert segments == {"internal": internal["id"]}
    assert revision == double.get_flag(FLAG)["revision"]
    # The rule arrives in the same flag patch as the fallthrough, so once it matches the whole stage is in.
    wait_for(
        "the SDK received the new targeting",
        lambda: sdk.variation_detail(FLAG, insider, None).reason == "rule match",
        timeout=10,
    )
    served = count_variations(sdk, FLAG, users)
    assert 60 <= served["canary"] <= 140
    assert served["canary"] + served["stable"] == len(users)
    assert count_variations(sdk, FLAG, [{"key": "user-1", "name": "u"}, {"key": "user-2", "name": "u"}]) == {
        "canary": 2
    }


async def test_every_write_leaves_its_comment_in_the_audit_log(double: FeatBitDouble, client: FeatBitClient) -> None:
    await client.write_targeting(double.env_id, FLAG, _stage(Exposure(5)), comment=COMMENT)
    await client.toggle(double.env_id, FLAG, False, comment="kill switch: error rate 7% > 2%")

    entries = await client.audit_log(double.env_id, double.get_flag(FLAG)["id"])

    comments = [entry["comment"] for entry in entries]
    assert COMMENT in comments
    assert "kill switch: error rate 7% > 2%" in comments
    assert {entry["creatorEmail"] for entry in entries if entry["comment"] == COMMENT} == {"Access token"}


async def test_writing_the_same_stage_again_changes_nothing(double: FeatBitDouble, client: FeatBitClient) -> None:
    first = await client.write_targeting(double.env_id, FLAG, _stage(Exposure(25)), comment=COMMENT)
    entries = await client.audit_log(double.env_id, double.get_flag(FLAG)["id"])

    again = await client.write_targeting(double.env_id, FLAG, _stage(Exposure(25)), comment=COMMENT)

    assert again == first == double.get_flag(FLAG)["revision"]
    assert await client.audit_log(double.env_id, double.get_flag(FLAG)["id"]) == entries


async def test_the_kill_switch_turns_the_flag_off_and_returns_its_revision(
    double: FeatBitDouble, client: FeatBitClient
) -> None:
    revision = await client.toggle(double.env_id, FLAG, False, comment="kill switch")

    flag = double.get_flag(FLAG)
    assert flag["isEnabled"] is False
    assert revision == flag["revision"]


async def test_a_wrong_token_is_reported_as_invalid_without_showing_either_token(double: FeatBitDouble) -> None:
    wrong = "api-" + uuid.uuid4().hex
    async with FeatBitClient(double.api_url, wrong) as client:
        with pytest.raises(InvalidToken, match="401") as caught:
            await client.get_flag(double.env_id, FLAG)

    assert wrong not in str(caught.value)
    assert double.token not in str(caught.value)


async def test_toggling_an_unknown_flag_gets_403_from_featbit_and_reports_flag_not_found(
    double: FeatBitDouble, client: FeatBitClient
) -> None:
    with pytest.raises(FlagNotFound, match="'no-such-flag' does not exist") as caught:
        await client.toggle(double.env_id, "no-such-flag", False, comment="kill switch")

    assert isinstance(caught.value.__cause__, PermissionDenied)
    assert caught.value.__cause__.status == 403


async def test_another_environment_is_forbidden(client: FeatBitClient) -> None:
    with pytest.raises(PermissionDenied, match="CanAccessEnv"):
        await client.get_flag(str(uuid.uuid4()), FLAG)


async def test_an_unknown_flag_is_not_found(double: FeatBitDouble, client: FeatBitClient) -> None:
    with pytest.raises(FlagNotFound, match="404"):
        await client.get_flag(double.env_id, "no-such-flag")
    with pytest.raises(FlagNotFound, match="404"):
        await client.write_targeting(double.env_id, "no-such-flag", _stage(Exposure(5)), comment=COMMENT)


async def test_a_concurrent_edit_is_re_read_and_built_upon(double: FeatBitDouble, client: FeatBitClient) -> None:
    revisions: list[str] = []

    def derive(flag: dict[str, Any]) -> dict[str, Any]:
        revisions.append(flag["revision"])
        return _stage(Exposure(10))(flag)

    double.faults.conflicts = 1
    revision = await client.write_targeting(double.env_id, FLAG, derive, comment=COMMENT)

    assert len(revisions) == 2
    assert len(set(revisions)) == 2
    flag = double.get_flag(FLAG)
    assert revision == flag["revision"]
    assert [v["rollout"] for v in flag["fallthrough"]["variations"]] == [[0, 0.1], [0.1, 1]]


async def test_endless_concurrent_edits_end_in_a_revision_conflict(
    double: FeatBitDouble, client: FeatBitClient
) -> None:
    double.faults.conflicts = 10

    with pytest.raises(RevisionConflict, match="3 times in a row"):
        await client.write_targeting(double.env_id, FLAG, _stage(Exposure(10)), comment=COMMENT, max_conflicts=2)


async def test_a_stale_revision_is_a_conflict(double: FeatBitDouble, client: FeatBitClient) -> None:
    stale = double.get_flag(FLAG)
    await client.toggle(double.env_id, FLAG, False, comment="someone else")
    await client.write_targeting(double.env_id, FLAG, _stage(Exposure(1)), comment=COMMENT)

    with pytest.raises(RevisionConflict, match="409"):
        await client.put_targeting(
            double.env_id, FLAG, revision=stale["revision"], targeting=_stage(Exposure(2))(stale), comment=COMMENT
        )


async def test_a_used_key_is_rejected_with_featbits_code(double: FeatBitDouble, client: FeatBitClient) -> None:
    with pytest.raises(FeatBitRejected, match="KeyHasBeenUsed") as caught:
        await client.create_flag(
            double.env_id,
            key=FLAG,
            variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary",
            disabled_variation_id="stable",
        )

    assert caught.value.status == 422
    assert caught.value.codes == ("KeyHasBeenUsed",)


async def test_an_invalid_flag_is_rejected_with_featbits_validation_codes(
    double: FeatBitDouble, client: FeatBitClient
) -> None:
    with pytest.raises(FeatBitRejected, match="key_is_invalid") as caught:
        await client.create_flag(
            double.env_id,
            key="not a key",
            variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary",
            disabled_variation_id="stable",
        )

    assert caught.value.status == 400


async def test_a_5xx_burst_is_retried_until_it_passes(double: FeatBitDouble, client: FeatBitClient) -> None:
    double.faults.errors = 2

    flag = await client.get_flag(double.env_id, FLAG)

    assert flag["key"] == FLAG
    assert double.faults.errors == 0


async def test_a_5xx_outlasting_the_retries_is_unavailable(double: FeatBitDouble, client: FeatBitClient) -> None:
    double.faults.update(errors=3, error_status=502)

    with pytest.raises(FeatBitUnavailable, match="3 attempts, last: HTTP 502"):
        await client.toggle(double.env_id, FLAG, False, comment="kill switch")

    assert double.get_flag(FLAG)["isEnabled"] is True


async def test_a_timeout_is_retried(double: FeatBitDouble, client: FeatBitClient) -> None:
    double.faults.timeouts = 1

    revision = await client.toggle(double.env_id, FLAG, False, comment="kill switch")

    assert revision == double.get_flag(FLAG)["revision"]


async def test_timeouts_outlasting_the_retries_are_unavailable(double: FeatBitDouble, client: FeatBitClient) -> None:
    double.faults.timeouts = 3

    with pytest.raises(FeatBitUnavailable, match="ReadTimeout"):
        await client.get_flag(double.env_id, FLAG)


async def test_an_unreachable_featbit_is_unavailable() -> None:
    async with FeatBitClient("http://127.0.0.1:9", "api-x", timeout=0.5, max_attempts=2, backoff_base=0.01) as client:
        with pytest.raises(FeatBitUnavailable, match="2 attempts, last: ConnectError"):
            await client.get_flag(str(uuid.uuid4()), FLAG)


async def test_segments_resolve_by_key_or_id_and_unknown_ones_are_named(
    double: FeatBitDouble, client: FeatBitClient
) -> None:
    internal = double.create_segment(key="internal", included=["user-1"])
    beta = await client.create_segment(
        double.env_id, key="beta", scopes=[double.env_resource_name], included=["user-2"], comment=COMMENT
    )

    resolved = await client.resolve_segments(double.env_id, ["beta", internal["id"]])
    with pytest.raises(SegmentNotFound, match=r"'gamma'.*beta, internal"):
        await client.resolve_segments(double.env_id, ["internal", "gamma"])

    assert resolved == {"beta": beta["id"], internal["id"]: internal["id"]}
    assert beta["included"] == ["user-2"]


async def test_the_token_stays_out_of_every_log_line_and_error(
    double: FeatBitDouble, client: FeatBitClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "airollout"):
        caplog.set_level(logging.DEBUG, logger=name)
    errors: list[FeatBitError] = []
    double.faults.update(errors=1, timeouts=1)
    await client.write_targeting(double.env_id, FLAG, _stage(Exposure(5)), comment=COMMENT)
    for attempt in (
        client.get_flag(double.env_id, "no-such-flag"),
        client.toggle(double.env_id, "no-such-flag", True, comment="resume"),
        client.resolve_segments(double.env_id, ["nope"]),
    ):
        try:
            await attempt
        except FeatBitError as error:
            errors.append(error)
    double.faults.errors = 3
    try:
        await client.get_flag(double.env_id, FLAG)
    except FeatBitUnavailable as error:
        errors.append(error)

    assert len(errors) == 4
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    texts = [caplog.text, repr(client)] + ["".join(traceback.format_exception(error)) + repr(error) for error in errors]
    assert not [text for text in texts if double.token in text]
