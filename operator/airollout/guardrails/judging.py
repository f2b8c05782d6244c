"""The guardrail judge: query results in, an outcome per guardrail and per segment out, with its reasons.

This is the one place that decides whether a number is good or bad, so it is pure (no I/O, no clock) and
property-tested. Every judgement carries the numbers that justify it (value, threshold, control value,
window) and says them in a sentence, because a gate nobody can explain is a gate nobody trusts.

Choices made here, each one a trap other tools fell into:

- A vector result is judged series by series: each label set is a segment (``locale="de"``), so a regression
  confined to one locale is named rather than averaged away.
- NaN (``0/0`` over an idle window) is no data, never a number compared against a threshold; an empty
  result is no data too. What no data means is the guardrail's explicit ``noData`` policy. Infinities are
  values (``x/0`` with errors but no successes is +Inf): +Inf breaches a max, -Inf breaches a min.
- A candidate segment with no control series to compare with is still judged on the absolute thresholds,
  and the message says the comparison with the control was skipped. When the comparison with the control
  is the guardrail's only threshold, that segment has no data.
- Every text is bounded (`GuardrailLimits`): a segment's label string, each message and each error, so
  a label holding a stack trace or a thousand segments never makes the status too large to write.
- The allowance over the control is ``|control| x maxIncreaseOverControl``, so the limit never falls below
  the control even if a metric goes negative; for the usual non-negative metrics it is exactly
  ``control x (1 + maxIncreaseOverControl)`` (``1 -`` for min guardrails).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from airollout.guardrails.limits import DEFAULT_LIMITS, GuardrailLimits, bounded_text
from airollout.guardrails.templating import escape_string
from airollout.model.spec import Guardrail, NoDataPolicy
from airollout.model.status import ComparisonRecord, Evidence

__all__ = [
    "GuardrailVerdict",
    "Outcome",
    "Sample",
    "SegmentJudgement",
    "judge",
    "judge_error",
    "overall",
    "segment_of",
]


class Outcome(StrEnum):
    PASSED = "Passed"
    WARNING = "Warning"
    BREACHED = "Breached"
    NO_DATA = "NoData"
    INCONCLUSIVE = "Inconclusive"
    """A comparison that has shown no harm, on too little sample yet to call the candidate safe."""
    ERROR = "Error"


# Worst first, as `overall` reads it:
# - Breached: evidence of harm. It wins even over an error elsewhere, because acting on a known regression
#   must not wait for an unrelated query to recover.
# - Error: we could not look. Unknown may hide a breach, so it stops progress more firmly than a warning,
#   and consecutive errors are what the analysis counts towards its error limit.
# - Warning: evidence of drift short of a breach; the stage freezes.
# - NoData: no evidence either way (the guardrail's noData policy has already turned it into Passed or
#   Breached where the user asked for that); the stage holds until data arrives.
# - Inconclusive: a comparison still collecting the sample it needs; the stage holds like on no data, and
#   says how much more it needs.
# - Passed: everything looked at was good.
_SEVERITY = {
    Outcome.PASSED: 0,
    Outcome.NO_DATA: 1,
    Outcome.INCONCLUSIVE: 2,
    Outcome.WARNING: 3,
    Outcome.ERROR: 4,
    Outcome.BREACHED: 5,
}

_NO_DATA_OUTCOME = {
    NoDataPolicy.HOLD: (Outcome.NO_DATA, "holding (noData: hold)"),
    NoDataPolicy.PASS: (Outcome.PASSED, "counted as passed (noData: pass)"),
    NoDataPolicy.FAIL: (Outcome.BREACHED, "counted as a breach (noData: fail)"),
}

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[\s*((?:\d+(?:ms|s|m|h|d|w|y))+)\s*(?::[^\]]*)?\]")


@dataclass(frozen=True)
class Sample:
    """One series of an instant query's result: its labels and its value (a scalar has no labels)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class SegmentJudgement:
    """The outcome for one segment (one series) of one guardrail, and the numbers behind it."""

    guardrail: str
    segment: str
    """The series' labels as PromQL writes them (``locale="de"``), sorted; ``""`` for a label-less series.
    Cut to `GuardrailLimits.max_segment_chars`."""
    outcome: Outcome
    value: float | None
    """The candidate's value; None when it had no data."""
    threshold: float | None
    """The limit that decided: the tightest breach limit, or ``warnAt`` for a warning."""
    control_value: float | None
    window: str | None
    """The range of the query's first range selector (``5m``), if it has one."""
    message: str
    evidence: Evidence | None = None
    """A comparison's estimate, confidence bounds and sample counts."""


