"""One pass over one AIRollout: observe FeatBit and Prometheus, plan, act on FeatBit, return what to commit.

The planner decides; this module only gathers what it needs and carries out its actions, in order:
FeatBit first, and the new status only once FeatBit confirmed. It knows nothing of Kopf: the handlers hand it
the resource and write back what it returns, so it is tested against the FeatBit double without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from pydantic import ValidationError

from airollout.featbit.errors import (
    FeatBitError,
    FeatBitRejected,
    FlagNotFound,
    InvalidToken,
    PermissionDenied,
    SegmentNotFound,
    VariationNotFound,
)
from airollout.featbit.targeting import Exposure, build_targeting, targeting_of
from airollout.guardrails.analysis import Measured, analyse
from airollout.guardrails.source import MetricsSource
from airollout.guardrails.templating import QueryTemplateInvalid, validate_query
from airollout.model import AIRolloutSpec, AIRolloutStatus, Phase
from airollout.planner import (
    ApplyStage,
    Decision,
    FlagSync,
    FlagView,
    Observation,
    Problem,
    RollBack,
    analysis_due,
    analysis_tick,
    granted_segments,
    kill_request,
    plan,
    plan_failure,
)
from airollout.reasons import ConditionType, Reason


class FlagService(Protocol):
    """The part of FeatBit's management API a rollout uses (FeatBitClient is the real one)."""

    async def get_flag(self, env_id: str, key: str) -> dict[str, Any]: ...

    async def write_targeting(
        self, env_id: str, key: str, derive: Any, *, comment: str, force: bool = False
    ) -> str: ...

    async def toggle(self, env_id: str, key: str, enabled: bool, *, comment: str) -> str: ...

    async def resolve_segments(self, env_id: str, keys: Sequence[str]) -> dict[str, str]: ...

    async def audit_log(self, env_id: str, flag_id: str, *, page_size: int = 20) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Rollout:
    """The resource as the handlers read it."""

    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    verb: str | None = None
    actor: str = "operator"
    verb_key: str | None = None
    """What identifies this verb request, recorded in status once handled, so it never runs twice."""
    verb_declarative: bool = False
    """The verb came with an applied manifest (GitOps): it stays in place once handled."""
    verb_reason: str | None = None
    """Why the verb was asked for, recorded with what it does."""
    known_spec: tuple[AIRolloutSpec | None, str | None] | None = None
    """The spec already parsed (the caller's cache for this generation), so it is not parsed again."""
    unresolved: Problem | None = None
    """Why a guardrail template ``spec`` references could not be expanded into it, if one could not."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @cached_property
    def parsed_spec(self) -> tuple[AIRolloutSpec | None, str | None]:
        """The spec, or why it cannot be used: see `parse_spec`."""
        return self.known_spec or parse_spec(self.spec)

    @cached_property
    def parsed_status(self) -> AIRolloutStatus:
        return parse_status(self.status)


@dataclass(frozen=True)
class Connections:
    """How to reach FeatBit and Prometheus for this rollout, or why not."""

    flags: FlagService | None
    metrics: MetricsSource | None = None
    problem: Problem | None = None
    lane: FlagService | None = None
    """The kill-switch lane: turns the candidate off ahead of routine work, retrying until acknowledged."""
    writer: str = ""
    """Which replica writes, when several share the rollouts: appended to FeatBit's audit comment."""


