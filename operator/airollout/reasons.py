"""The fixed vocabulary of Event reasons and condition types: what `kubectl describe airollout` speaks.

Every reason is documented in the README; alerting and dashboards may match on them, so they never change.
"""

from enum import StrEnum


class Reason(StrEnum):
    # The rollout's path
    STARTED = "Started"
    STAGE_ADVANCED = "StageAdvanced"
    PROMOTED = "Promoted"
    POST_RELEASE_WATCH_STARTED = "PostReleaseWatchStarted"
    COMPLETED = "Completed"
    ROLLED_BACK = "RolledBack"
    KILL_SWITCH_ENGAGED = "KillSwitchEngaged"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    RESTARTED = "Restarted"
    RECOVERED = "Recovered"
    SPEC_CHANGED = "SpecChanged"
    FLAG_CHANGED = "FlagChanged"
    ACTION_REJECTED = "ActionRejected"
    # FeatBit and its inputs
    FLAG_EDITED_OUT_OF_BAND = "FlagEditedOutOfBand"
    FEATBIT_UNAVAILABLE = "FeatBitUnavailable"
    SECRET_NOT_FOUND = "SecretNotFound"
    INVALID_TOKEN = "InvalidToken"
    PERMISSION_DENIED = "PermissionDenied"
    FLAG_NOT_FOUND = "FlagNotFound"
    VARIATION_NOT_FOUND = "VariationNotFound"
    SEGMENT_NOT_FOUND = "SegmentNotFound"
    FEATBIT_REJECTED = "FeatBitRejected"
    FLAG_MISCONFIGURED = "FlagMisconfigured"
    FEATBIT_SYNCED = "FeatBitSynced"
    # Guardrails
    GUARDRAILS_PASSED = "GuardrailsPassed"
    GUARDRAIL_WARNING = "GuardrailWarning"
    GUARDRAIL_BREACHED = "GuardrailBreached"
    GUARDRAIL_NO_DATA = "GuardrailNoData"
    GUARDRAIL_QUERY_FAILED = "GuardrailQueryFailed"
    GUARDRAIL_INCONCLUSIVE = "GuardrailInconclusive"
    SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"
    ANALYSIS_LATE = "AnalysisLate"
    ANALYSIS_ON_TIME = "AnalysisOnTime"
    INVALID_SPEC = "InvalidSpec"
    GUARDRAIL_TEMPLATE_NOT_FOUND = "GuardrailTemplateNotFound"
    GUARDRAIL_TEMPLATE_INVALID = "GuardrailTemplateInvalid"
    GUARDRAIL_TEMPLATE_ARGUMENT_MISSING = "GuardrailTemplateArgumentMissing"
    GUARDRAIL_TEMPLATES_RESOLVED = "GuardrailTemplatesResolved"
    # Notifications
    NOTIFICATION_FAILED = "NotificationFailed"
    NOTIFICATIONS_DELIVERED = "NotificationsDelivered"


WARNING_REASONS = frozenset(
    {
        Reason.ROLLED_BACK,
        Reason.KILL_SWITCH_ENGAGED,
        Reason.FLAG_EDITED_OUT_OF_BAND,
        Reason.FEATBIT_UNAVAILABLE,
        Reason.SECRET_NOT_FOUND,
        Reason.INVALID_TOKEN,
        Reason.PERMISSION_DENIED,
        Reason.FLAG_NOT_FOUND,
        Reason.VARIATION_NOT_FOUND,
        Reason.SEGMENT_NOT_FOUND,
        Reason.FEATBIT_REJECTED,
        Reason.FLAG_MISCONFIGURED,
        Reason.GUARDRAIL_WARNING,
        Reason.GUARDRAIL_BREACHED,
        Reason.GUARDRAIL_QUERY_FAILED,
        Reason.SAMPLE_RATIO_MISMATCH,
        Reason.ACTION_REJECTED,
        Reason.INVALID_SPEC,
        Reason.GUARDRAIL_TEMPLATE_NOT_FOUND,
        Reason.GUARDRAIL_TEMPLATE_INVALID,
        Reason.GUARDRAIL_TEMPLATE_ARGUMENT_MISSING,
        Reason.NOTIFICATION_FAILED,
    }
)


class ConditionType(StrEnum):
    PROGRESSING = "Progressing"
    """True while the rollout moves through its stages; False when paused or finished, with the reason."""
    FEATBIT_SYNCED = "FeatBitSynced"
    """True when FeatBit serves exactly what status says; False names what stops the operator confirming it."""
    GUARDRAILS_PASSING = "GuardrailsPassing"
    ANALYSIS_ON_TIME = "AnalysisOnTime"
    """Present once an analysis started late: False says how late and why (the operator is overloaded)."""
    """The latest guardrail analysis: True when all hold, False on warning, breach, error or no data."""
    GUARDRAIL_TEMPLATES_RESOLVED = "GuardrailTemplatesResolved"
    """Present once a referenced template was missing or unusable: False names it and holds the rollout."""
    NOTIFICATIONS_DELIVERED = "NotificationsDelivered"
    """Present once a notification failed: False with the last error, True again after a delivery."""