@dataclass(frozen=True)
class GuardrailVerdict:
    """One guardrail's outcome: the worst of its segments, or Error when it could not be measured."""

    guardrail: str
    outcome: Outcome
    segments: tuple[SegmentJudgement, ...]
    error: str | None = None
    record: ComparisonRecord | None = None
    """A comparison's plan and counts, as status keeps them."""


def _worst(outcomes: Iterable[Outcome]) -> Outcome:
    return max(outcomes, key=_SEVERITY.__getitem__, default=Outcome.PASSED)


def overall(verdicts: Sequence[GuardrailVerdict]) -> Outcome:
    """The outcome of a set of guardrails: the worst of them (Passed when there are none)."""
    return _worst(v.outcome for v in verdicts)


def segment_of(labels: Mapping[str, str]) -> str:
    """Write a label set as PromQL does (``a="x",b="y"``), sorted so equal sets read the same."""
    return ",".join(f'{name}="{escape_string(value)}"' for name, value in sorted(labels.items()))


def _window(query: str) -> str | None:
    # String literals go first: a path label such as "/v1/[id]" is not a range.
    match = _RANGE.search(_STRING_LITERAL.sub('""', query))
    return match[1] if match else None


def _format(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits; +Inf, -Inf and NaN as Prometheus writes them."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:.{digits}g}"


def _num(x: float) -> str:
    return _format(x, 4)


def _distinct(value: float, limit: float) -> tuple[str, str]:
    """Format two numbers with enough digits that unequal ones never print the same."""
    for digits in (4, 6, 9, 17):
        a, b = _format(value, digits), _format(limit, digits)
        if a != b or value == limit:
            break
    return a, b


@dataclass(frozen=True)
class _Limit:
    value: float
    source: str
    """What the limit is called in a message, before its number: ``max`` or ``control 0.011 +20% =``."""

    def text(self, number: str) -> str:
        return f"{self.source} {number}"


def _where(segment: str) -> str:
    return f" for {segment}" if segment else ""


def _context(*parts: str | None) -> str:
    present = [p for p in parts if p]
    return f" ({', '.join(present)})" if present else ""


def _no_data(
    guardrail: Guardrail,
    segment: str,
    reason: str,
    window: str | None,
    control_value: float | None = None,
) -> SegmentJudgement:
    outcome, consequence = _NO_DATA_OUTCOME[guardrail.no_data]
    message = f"{guardrail.name} has no data{_where(segment)}: {reason}; {consequence}"
    message += _context(f"window {window}" if window else None)
    return SegmentJudgement(guardrail.name, segment, outcome, None, None, control_value, window, message)


def _judge_series(
    guardrail: Guardrail,
    segment: str,
    value: float,
    control: float | None,
    control_note: str | None,
    window: str | None,
) -> SegmentJudgement:
    if math.isnan(value):
        return _no_data(guardrail, segment, "the value is NaN", window, control)

    lower_is_worse = guardrail.lower_is_worse
    sign = "<" if lower_is_worse else ">"
    ok_sign = ">=" if lower_is_worse else "<="

    def worse(a: float, b: float) -> bool:
        return a < b if lower_is_worse else a > b

    limits: list[_Limit] = []
    if guardrail.max is not None:
        limits.append(_Limit(guardrail.max, "max"))
    if guardrail.min is not None:
        limits.append(_Limit(guardrail.min, "min"))
    relative = guardrail.max_increase_over_control
    note = None
    if relative is not None:
        if control is not None:
            step = abs(control) * relative
            bound = control - step if lower_is_worse else control + step
            pct = f"{'-' if lower_is_worse else '+'}{_num(relative * 100)}%"
            limits.append(_Limit(bound, f"control {_num(control)} {pct} ="))
        else:
            note = f"{control_note}: judged on absolute thresholds only"
    if not limits:
        return _no_data(guardrail, segment, f"{control_note}, and no absolute threshold is set", window)

    # The tightest limit decides; every limit crossed is named.
    binding = max(limits, key=lambda lim: lim.value) if lower_is_worse else min(limits, key=lambda lim: lim.value)
    shown_control = f"control {_num(control)}" if control is not None and relative is None else None
    context = _context(shown_control, f"window {window}" if window else None, note)
    where = _where(segment)

    crossed = [lim for lim in limits if worse(value, lim.value)]
    if crossed:
        pairs = [(_distinct(value, lim.value), lim) for lim in crossed]
        shown = pairs[0][0][0]
        reasons = f" and {sign} ".join(lim.text(limit_text) for (_, limit_text), lim in pairs)
        message = f"{guardrail.name} breached{where}: {shown} {sign} {reasons}{context}"
        return SegmentJudgement(
            guardrail.name, segment, Outcome.BREACHED, value, binding.value, control, window, message
        )

    if guardrail.warn_at is not None and worse(value, guardrail.warn_at):
        shown, warn_text = _distinct(value, guardrail.warn_at)
        message = (
            f"{guardrail.name} warning{where}: {shown} {sign} warnAt {warn_text}, "
            f"within {binding.text(_num(binding.value))}{context}"
        )
        return SegmentJudgement(
            guardrail.name, segment, Outcome.WARNING, value, guardrail.warn_at, control, window, message
        )

    shown, limit_text = _distinct(value, binding.value)
    message = f"{guardrail.name} passed{where}: {shown} {ok_sign} {binding.text(limit_text)}{context}"
    return SegmentJudgement(guardrail.name, segment, Outcome.PASSED, value, binding.value, control, window, message)


def judge(
    guardrail: Guardrail,
    candidate: Sequence[Sample],
    control: Sequence[Sample] | None,
    limits: GuardrailLimits = DEFAULT_LIMITS,
) -> GuardrailVerdict:
    """Judge the candidate's series against the guardrail's thresholds and, segment by segment, the control.

    ``control`` is None when the control was not measured; an empty sequence means it was measured and
    returned nothing.
    """
    window = _window(guardrail.query or "")
    if not candidate:
        segments = (_bounded(_no_data(guardrail, "", "the query returned no series", window), limits),)
        return GuardrailVerdict(guardrail.name, segments[0].outcome, segments)

    controls = {segment_of(s.labels): s.value for s in control or ()}
    judgements = []
    for sample in candidate:
        segment = segment_of(sample.labels)
        control_value = controls.get(segment)
        if control is None:
            control_note = "the control was not measured"
        elif control_value is None:
            control_note = "no control series for this segment"
        elif not math.isfinite(control_value):
            control_note = f"the control value is {_num(control_value)} for this segment"
            control_value = None
        else:
            control_note = None
        # Paired on the whole label string, shown cut: two long label sets must not pair by their prefix.
        shown = bounded_text(segment, limits.max_segment_chars, digest=True)
        judgement = _judge_series(guardrail, shown, sample.value, control_value, control_note, window)
        judgements.append(_bounded(judgement, limits))
    return GuardrailVerdict(guardrail.name, _worst(j.outcome for j in judgements), tuple(judgements))


def judge_error(guardrail: Guardrail, message: str, limits: GuardrailLimits = DEFAULT_LIMITS) -> GuardrailVerdict:
    """The verdict for a guardrail that could not be measured: an Error, never a breach."""
    error = bounded_text(message, limits.max_message_chars)
    segment = SegmentJudgement(
        guardrail.name,
        "",
        Outcome.ERROR,
        None,
        None,
        None,
        _window(guardrail.query or ""),
        f"{guardrail.name} could not be evaluated: {error}",
    )
    return GuardrailVerdict(guardrail.name, Outcome.ERROR, (_bounded(segment, limits),), error=error)


def _bounded(judgement: SegmentJudgement, limits: GuardrailLimits) -> SegmentJudgement:
    return dataclasses.replace(judgement, message=bounded_text(judgement.message, limits.max_message_chars))