def parse_spec(raw: Mapping[str, Any]) -> tuple[AIRolloutSpec | None, str | None]:
    """The spec, or a message naming each bad field (what the CRD could not check, e.g. query templates)."""
    try:
        spec = AIRolloutSpec.model_validate(dict(raw))
    except ValidationError as error:
        problems = [f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return None, "invalid spec: " + "; ".join(problems)
    for index, guardrail in enumerate(spec.inline_guardrails):
        for field, query in guardrail.queries.items():
            try:
                validate_query(query)
            except QueryTemplateInvalid as error:
                return None, f"invalid spec: spec.guardrails[{index}].{field} ({guardrail.name}): {error}"
    return spec, None


def parse_status(raw: Mapping[str, Any]) -> AIRolloutStatus:
    return AIRolloutStatus.model_validate(dict(raw or {}))


async def reconcile(
    rollout: Rollout,
    connections: Connections,
    now: datetime,
    featbit_turn: AbstractAsyncContextManager[object] | None = None,
    *,
    read_flag: bool = True,
    flag_off_revision: str | None = None,
) -> Decision:
    """Measure, then decide and act, once; the returned decision's status is what to write.

    ``featbit_turn`` is held from reading the flag to the last write, and only then: guardrail queries
    run before it, so a slow Prometheus never delays a kill switch waiting for the same turn.
    """
    measured = await measure_due(rollout, connections, now)
    async with featbit_turn or nullcontext():
        return await act(rollout, connections, measured, now, read_flag=read_flag, flag_off_revision=flag_off_revision)


async def measure_due(rollout: Rollout, connections: Connections, now: datetime) -> Measured | None:
    """What an analysis finds, when one is due (never while the candidate is being turned off)."""
    spec, _invalid = rollout.parsed_spec
    if spec is None or connections.metrics is None or kill_request(rollout.spec, rollout.verb, rollout.actor):
        return None
    status = rollout.parsed_status
    if not analysis_due(spec, status, now):
        return None
    return await _measure(spec, status, rollout.namespace, connections.metrics, now)


async def act(
    rollout: Rollout,
    connections: Connections,
    measured: Measured | None,
    now: datetime,
    *,
    read_flag: bool = True,
    flag_off_revision: str | None = None,
    late: str | None = None,
) -> Decision:
    """Plan from what is known now and carry out the plan's FeatBit actions.

    The flag is read only when ``read_flag`` (a drift check is due) or before a write.
    ``flag_off_revision`` says the kill-switch lane already turned the flag off, so a rollback only has to
    record it and reset the targeting. A spec that does not parse is still switched off that way.
    """
    status = rollout.parsed_status
    spec, invalid = rollout.parsed_spec
    kill = kill_request(rollout.spec, rollout.verb, rollout.actor)
    asked = Observation(
        verb=rollout.verb,
        actor=rollout.actor,
        verb_key=rollout.verb_key,
        verb_declarative=rollout.verb_declarative,
        verb_reason=rollout.verb_reason,
        unresolved=rollout.unresolved,
        kill=kill,
        late=late,
        flag_off_revision=flag_off_revision,
    )
    if spec is None:
        decision = plan(_placeholder_spec(), status, replace(asked, invalid_spec=invalid), now, rollout.generation)
        if any(isinstance(a, RollBack) for a in decision.actions) and flag_off_revision is None:
            # Only the kill-switch lane can turn off a flag whose spec does not parse, and it has not yet.
            waiting = Problem(Reason.FEATBIT_UNAVAILABLE, "the kill switch is not acknowledged by FeatBit yet")
            return plan_failure(status, waiting, now, rollout.generation)
        return _with_revision(decision, flag_off_revision)

    flag_view: FlagView | None = None
    problem = connections.problem
    flags = connections.flags
    if flags is not None and problem is None and read_flag and kill is None:
        try:
            flag_view = await _observe_flag(flags, spec, status, rollout.ref)
        except FeatBitError as error:
            problem = problem_of(error)
        except _Misconfigured as error:
            problem = Problem(Reason.FLAG_MISCONFIGURED, str(error))
    observation = replace(
        asked,
        flag=flag_view,
        problem=problem,
        verdicts=measured.verdicts if measured is not None else None,
        sample_ratio=measured.sample_ratio if measured is not None else None,
    )
    decision = plan(spec, status, observation, now, rollout.generation)
    if not decision.actions:
        return decision
    if flags is None:
        problem = connections.problem or Problem(Reason.FEATBIT_UNAVAILABLE, "no FeatBit connection")
        return plan_failure(status, problem, now, rollout.generation)
    # After a failure FeatBit may have saved a write without telling the SDKs: write in full this time.
    force = _featbit_failed_before(status)
    try:
        revision = None
        for action in decision.actions:
            comment = (
                f"AIRollout {rollout.ref} {action.comment}{f' [{connections.writer}]' if connections.writer else ''}"
            )
            if isinstance(action, ApplyStage):
                revision = await apply_stage(flags, spec, action.index, comment, force=force)
            elif isinstance(action, RollBack):
                lane = connections.lane or flags
                revision = await roll_back(lane, spec, comment, already_off=flag_off_revision, force=force)
    except FeatBitError as error:
        return plan_failure(status, problem_of(error), now, rollout.generation)
    except _Misconfigured as error:
        return plan_failure(status, Problem(Reason.FLAG_MISCONFIGURED, str(error)), now, rollout.generation)
    return _with_revision(decision, revision)


def _with_revision(decision: Decision, revision: str | None) -> Decision:
    if revision is None:
        return decision
    return Decision(
        status=decision.status.model_copy(update={"flag_revision": revision}),
        actions=decision.actions,
        entries=decision.entries,
        consume_verb=decision.consume_verb,
    )


def exposure(spec: AIRolloutSpec, index: int, segment_ids: Mapping[str, str]) -> Exposure:
    stage = spec.path[index]
    return Exposure(
        percentage=stage.percentage,
        granted_segment_ids=tuple(segment_ids[key] for key in granted_segments(spec, index)),
        audience_segment_ids=tuple(segment_ids[key] for key in stage.audience),
    )


async def apply_stage(flags: FlagService, spec: AIRolloutSpec, index: int, comment: str, *, force: bool = False) -> str:
    """Make FeatBit serve stage ``index``; a no-op write when it already does, unless ``force``.

    Returns the revision.
    """
    target = exposure(spec, index, await _segment_ids(flags, spec))
    flag_ref = spec.flag
    enabled: list[bool] = []

    def derive(current: dict[str, Any]) -> dict[str, Any]:
        # Checked on the flag as read for the write itself: one read per stage write, not two.
        _check_kill_switch_serves_control(current, spec)
        enabled[:] = [bool(current.get("isEnabled"))]
        return _targeting(spec, current, target)

    revision = await flags.write_targeting(flag_ref.env_id, flag_ref.key, derive, comment=comment, force=force)
    if enabled != [True]:
        revision = await flags.toggle(flag_ref.env_id, flag_ref.key, True, comment=comment)
    return revision


async def roll_back(
    flags: FlagService, spec: AIRolloutSpec, comment: str, *, already_off: str | None = None, force: bool = False
) -> str:
    """Turn the flag off (everyone gets control at once), then reset its targeting to control.

    ``already_off``: the kill-switch lane turned it off already; only the targeting is left to reset.
    """
    flag_ref = spec.flag
    revision = already_off or await flags.toggle(flag_ref.env_id, flag_ref.key, False, comment=comment)
    try:
        return await flags.write_targeting(
            flag_ref.env_id, flag_ref.key, lambda current: _targeting(spec, current, None), comment=comment, force=force
        )
    except FeatBitError:
        # The candidate is off, which is what matters: the targeting is rewritten whole by the next start.
        return revision


def _targeting(spec: AIRolloutSpec, flag: Mapping[str, Any], target: Exposure | None) -> dict[str, Any]:
    """The targeting that makes ``flag`` serve ``target`` (None: control to everyone) for this rollout."""
    ref = spec.flag
    return build_targeting(flag, target, candidate=ref.candidate, control=ref.control, dispatch_key=ref.dispatch_key)


def _featbit_failed_before(status: AIRolloutStatus) -> bool:
    synced = next((c for c in status.conditions if c.type == ConditionType.FEATBIT_SYNCED), None)
    return synced is not None and synced.status == "False" and synced.reason == Reason.FEATBIT_UNAVAILABLE


def problem_of(error: FeatBitError) -> Problem:
    """A FeatBit failure as a condition: which reason, and the client's actionable message."""
    reason = {
        InvalidToken: Reason.INVALID_TOKEN,
        PermissionDenied: Reason.PERMISSION_DENIED,
        FlagNotFound: Reason.FLAG_NOT_FOUND,
        SegmentNotFound: Reason.SEGMENT_NOT_FOUND,
        VariationNotFound: Reason.VARIATION_NOT_FOUND,
        FeatBitRejected: Reason.FEATBIT_REJECTED,
    }.get(type(error), Reason.FEATBIT_UNAVAILABLE)
    return Problem(reason, str(error))


class _Misconfigured(Exception):
    """The flag cannot be rolled out safely as it is configured in FeatBit."""


def _check_kill_switch_serves_control(flag: Mapping[str, Any], spec: AIRolloutSpec) -> None:
    # The kill switch turns the flag off, and FeatBit then serves its off-variation: it must be the control.
    off = flag.get("disabledVariationId")
    if off != spec.flag.control:
        raise _Misconfigured(
            f"flag {spec.flag.key} serves {off!r} when switched off, so the kill switch would not serve the control "
            f"{spec.flag.control!r}: set the flag's off-variation to {spec.flag.control!r} in FeatBit"
        )


async def _segment_ids(flags: FlagService, spec: AIRolloutSpec) -> dict[str, str]:
    keys = sorted({key for stage in spec.stages for key in (*stage.segments, *stage.audience)})
    if not keys:
        return {}
    return await flags.resolve_segments(spec.flag.env_id, keys)


async def _observe_flag(
    flags: FlagService, spec: AIRolloutSpec, status: AIRolloutStatus, rollout: str
) -> FlagView | None:
    """Read the flag and tell whether it serves what status says, a later stage, or someone else's change.

    A later stage or a rollback is adopted only when FeatBit's audit log says this rollout made the last
    change: a human who sets the flag to what a later stage would serve has still edited it out of band.
    """
    if status.phase not in (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED):
        return None
    flag = await flags.get_flag(spec.flag.env_id, spec.flag.key)
    _check_kill_switch_serves_control(flag, spec)
    revision = str(flag.get("revision"))
    if status.stage_index is None or revision == status.flag_revision:
        return FlagView(sync=FlagSync.IN_SYNC, revision=revision)
    actual = targeting_of(flag)
    segment_ids = await _segment_ids(flags, spec)

    def serves(target: Exposure | None) -> bool:
        return actual == targeting_of(_targeting(spec, flag, target))

    edited = FlagView(sync=FlagSync.EDITED, revision=revision)
    current = min(status.stage_index, len(spec.path) - 1)
    if flag.get("isEnabled") and serves(exposure(spec, current, segment_ids)):
        return FlagView(sync=FlagSync.IN_SYNC, revision=revision)  # e.g. renamed: nothing served changed
    if not await _last_change_was_ours(flags, spec, flag, rollout):
        return edited
    if not flag.get("isEnabled"):
        return FlagView(sync=FlagSync.ROLLED_BACK, revision=revision) if serves(None) else edited
    for index in range(current + 1, len(spec.path)):
        if serves(exposure(spec, index, segment_ids)):
            return FlagView(sync=FlagSync.AHEAD, revision=revision, stage_index=index)
    return edited


async def _last_change_was_ours(flags: FlagService, spec: AIRolloutSpec, flag: Mapping[str, Any], rollout: str) -> bool:
    entries = await flags.audit_log(spec.flag.env_id, str(flag.get("id")), page_size=1)
    return bool(entries) and str(entries[0].get("comment") or "").startswith(f"AIRollout {rollout} ")


async def _measure(
    spec: AIRolloutSpec, status: AIRolloutStatus, namespace: str, metrics: MetricsSource, now: datetime
) -> Measured:
    tick = analysis_tick(spec, status, now)
    return await analyse(spec, status, namespace, metrics, tick if tick is not None else now)


def _placeholder_spec() -> AIRolloutSpec:
    """Stands in for a spec that does not parse: the planner then only records why (InvalidSpec)."""
    return AIRolloutSpec.model_validate(
        {
            "flag": {
                "key": "invalid",
                "envId": "00000000-0000-0000-0000-000000000000",
                "candidate": "a",
                "control": "b",
            },
            "featbit": {"url": "http://invalid", "tokenSecretRef": {"name": "invalid"}},
            "stages": [{"name": "invalid"}],
        }
    )
