"""The AIRollout resource: spec and status as typed models mirroring the CRD."""

from airollout.model.spec import (
    AIRolloutSpec,
    Analysis,
    FeatBitRef,
    FlagAddress,
    FlagRef,
    Guardrail,
    KillSwitchTarget,
    NoDataPolicy,
    OnBreach,
    PrometheusRef,
    SecretKeyRef,
    Stage,
    parse_duration,
)
from airollout.model.status import (
    HISTORY_LIMIT,
    TERMINAL_PHASES,
    AIRolloutStatus,
    Condition,
    GuardrailStatus,
    HistoryEntry,
    Phase,
)

GROUP = "airollout.dev"
VERSION = "v1alpha1"
PLURAL = "airollouts"
KIND = "AIRollout"

__all__ = [
    "GROUP",
    "HISTORY_LIMIT",
    "KIND",
    "PLURAL",
    "TERMINAL_PHASES",
    "VERSION",
    "AIRolloutSpec",
    "AIRolloutStatus",
    "Analysis",
    "Condition",
    "FeatBitRef",
    "FlagAddress",
    "FlagRef",
    "Guardrail",
    "GuardrailStatus",
    "HistoryEntry",
    "KillSwitchTarget",
    "NoDataPolicy",
    "OnBreach",
    "Phase",
    "PrometheusRef",
    "SecretKeyRef",
    "Stage",
    "parse_duration",
]
