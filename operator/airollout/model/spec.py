"""The AIRollout spec as the operator reads it: pydantic models that mirror the CRD's schema.

The CRD (crds/) is what the apiserver enforces; these models are what the planner trusts. A unit test keeps
the two in step, so a field added to one and not the other fails the build rather than a rollout.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

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


class Guardrail(_Model):
    """A PromQL query judged per series (each label set is a segment) against thresholds and the control."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str = Field(min_length=1)
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
        if self.max is not None and self.min is not None:
            raise ValueError(f"guardrail {self.name!r}: set max or min, not both")
        if self.max is None and self.min is None and self.max_increase_over_control is None:
            raise ValueError(f"guardrail {self.name!r}: set max, min or maxIncreaseOverControl")
        return self

    @property
    def lower_is_worse(self) -> bool:
        return self.min is not None


class AIRolloutSpec(_Model):
    flag: FlagRef
    featbit: FeatBitRef
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=20)
    kill_switch: bool = False
    prometheus: PrometheusRef | None = None
    analysis: Analysis = Analysis()
    guardrails: tuple[Guardrail, ...] = Field(default=(), max_length=20)
    on_breach: OnBreach = OnBreach.ROLLBACK

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
        names = [g.name for g in self.guardrails]
        if len(set(names)) != len(names):
            raise ValueError("guardrail names must be unique")
        return self


class KillSwitchTarget(_Model):
    """The only parts of a spec the kill switch needs, read on their own.

    A spec broken anywhere else (a query typo, a huge timeout) must still be switched off: only a flag that
    cannot be addressed, or a FeatBit that cannot be reached, stops the kill switch.
    """

    model_config = ConfigDict(extra="ignore")

    flag: FlagAddress
    featbit: FeatBitRef
