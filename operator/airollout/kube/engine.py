"""The engine: every AIRollout of this process, worked on only when something about it is due.

Kopf's watch hands each change to `Engine.observe`. A change that asks for the kill switch (or abort)
starts the kill-switch lane at once, in a task of its own; any other change wakes the rollout in the
scheduler. A woken rollout is reconciled (measure, decide, act), its status written when something a
reader cares about changed, its Events posted after that write, and its next deadline derived from the
new status. Between deadlines a rollout costs nothing.

The status the engine planned last is kept in memory and planned from, so the watch echo of its own
write (or an older event arriving late) never makes it decide the same transition twice. Status remains
the only memory that matters: a restarted engine adopts whatever status it finds, and derives every
deadline again from it.

Ordering: one FeatBit turn per rollout covers acting and writing status, so two writers never interleave.
The lane turns the flag off without waiting for the turn (turning off is always safe), then takes the turn
to record it; routine work that started before the kill notices (the rollout's epoch moved) and drops
its result instead of writing over the rollback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from airollout.deadlines import flag_check_due, next_due
from airollout.kube import metrics
from airollout.kube.apiserver import ApiServer, ApiServerError
from airollout.kube.connections import ConnectionCache
from airollout.kube.kill_switch import KillSwitchLane
from airollout.kube.notifications import NOTIFIED, Notice, Notifier, notification_targets
from airollout.kube.scheduler import Due, Scheduler
from airollout.kube.shards import ShardLeases, shard_of
from airollout.kube.templates import Expansion, GuardrailTemplates
from airollout.kube.verbs import verb_request
from airollout.model import HISTORY_LIMIT, AIRolloutSpec, AIRolloutStatus, KillSwitchTarget, Phase
from airollout.planner import (
    ACTION_ANNOTATION,
    ACTION_ID_ANNOTATION,
    ACTION_REASON_ANNOTATION,
    Decision,
    Problem,
    RollBack,
    analysis_tick,
    kill_request,
    plan_delivery,
    plan_failure,
)
from airollout.reasons import WARNING_REASONS, Reason
from airollout.reconciler import Connections, Rollout, act, measure_due, parse_spec
from airollout.settings import Settings

_log = logging.getLogger(__name__)
_WRITE_RETRY_SECONDS = 2.0
_IDLE_FLOOR_SECONDS = 1.0
EVENT_MESSAGE_LIMIT = 1024
"""Bytes: the apiserver refuses a longer Event message."""


class _Superseded(Exception):
    """The kill-switch lane took over this rollout while routine work on it was under way."""


@dataclass
class _Tracked:
    """What the engine knows of one AIRollout between two pieces of work on it."""

    body: dict[str, Any]
    planned: dict[str, Any] | None = None
    """The status the engine decided last (written or still to write); None until the first decision."""
    written: dict[str, Any] | None = None
    written_at: float = 0.0
    unwritten: bool = False
    """The planned status has not reached the apiserver: nothing may go to FeatBit past it until it has."""
    pending_events: list[tuple[str, str, str]] = field(default_factory=list)
    flag_checked_at: datetime | None = None
    epoch: int = 0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    killing: asyncio.Task[None] | None = None
    parsed: tuple[tuple[object, ...], tuple[AIRolloutSpec | None, str | None]] | None = None

    @property
    def meta(self) -> Mapping[str, Any]:
        meta: Mapping[str, Any] = self.body.get("metadata") or {}
        return meta

    @property
    def status(self) -> Mapping[str, Any]:
        status: Mapping[str, Any] = self.planned if self.planned is not None else self.body.get("status") or {}
        return status

    def rollout(self, expansion: Expansion | None = None) -> Rollout:
        """The rollout as stored, or with its guardrail template references expanded (``expansion``)."""
        request = verb_request(self.meta, self.status.get("handledAction"))
        if request is not None and request.handled:
            request = None  # handled before a restart; `Engine._work` removes the leftover annotation
        generation = int(self.meta.get("generation") or 0)
        stored = self.body.get("spec") or {}
        spec = expansion.spec if expansion is not None else stored
        # A spec without templates expands to itself and shares the stored spec's key.
        key: tuple[object, ...] = (generation,)
        if expansion is not None and spec is not stored:
            key = (generation, expansion.versions, expansion.problem)
        if self.parsed is None or self.parsed[0] != key:
            # Parsed once per generation (and template version): validating a spec and its queries is not free.
            self.parsed = (key, parse_spec(spec))
        return Rollout(
            namespace=self.meta["namespace"],
            name=self.meta["name"],
            generation=int(self.meta.get("generation") or 0),
            spec=spec,
            status=self.status,
            verb=request.verb if request else None,
            actor=request.actor if request else "operator",
            verb_key=request.key if request else None,
            verb_declarative=request.declarative if request else False,
            verb_reason=request.reason if request else None,
            known_spec=self.parsed[1],
            unresolved=expansion.problem if expansion is not None else None,
        )


class Engine:
    """All AIRollouts of this process: the watch feeds it, the scheduler and the lane drive it."""

    def __init__(
        self,
        settings: Settings,
        *,
        routine: ConnectionCache,
        urgent: ConnectionCache,
        routine_api: ApiServer,
        urgent_api: ApiServer,
    ) -> None:
        self.settings = settings
        self._routine = routine
        self._routine_api = routine_api
        self._urgent_api = urgent_api
        self._lane = KillSwitchLane(
            urgent,
            backoff_cap=settings.kill_switch_backoff_cap,
            slow_backoff_cap=settings.retry_backoff_cap,
            hedge_after=settings.kill_switch_hedge_after,
        )
        self._rollouts: dict[str, _Tracked] = {}
        self._templates = GuardrailTemplates(routine_api, ttl=settings.template_ttl)
        self.notifier: Notifier | None = None
        """Set when notifications are wired: decisions of the reasons it posts for are handed to it."""
        self.shards: ShardLeases | None = None
        """Set when AIRollouts are split across replicas: only owned shards are worked on."""
        self.scheduler: Scheduler[str] = Scheduler(
            self._work, workers=settings.routine_workers, on_start=metrics.SCHEDULER_LATENESS.observe
        )

    async def run(self) -> None:
        """Work until cancelled."""
        await self.scheduler.run()

    async def stop(self) -> None:
        """Cancel kill-switch tasks (a new operator resumes them from status); the scheduler is the caller's."""
        tasks = [t.killing for t in self._rollouts.values() if t.killing is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def bodies(self) -> list[Mapping[str, Any]]:
        """Every AIRollout this process knows, as last seen, with the status it decided last."""
        return [{**t.body, "status": t.status} for t in self._rollouts.values()]

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event: remember the newest body, and wake or kill as it asks."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid"))
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._forget(uid, meta)
            return
        tracked = self._rollouts.get(uid)
        if tracked is None:
            # What is stored is what was written last, as far as this process is concerned.
            stored = dict(body.get("status") or {})
            tracked = self._rollouts[uid] = _Tracked(body=dict(body), written=stored, written_at=time.monotonic())
            changed = True
        else:
            changed = _asks(tracked.meta) != _asks(meta)
            tracked.body = dict(body)
        metrics.TRACKED.set(len(self._rollouts))
        if not self._owns(uid):
            return  # another replica serves it; its body is kept for the day this one takes the shard over
        if self._wants_kill(tracked):
            if tracked.killing is None:
                tracked.epoch += 1
                tracked.killing = asyncio.create_task(self._kill(tracked, time.monotonic()))
            return
        if changed:
            self.scheduler.wake(uid)

    # -- shards -----------------------------------------------------------------------------------------

    @property
    def _writer(self) -> str:
        return self.shards.identity if self.shards is not None else ""

    def _owns(self, uid: str) -> bool:
        shards = self.shards
        return shards is None or shards.owns(shard_of(uid, self.settings.shards))

    def _in_shard(self, shard: int) -> list[tuple[str, _Tracked]]:
        return [(uid, t) for uid, t in self._rollouts.items() if shard_of(uid, self.settings.shards) == shard]

    def gain(self, shard: int) -> None:
        """A shard was taken over: start from what its rollouts' status says, as a restarted operator does."""
        for uid, tracked in self._in_shard(shard):
            tracked.planned, tracked.flag_checked_at, tracked.unwritten = None, None, False
            tracked.written, tracked.written_at = dict(tracked.body.get("status") or {}), time.monotonic()
            tracked.epoch += 1
            if self._wants_kill(tracked):
                tracked.killing = asyncio.create_task(self._kill(tracked, time.monotonic()))
            else:
                self.scheduler.wake(uid)

    async def lose(self, shard: int) -> None:
        """A shard is given back or lost: stop its work, and wait until no write of it is under way."""
        rollouts = self._in_shard(shard)
        for uid, tracked in rollouts:
            self.scheduler.forget(uid)
            tracked.epoch += 1
            if tracked.killing is not None:
                tracked.killing.cancel()
        for _uid, tracked in rollouts:
            async with tracked.turn:
                tracked.planned, tracked.unwritten = None, False
        metrics.forget_shard([(t.meta.get("namespace"), t.meta.get("name")) for _u, t in rollouts])

    # -- routine work ---------------------------------------------------------------------------------

    async def _work(self, uid: str, lateness: float) -> Due | None:
        tracked = self._rollouts.get(uid)
        if tracked is None or tracked.killing is not None or not self._owns(uid):
            return None
        epoch = tracked.epoch
        leftover = verb_request(tracked.meta, tracked.status.get("handledAction"))
        if leftover is not None and leftover.handled:
            await self._remove_verb(tracked, leftover.verb, self._routine_api)
        if tracked.unwritten and tracked.planned is not None:
            # Status is the operator's only memory: until the last decision is recorded, FeatBit must not move
            # past it, or the flag would walk ahead of every record of why (and a restart would not know).
            planned = AIRolloutStatus.model_validate(tracked.planned)
            try:
                async with self._turn(tracked, epoch):
                    if not await self._write(tracked, planned, self._routine_api):
                        return Due(time.monotonic() + _WRITE_RETRY_SECONDS)
            except _Superseded:
                return None
        expansion = await self._templates.expand(str(tracked.meta["namespace"]), tracked.body.get("spec") or {})
        rollout = tracked.rollout(expansion)
        spec, _invalid = rollout.parsed_spec
        connections = Connections(flags=None)
        if spec is not None:
            connections = await self._routine.connections(rollout.namespace, spec)
            if connections.flags is not None:
                lane = await self._lane.flags(rollout.namespace, spec.featbit)
                connections = replace(connections, lane=lane, writer=self._writer)
        now = datetime.now(UTC)
        started = time.monotonic()
        status = rollout.parsed_status
        read_flag = flag_check_due(
            status, now, tracked.flag_checked_at, timedelta(seconds=self.settings.drift_check_interval)
        )
        measured = await measure_due(rollout, connections, now)
        late = None
        # Only an analysis that decides a stage can be late: a routine one evaluates at its own tick.
        deciding = spec is not None and analysis_tick(spec, status, now) is None
        if lateness > self.settings.late_after and deciding:
            late = (
                f"this analysis started {lateness:.1f}s after it was due: {self.scheduler.depth} rollouts are "
                f"waiting for one of {self.settings.routine_workers} routine workers (--routine-workers), or "
                "FeatBit and Prometheus answer slowly"
            )
        try:
            async with self._turn(tracked, epoch):
                decision = await act(rollout, connections, measured, now, read_flag=read_flag, late=late)
                if read_flag:
                    tracked.flag_checked_at = now
                urgent = any(isinstance(a, RollBack) for a in decision.actions)
                written = await self._commit(tracked, rollout, decision, urgent=urgent)
        except _Superseded:
            return None
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if spec is not None and any(e.reason == Reason.INVALID_TOKEN for e in decision.entries):
            self._routine.forget_token(rollout.namespace, spec.featbit)
        if not written:
            return Due(time.monotonic() + _WRITE_RETRY_SECONDS)
        if spec is None:
            return None
        due = next_due(
            spec,
            decision.status,
            now,
            flag_checked_at=tracked.flag_checked_at,
            drift_interval=timedelta(seconds=self.settings.drift_check_interval),
            retry_cap=timedelta(seconds=self.settings.retry_backoff_cap),
        )
        if due is None:
            return None
        clock, wall = time.monotonic(), datetime.now(UTC)
        wait = (due.at - wall).total_seconds()
        if wait <= 0 and decision.status == status and not decision.actions:
            wait = _IDLE_FLOOR_SECONDS  # nothing moved although something was due: never spin
        then = clock + max(0.0, (due.then - wall).total_seconds()) if due.then is not None else None
        return Due(clock + max(0.0, wait), routine=due.routine, then=then)

    @asynccontextmanager
    async def _turn(self, tracked: _Tracked, epoch: int) -> AsyncIterator[None]:
        async with tracked.turn:
            if tracked.epoch != epoch or tracked.killing is not None or not self._owns(str(tracked.meta.get("uid"))):
                raise _Superseded
            yield

    # -- the kill-switch lane -----------------------------------------------------------------------------

    def _wants_kill(self, tracked: _Tracked) -> bool:
        rollout = tracked.rollout()
        if kill_request(rollout.spec, rollout.verb, rollout.actor) is None:
            return False
        return str(rollout.status.get("phase")) != Phase.ROLLED_BACK

    async def _kill(self, tracked: _Tracked, seen_at: float) -> None:
        """Turn the candidate off through the lane, then record it; ends only when both are done."""
        try:
            if not self._owns(str(tracked.meta.get("uid"))):
                return
            rollout = tracked.rollout()
            try:
                target = KillSwitchTarget.model_validate(dict(rollout.spec))
            except ValidationError as error:
                # Nothing can be switched off; a fixed spec arrives as a new generation and starts over.
                await self._record_unreachable_flag(tracked, rollout, error)
                return
            request = kill_request(rollout.spec, rollout.verb, rollout.actor)
            why = request.why if request is not None else "kill switch"
            comment = f"AIRollout {rollout.ref} generation {rollout.generation}, kill switch: {why}"
            if self._writer:
                comment += f" [{self._writer}]"
            notes: list[asyncio.Task[None]] = []

            async def not_yet(message: str) -> None:
                # Once: a long outage is one line in history, not one per attempt. In a task of its own, so
                # the lane never waits for the rollout's turn to say it is still trying.
                if not notes:
                    notes.append(asyncio.create_task(self._record_kill_waiting(tracked, message)))

            with metrics.kill_switch_waiting(rollout.namespace, rollout.name, seen_at):
                revision = await self._lane.turn_off(rollout.namespace, target, comment, not_yet)
            await asyncio.gather(*notes, return_exceptions=True)
            metrics.KILL_SWITCH_SECONDS.observe(time.monotonic() - seen_at)
            async with tracked.turn:
                rollout = tracked.rollout()
                lane = await self._lane.flags(rollout.namespace, target.featbit)
                now = datetime.now(UTC)
                connections = Connections(flags=lane, lane=lane, writer=self._writer)
                decision = await act(rollout, connections, None, now, flag_off_revision=revision)
                for _attempt in itertools.count():
                    if await self._commit(tracked, rollout, decision, urgent=True):
                        break
                    await asyncio.sleep(_WRITE_RETRY_SECONDS)
        finally:
            tracked.killing = None

    async def _record_kill_waiting(self, tracked: _Tracked, message: str) -> None:
        async with tracked.turn:
            rollout = tracked.rollout()
            problem = Problem(Reason.FEATBIT_UNAVAILABLE, f"kill switch not acknowledged yet, retrying: {message}")
            decision = plan_failure(rollout.parsed_status, problem, datetime.now(UTC), rollout.generation)
            if decision.entries:
                await self._commit(tracked, rollout, decision, urgent=True)

    async def _record_unreachable_flag(self, tracked: _Tracked, rollout: Rollout, error: ValidationError) -> None:
        fields = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        problem = Problem(
            Reason.INVALID_SPEC,
            f"the kill switch cannot address the flag: {fields}; fix it and the kill switch engages",
        )
        async with tracked.turn:
            decision = plan_failure(rollout.parsed_status, problem, datetime.now(UTC), rollout.generation)
            failed = decision.status.model_copy(update={"phase": Phase.FAILED, "message": problem.message})
            await self._commit(tracked, rollout, replace(decision, status=failed), urgent=True)

    # -- writing ----------------------------------------------------------------------------------------------

    async def _commit(self, tracked: _Tracked, rollout: Rollout, decision: Decision, *, urgent: bool) -> bool:
        """Write the decided status (when it matters), then its Events and the verb's removal.

        Returns False when the status could not be written: the decision stays planned, and is written
        on the next try; the Events wait for that write.
        """
        api = self._urgent_api if urgent else self._routine_api
        status = _bounded(decision.status)
        new = status.to_k8s()
        tracked.planned = new
        tracked.pending_events.extend(
            ("Warning" if e.reason in WARNING_REASONS else "Normal", e.reason, e.message) for e in decision.entries
        )
        metrics.record(rollout.namespace, rollout.name, status, [e.reason for e in decision.entries])
        due_refresh = time.monotonic() - tracked.written_at >= self.settings.status_refresh_interval
        unchanged = tracked.written is not None and _essence(new) == _essence(tracked.written)
        if unchanged and not due_refresh and not tracked.unwritten:
            return await self._consume_verb(tracked, rollout, decision, api)
        # Only a decision the apiserver does not hold yet must be written before FeatBit moves again; a refresh
        # of fresh values (or a new process writing what it found) that fails holds nothing back.
        stored = tracked.written
        if stored is None:  # a new process: what the apiserver holds, in the shape the engine writes
            stored = AIRolloutStatus.model_validate(dict(tracked.body.get("status") or {})).to_k8s()
        if not await self._write(tracked, status, api, ahead=_essence(new) != _essence(stored)):
            return False
        return await self._consume_verb(tracked, rollout, decision, api)

    async def _write(self, tracked: _Tracked, status: AIRolloutStatus, api: ApiServer, *, ahead: bool = True) -> bool:
        """Write the planned status (shrunk if the apiserver finds it too large), then the Events that waited."""
        namespace, name = tracked.meta["namespace"], tracked.meta["name"]
        new = tracked.planned = status.to_k8s()
        tracked.unwritten = tracked.unwritten or ahead
        try:
            await api.patch_status(namespace, name, new)
        except ApiServerError as error:
            if not error.too_large:
                _log.warning("Writing the status of %s/%s failed, will retry: %s", namespace, name, error)
                return False
            new = tracked.planned = _shrunk(status).to_k8s()
            try:
                await api.patch_status(namespace, name, new)
            except ApiServerError as again:
                _log.warning("Writing the shrunk status of %s/%s failed, will retry: %s", namespace, name, again)
                return False
        tracked.unwritten = False
        tracked.written, tracked.written_at = new, time.monotonic()
        events, tracked.pending_events = tracked.pending_events, []
        self._announce(tracked, status, [(reason, message) for _kind, reason, message in events])
        for kind, reason, message in events:
            try:
                await api.post_event(tracked.meta, kind=kind, reason=reason, message=_one_line(message))
            except ApiServerError as error:
                _log.warning("Posting the %s Event of %s/%s failed: %s", reason, namespace, name, error)
        return True

    # -- notifications ---------------------------------------------------------------------------------------

    def _announce(self, tracked: _Tracked, status: AIRolloutStatus, recorded: list[tuple[str, str]]) -> None:
        """Hand the notified decisions just written to the notifier: it queues them and returns at once."""
        notifier = self.notifier
        if notifier is None:
            return
        spec = tracked.body.get("spec") or {}
        for reason, message in recorded:
            if reason not in NOTIFIED:
                continue
            notifier.submit(
                Notice(
                    uid=str(tracked.meta.get("uid")),
                    namespace=str(tracked.meta["namespace"]),
                    name=str(tracked.meta["name"]),
                    reason=reason,
                    message=message,
                    time=datetime.now(UTC),
                    phase=status.phase.value,
                    stage=status.stage_name,
                    percentage=status.percentage,
                    flag=str((spec.get("flag") or {}).get("key") or "") or None,
                    targets=notification_targets(spec),
                )
            )

    async def record_delivery(self, uid: str, failure: str | None) -> None:
        """The notifier's word on a rollout's notifications: the condition NotificationsDelivered, in status."""
        tracked = self._rollouts.get(uid)
        if tracked is None or not self._owns(uid):
            return
        async with tracked.turn:
            rollout = tracked.rollout()
            decision = plan_delivery(rollout.parsed_status, failure, datetime.now(UTC))
            if decision.status != rollout.parsed_status:
                await self._commit(tracked, rollout, decision, urgent=False)

    async def _consume_verb(self, tracked: _Tracked, rollout: Rollout, decision: Decision, api: ApiServer) -> bool:
        if decision.consume_verb and rollout.verb is not None:
            await self._remove_verb(tracked, rollout.verb, api)
        return True

    async def _remove_verb(self, tracked: _Tracked, verb: str, api: ApiServer) -> None:
        annotations = dict(tracked.meta.get("annotations") or {})
        annotations.pop(ACTION_ANNOTATION, None)
        # Its reason goes with it: left behind, it would explain the next verb given without one.
        expected = {ACTION_ANNOTATION: verb}
        if ACTION_REASON_ANNOTATION in annotations:
            expected[ACTION_REASON_ANNOTATION] = annotations.pop(ACTION_REASON_ANNOTATION)
        # Seen as handled at once: the watch echo of the removal comes later.
        tracked.body = {**tracked.body, "metadata": {**tracked.meta, "annotations": annotations}}
        with suppress(ApiServerError):
            await api.remove_annotations(tracked.meta["namespace"], tracked.meta["name"], expected)

    def _forget(self, uid: str, meta: Mapping[str, Any]) -> None:
        tracked = self._rollouts.pop(uid, None)
        if self.notifier is not None:
            self.notifier.forget(uid)
        self.scheduler.forget(uid)
        if tracked is not None and tracked.killing is not None:
            tracked.killing.cancel()
        if meta.get("namespace") and meta.get("name"):
            metrics.forget(str(meta["namespace"]), str(meta["name"]))
        metrics.TRACKED.set(len(self._rollouts))


