"""The AIRollout spec as the operator reads it: pydantic models that mirror the CRD's schema.

The CRD (crds/) is what the apiserver enforces; these models are what the planner trusts. A unit test keeps
the two in step, so a field added to one and not the other fails the build rather than a rollout.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic.alias_generators import to_camel

from airollout.model.comparison import WINDOW_PLACEHOLDER, Comparison, InsufficientSample, SampleRatio

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h))+$"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``90s``, ``10m`` or ``1h30m``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration: write it like 30s, 10m or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long to be a duration") from None


class _Model(BaseModel):
    """camelCase on the wire (as in the CRD), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


MAX_DURATION = timedelta(days=366)


def _reasonable(text: str) -> str:
    # A duration nobody means (99999999999999h) would overflow the clock arithmetic of every deadline.
    if parse_duration(text) > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than a year (8784h): write a shorter duration")
    return text


Duration = Annotated[str, Field(pattern=DURATION_PATTERN), AfterValidator(_reasonable)]


class SecretKeyRef(_Model):
    """A key of a Secret in the AIRollout's own namespace."""

    name: str = Field(min_length=1)
    key: str = Field(default="token", min_length=1)


class FlagAddress(_Model):
    """Where a flag is: its key in a FeatBit environment."""

    model_config = ConfigDict(extra="ignore")

    key: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9._-]+$")
    env_id: str = Field(min_length=1)

    @field_validator("env_id")
    @classmethod
    def _env_id_is_a_guid(cls, value: str) -> str:
        # FeatBit addresses environments by GUID only; anything else would reach it as a bare 404.
        if not _GUID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a FeatBit environment id: it is a GUID, listed by FeatBit's "
                "GET /api/v1/projects (environments[].id)"
            )
        return value