# Values refreshed on every analysis; written when they are all that changed only every refresh interval.
_VOLATILE = ("lastAnalysisAt",)
_VOLATILE_GUARDRAIL = ("value", "controlValue", "message", "threshold", "evidence")


def _essence(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without the numbers that change on every analysis."""
    essence = {k: v for k, v in status.items() if k not in _VOLATILE}
    essence["guardrails"] = [
        {k: v for k, v in g.items() if k not in _VOLATILE_GUARDRAIL} for g in status.get("guardrails") or []
    ]
    conditions = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "GuardrailsPassing":
            condition = {k: v for k, v in condition.items() if k != "message"}
        conditions.append(condition)
    essence["conditions"] = conditions
    # A comparison's counts of the stage under way, and the split's latest figures, grow with every analysis;
    # the plan, the finished stages and whether the split holds are what a change is.
    essence["comparisons"] = [{k: v for k, v in c.items() if k != "current"} for c in status.get("comparisons") or []]
    ratio = status.get("sampleRatio")
    essence["sampleRatio"] = {k: ratio.get(k) for k in ("stage", "expected", "mismatch")} if ratio else None
    return essence


def _bounded(status: AIRolloutStatus) -> AIRolloutStatus:
    return status.model_copy(update={"history": status.history[-HISTORY_LIMIT:]})


def _shrunk(status: AIRolloutStatus) -> AIRolloutStatus:
    """A status that fits etcd whatever went wrong: fewer history entries, no per-segment detail."""
    note = "status shrunk to fit the apiserver's size limit: guardrail detail and older history left out"
    history = tuple(entry.model_copy(update={"guardrails": ()}) for entry in status.history[-10:])
    # A comparison without its older stages stays valid (it only loses their evidence); the stage under way
    # is counted afresh from Prometheus at the next analysis.
    comparisons = tuple(c.model_copy(update={"strata": c.strata[-1:], "current": None}) for c in status.comparisons)
    return status.model_copy(
        update={
            "history": history,
            "guardrails": (),
            "comparisons": comparisons,
            "message": f"{status.message[:500]} ({note})",
        }
    )


def _asks(meta: Mapping[str, Any]) -> tuple[object, ...]:
    """What in the metadata may ask for work: a new generation (spec), a verb and its action id."""
    annotations = meta.get("annotations") or {}
    return meta.get("generation"), annotations.get(ACTION_ANNOTATION), annotations.get(ACTION_ID_ANNOTATION)


def _one_line(message: str) -> str:
    # Newlines break `kubectl describe`'s event table.
    text = " ".join(message.split())
    encoded = text.encode()
    if len(encoded) <= EVENT_MESSAGE_LIMIT:
        return text
    # The apiserver counts bytes, not characters; never cut a character in half.
    return encoded[: EVENT_MESSAGE_LIMIT - 3].decode(errors="ignore") + "..."


__all__ = ["EVENT_MESSAGE_LIMIT", "Engine"]