class FlagRef(FlagAddress):
    """The FeatBit flag this rollout drives, and which of its variations are new and old."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1)
    control: str = Field(min_length=1)
    dispatch_key: str = Field(default="keyId", min_length=1)
    """The user attribute that buckets users into the percentage (FeatBit's dispatchKey)."""

    @model_validator(mode="after")
    def _candidate_is_not_control(self) -> FlagRef:
        if self.candidate == self.control:
            raise ValueError(f"candidate and control are both {self.candidate!r}: they must be different variations")
        return self


class FeatBitRef(_Model):
    """Where FeatBit's management API is and which Secret holds its access token."""

    url: str = Field(pattern=r"^https?://")
    token_secret_ref: SecretKeyRef


class Stage(_Model):
    """One step of exposure; segments granted here stay granted in later stages."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    percentage: float = Field(default=0, ge=0, le=100)
    segments: tuple[str, ...] = ()
    """FeatBit segment keys (or ids) served the candidate at 100% from this stage on."""
    audience: tuple[str, ...] = ()
    """FeatBit segment keys (or ids): when set, the percentage applies to members of these segments only."""
    duration: Duration | None = None

    @property
    def bake_time(self) -> timedelta:
        return parse_duration(self.duration) if self.duration else timedelta(0)


class OnBreach(StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


POST_RELEASE_STAGE = "post-release"
"""The name the post-release watch goes by in status and history, as a stage would."""


class OnPostReleaseBreach(StrEnum):
    ROLLBACK = "rollback"
    ALERT = "alert"


class PostRelease(_Model):
    """A watch after the last stage: a holdback kept on the control while the guardrails keep measuring.

    Quality can drift after a release (a model's outputs degrade over days, and nothing alerts): against a
    holdback the same guardrails still compare the candidate with the control, until ``duration`` is over.
    """

    holdback: float = Field(default=2, gt=0, le=20)
    """Percent of traffic kept on the control during the watch, released to the candidate at its end."""
    duration: Duration
    """How long the watch lasts, e.g. ``168h`` for a week."""
    on_breach: OnPostReleaseBreach = OnPostReleaseBreach.ROLLBACK
    """A breach during the watch rolls back (everyone on the control) or only alerts (a Warning Event)."""


class NoDataPolicy(StrEnum):
    HOLD = "hold"
    PASS = "pass"
    FAIL = "fail"


class SecretHeader(_Model):
    """An HTTP header sent to Prometheus, its value from a Secret."""

    name: str = Field(min_length=1)
    value_from: SecretKeyRef


class PrometheusRef(_Model):
    url: str = Field(pattern=r"^https?://")
    bearer_token_secret_ref: SecretKeyRef | None = None
    headers: tuple[SecretHeader, ...] = ()
    timeout: Duration = "10s"


class Analysis(_Model):
    interval: Duration = "30s"
    """How often guardrails are queried while a stage runs."""
    consecutive_error_limit: int = Field(default=3, ge=1)
    """Consecutive query errors (Prometheus down, bad query) after which the rollout pauses."""
    warmup: Duration = "60s"
    """Comparisons count from this long after a stage starts: SDKs are still converging on the new split."""
    false_rollback_rate: float = Field(default=0.05, gt=0, le=0.2)
    """The chance, over the whole rollout, that comparisons roll back a candidate that does no harm."""
    sample_ratio: SampleRatio | None = None
    """Check that each variant gets the share of traffic the stage asks for."""
    on_insufficient_sample: InsufficientSample = InsufficientSample.HOLD
    """What a stage does once its duration and ``maxExtensions`` more are over without the sample its
    comparisons need: hold, revert or proceed."""
    max_extensions: int = Field(default=2, ge=0, le=10)
    """Stage durations a stage short of its sample may run over before ``onInsufficientSample`` acts."""


class Guardrail(_Model):
    """A PromQL query judged per series (each label set is a segment) against thresholds and the control, or
    a comparison: an anytime-valid test of harm of the candidate against the control."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str | None = Field(default=None, min_length=1)
    compare: Comparison | None = None
    max: float | None = None
    """Breach when the candidate's value is above this."""
    min: float | None = None
    """Breach when the candidate's value is below this (for metrics where lower is worse)."""
    warn_at: float | None = None
    """Freeze when past this (above for max, below for min) but not yet breached."""
    max_increase_over_control: float | None = Field(default=None, ge=0)
    """Breach when candidate > control x (1 + this); for min guardrails, candidate < control x (1 - this)."""
    no_data: NoDataPolicy = NoDataPolicy.HOLD

    @model_validator(mode="after")
    def _one_direction(self) -> Guardrail:
        if self.compare is not None:
            thresholds = [
                n
                for n in ("query", "max", "min", "warn_at", "max_increase_over_control")
                if getattr(self, n) is not None
            ]
            if thresholds:
                names = ", ".join(to_camel(n) for n in thresholds)
                raise ValueError(f"guardrail {self.name!r}: compare replaces {names}: keep one kind per guardrail")
            return self
        if self.query is None:
            raise ValueError(f"guardrail {self.name!r}: set query (with max, min or maxIncreaseOverControl) or compare")
        if WINDOW_PLACEHOLDER in self.query:
            raise ValueError(
                f"guardrail {self.name!r}: {WINDOW_PLACEHOLDER} is for compare queries; write a range such as [5m]"
            )
        if self.max is not None and self.min is not None:
            raise ValueError(f"guardrail {self.name!r}: set max or min, not both")
        if self.max is None and self.min is None and self.max_increase_over_control is None:
            raise ValueError(f"guardrail {self.name!r}: set max, min or maxIncreaseOverControl")
        return self

    @property
    def lower_is_worse(self) -> bool:
        return self.min is not None

    @property
    def queries(self) -> dict[str, str]:
        """Every query of the guardrail by its field's path: ``query``, or ``compare.count`` and the rest."""
        if self.compare is not None:
            return {f"compare.{to_camel(name)}": q for name, q in self.compare.queries.items()}
        return {"query": self.query} if self.query is not None else {}

    def with_queries(self, change: Callable[[str], str]) -> Guardrail:
        """The same guardrail with ``change`` applied to each of its queries (filling in a template's arguments)."""
        if self.compare is not None:
            changed = {name: change(q) for name, q in self.compare.queries.items()}
            return self.model_copy(update={"compare": self.compare.model_copy(update=changed)})
        return self.model_copy(update={"query": change(self.query)}) if self.query is not None else self


class TemplateKind(StrEnum):
    GUARDRAIL_TEMPLATE = "GuardrailTemplate"
    CLUSTER_GUARDRAIL_TEMPLATE = "ClusterGuardrailTemplate"


class TemplateRef(_Model):
    """A GuardrailTemplate in the AIRollout's namespace, or a ClusterGuardrailTemplate."""

    name: str = Field(min_length=1, max_length=253)
    kind: TemplateKind = TemplateKind.GUARDRAIL_TEMPLATE


ArgName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class TemplatedGuardrails(_Model):
    """The guardrails of a template, their ``{{args.NAME}}`` filled in with ``args``."""

    # The apiserver writes the CRD's defaults of inline fields (noData) into a reference too; its CEL rules
    # refuse the rest, so nothing a person wrote is ignored here.
    model_config = ConfigDict(extra="ignore")

    template_ref: TemplateRef
    args: dict[ArgName, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=32)


def _guardrail_entry(value: Any) -> str:
    # An entry naming a template is one; anything else is read (and its errors reported) as an inline guardrail.
    if isinstance(value, TemplatedGuardrails) or (isinstance(value, dict) and "templateRef" in value):
        return "template"
    return "inline"


GuardrailEntry = Annotated[
    Annotated[Guardrail, Tag("inline")] | Annotated[TemplatedGuardrails, Tag("template")],
    Discriminator(_guardrail_entry),
]


class TemplateArg(_Model):
    """An argument a template's queries use as ``{{args.NAME}}``; without a value every reference must set it."""

    name: ArgName
    value: str | None = None
    """The value used when a reference leaves the argument out."""


class GuardrailTemplateSpec(_Model):
    """A GuardrailTemplate's or ClusterGuardrailTemplate's spec: named guardrails, shared by many rollouts."""

    args: tuple[TemplateArg, ...] = Field(default=(), max_length=32)
    guardrails: tuple[Guardrail, ...] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _names_are_unique(self) -> GuardrailTemplateSpec:
        for what, names in (
            ("guardrail", [g.name for g in self.guardrails]),
            ("argument", [a.name for a in self.args]),
        ):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")
        return self


class NotificationType(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"


class NotifiedEvent(StrEnum):
    """The Event reasons a notification can be sent for."""

    STARTED = "Started"
    STAGE_ADVANCED = "StageAdvanced"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    KILL_SWITCH_ENGAGED = "KillSwitchEngaged"
    GUARDRAIL_BREACHED = "GuardrailBreached"


class UrlSecretRef(SecretKeyRef):
    """A key of a Secret in the AIRollout's own namespace holding a URL."""

    key: str = Field(default="url", min_length=1)


class Notification(_Model):
    """Where to post when this rollout records one of ``events``: a JSON webhook or a Slack incoming webhook."""

    type: NotificationType
    url_secret_ref: UrlSecretRef
    events: tuple[NotifiedEvent, ...] = ()
    """The reasons to post for; empty: all of them."""


class AlertAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"


class Alerts(_Model):
    """What a firing Alertmanager alert that names this rollout does."""

    on_firing: AlertAction = AlertAction.PAUSE


class AIRolloutSpec(_Model):
    flag: FlagRef
    featbit: FeatBitRef
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=20)
    kill_switch: bool = False
    prometheus: PrometheusRef | None = None
    analysis: Analysis = Analysis()
    guardrails: tuple[GuardrailEntry, ...] = Field(default=(), max_length=20)
    on_breach: OnBreach = OnBreach.ROLLBACK
    notifications: tuple[Notification, ...] = Field(default=(), max_length=10)
    alerts: Alerts = Alerts()
    post_release: PostRelease | None = None

    @property
    def inline_guardrails(self) -> tuple[Guardrail, ...]:
        """The guardrails written out: all of them once the engine has expanded the template references."""
        return tuple(g for g in self.guardrails if isinstance(g, Guardrail))

    @property
    def path(self) -> tuple[Stage, ...]:
        """The stages a rollout walks: the spec's, then the post-release watch (with its holdback) when set.

        The watch is a stage like any other for measuring, baking and targeting, so it is one here.
        """
        if self.post_release is None:
            return self.stages
        last = self.stages[-1]
        watch = Stage(
            name=POST_RELEASE_STAGE,
            percentage=last.percentage - self.post_release.holdback,
            audience=last.audience,
            duration=self.post_release.duration,
        )
        return (*self.stages, watch)

    @field_validator("stages")
    @classmethod
    def _stages_are_ordered(cls, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
        names = [s.name for s in stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(duplicates)}")
        for before, after in itertools.pairwise(stages):
            if after.percentage < before.percentage:
                raise ValueError(
                    f"stage {after.name!r} lowers the percentage from {before.percentage:g} to "
                    f"{after.percentage:g}: percentages never decrease"
                )
        return stages

    @model_validator(mode="after")
    def _guardrails_need_prometheus(self) -> AIRolloutSpec:
        if self.guardrails and self.prometheus is None:
            raise ValueError("guardrails need spec.prometheus.url")
        names = [g.name for g in self.inline_guardrails]
        if len(set(names)) != len(names):
            raise ValueError("guardrail names must be unique")
        return self

    @model_validator(mode="after")
    def _post_release_follows_a_full_release(self) -> AIRolloutSpec:
        if self.post_release is None:
            return self
        last = self.stages[-1]
        if last.percentage < 100:
            raise ValueError(
                f"spec.postRelease watches a full release, but the last stage {last.name!r} serves "
                f"{last.percentage:g}%: end the stages at percentage 100 or remove postRelease"
            )
        if any(s.name == POST_RELEASE_STAGE for s in self.stages):
            raise ValueError(
                f"stage name {POST_RELEASE_STAGE!r} is the post-release watch's: rename that stage or remove "
                "postRelease"
            )
        return self


class KillSwitchTarget(_Model):
    """The only parts of a spec the kill switch needs, read on their own.

    A spec broken anywhere else (a query typo, a huge timeout) must still be switched off: only a flag that
    cannot be addressed, or a FeatBit that cannot be reached, stops the kill switch.
    """

    model_config = ConfigDict(extra="ignore")

    flag: FlagAddress
    featbit: FeatBitRef
