"""Generated AIRollouts, valid and hostile, against the real apiserver with `airollout run` watching: whatever
anyone writes, the apiserver refuses it naming the field, or the operator gives it a phase and a condition,
and never crashes or logs a traceback.

Hypothesis builds each spec from a valid one and mutates a few fields with what breaks parsers: text in every
script and control characters, 100 KB strings, integers past 64 bits, 1e308, nulls, lists and objects where
scalars belong, nesting 200 deep, unknown fields, URLs with a bad IPv6 host or port 99999, durations of a
million years, tokens in Secrets that hold binary bytes or a trailing newline, and verbs of 100 KB. Objects
are created through the REST API (strict field validation, as kubectl applies them) in batches, and each
batch is checked and deleted before the next, so the operator's load stays what one batch makes it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.sandbox import processes
from airollout_testbed.waiting import TimedOut, wait_for
from tests.reliability.rollouts import Kube, create_flag, manifest, operator_in, tracebacks
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAGS = ("hs-a", "hs-b", "hs-c")
SETTLE_BOUND = 60.0
"""Seconds for every accepted object of a batch to have a phase and a condition. The slowest honest answer is
FeatBitUnavailable for a FeatBit that never answers: three attempts of 5 s each, then the condition."""
_NAMES_A_FIELD = re.compile(r"\b(spec|metadata)\b[.\[]|unknown field \"")

# Hostile values, built once: hypothesis picks among them (cheap) or draws its own.
_BIG = "x" * 100_000
_NASTY_TEXT = [
    "",
    " ",
    "\n",
    "\x00",
    "\t\r\n\x1b[31m",
    "\u202eevil",
    "💥" * 1000,
    _BIG,
    "{{variant}}",
    '"}',
    "${HOME}",
    "Robert'); DROP TABLE flags;--",
    "../../etc/passwd",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u4e2d\u6587 \U0001f600\u200d\ufeff",
]
_UNUSABLE_URLS = [
    "http://127.0.0.1:99999",
    "http://[::1]:99999",
    "http://[::1",
    "https://",
    "http://" + "a" * 300 + ".x",
]
"""URLs the CRD's pattern (^https?://) lets through that no client can use."""
_URLS = [
    *_UNUSABLE_URLS,
    "http://127.0.0.1:1",
    "https://nonexistent.invalid",
    "http://192.0.2.1:5000",
    "http://user:p%40ss@127.0.0.1:1/prefix",
    "http://\u0430pple.example",
]
_DURATIONS = ["99999999999999h", "8785h", "0s", "0.000001ms", "1h1h1h1h", "1.5h30m", "9" * 40 + "s"]
_NUMBERS = [0, -1, 100, 101, 2**31, 2**53 + 1, 2**63, 10**30, 1e308, -1e308, 5e-324, 0.1, 99.999999]


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(_NUMBERS),
    st.text(max_size=40),
    st.sampled_from(_NASTY_TEXT),
)
_hostile = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=4),
    st.dictionaries(st.text(max_size=10), _scalar, max_size=3),
    st.integers(1, 200).map(_deep),
)
# What a field plausibly holds, hostile but often accepted by the CRD: the operator has to cope with these.
_PLAUSIBLE: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {
    ("flag", "key"): st.sampled_from([*FLAGS, "no-such-flag", "a" * 128]),
    ("flag", "candidate"): st.sampled_from(["canary", "stable", "blue", "Canary"]),
    ("featbit", "url"): st.sampled_from(_URLS),
    ("featbit", "tokenSecretRef", "name"): st.sampled_from(["featbit", "binary-token", "newline-token", "missing"]),
    ("featbit", "tokenSecretRef", "key"): st.sampled_from(["token", "nope", "a" * 250]),
    ("stages", 0, "percentage"): st.sampled_from([0, 0.0001, 50, 100, 99.999999]),
    ("stages", 0, "duration"): st.sampled_from(_DURATIONS),
    ("stages", 0, "segments"): st.lists(st.sampled_from(["internal-users", "no-such-segment", "💥"]), max_size=3),
    ("stages", 0, "audience"): st.lists(st.sampled_from(["internal-users", "no-such-segment"]), max_size=2),
    ("killSwitch",): st.booleans(),
    ("prometheus", "url"): st.sampled_from(_URLS),
    ("prometheus", "timeout"): st.sampled_from(_DURATIONS),
    ("prometheus", "headers"): st.sampled_from(
        [
            [{"name": "X-Scope-OrgID", "valueFrom": {"name": "binary-token", "key": "token"}}],
            [{"name": "Bad Header\n", "valueFrom": {"name": "featbit", "key": "token"}}],
        ]
    ),
    ("analysis", "interval"): st.sampled_from(_DURATIONS),
    ("analysis", "consecutiveErrorLimit"): st.sampled_from([1, 2**31 - 1, 2**40]),
    ("guardrails", 0, "query"): st.one_of(
        st.sampled_from(['up{job="{{jbo}}"}', "{{variant}}", "sum(", 'x{a="{{variant}}"}' * 2000]), st.text()
    ),
    ("guardrails", 0, "max"): st.sampled_from([1e308, -1e308, 0, 2**63]),
    ("guardrails", 0, "maxIncreaseOverControl"): st.sampled_from([0, 1e308, 5e-324]),
    ("guardrails", 0, "noData"): st.sampled_from(["hold", "pass", "fail", "Hold"]),
    ("onBreach",): st.sampled_from(["rollback", "pause", "ignore"]),
}
_ANYWHERE = [
    ("flag",),
    ("flag", "envId"),
    ("flag", "control"),
    ("flag", "dispatchKey"),
    ("featbit",),
    ("stages",),
    ("stages", 0, "name"),
    ("stages", 1, "percentage"),
    ("prometheus", "bearerTokenSecretRef"),
    ("guardrails",),
    ("guardrails", 0, "name"),
    ("guardrails", 0, "min"),
    ("guardrails", 0, "warnAt"),
    ("unknownField",),
    ("stages", 0, "extra"),
    *_PLAUSIBLE,
]


@dataclass(frozen=True)
class Mutation:
    path: tuple[Any, ...]
    value: Any
    remove: bool = False

    def __repr__(self) -> str:  # a failing batch is reported by its drafts: keep each readable
        shown = "removed" if self.remove else _short(self.value)
        return f"{'.'.join(map(str, self.path))}={shown}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a failing example
        printer.text(repr(self))


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    path = draw(st.sampled_from(_ANYWHERE))
    if draw(st.integers(0, 9)) == 0:
        return Mutation(path, None, remove=True)
    plausible = _PLAUSIBLE.get(path)
    value = draw(plausible if plausible is not None and draw(st.booleans()) else _hostile)
    return Mutation(path, value)


@dataclass(frozen=True)
class Draft:
    """A spec to create: the valid base, a few mutations, perhaps a verb in an annotation."""

    changes: tuple[Mutation, ...]
    guarded: bool
    verb: str | None

    def __repr__(self) -> str:
        return f"Draft({list(self.changes)}, guarded={self.guarded}, verb={_short(self.verb)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


# One field in two given a value the CRD lets through but a parser may choke on, plus up to three hostile changes.
_tweaks = st.sampled_from(list(_PLAUSIBLE)).flatmap(lambda path: _PLAUSIBLE[path].map(lambda v: Mutation(path, v)))
drafts = st.builds(
    Draft,
    changes=st.tuples(st.lists(_tweaks, max_size=1), st.lists(mutations(), max_size=3)).map(lambda t: (*t[0], *t[1])),
    guarded=st.booleans(),
    verb=st.one_of(st.none(), st.sampled_from(["promote", "abort", "pause", "💥", _BIG, "retry\n"])),
)


def _apply(target: Any, change: Mutation) -> None:
    *parents, last = change.path
    for key in parents:
        if isinstance(target, dict):
            target = target.setdefault(key, {})
        elif isinstance(target, list) and isinstance(key, int) and key < len(target):
            target = target[key]
        else:
            return  # an earlier mutation replaced the parent with a scalar: nothing left to mutate here
    if isinstance(target, dict):
        if change.remove:
            target.pop(last, None)
        else:
            target[last] = change.value
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        if change.remove:
            del target[last]
        else:
            target[last] = change.value


def build(draft: Draft, name: str, namespace: str, double: FeatBitDouble, prometheus_url: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if draft.guarded:
        extra = {
            "prometheus": {"url": prometheus_url, "timeout": "2s"},
            "analysis": {"interval": "1s"},
            "guardrails": [{"name": "errors", "query": 'sum(up{job="{{variant}}"})', "max": 0.5, "noData": "pass"}],
        }
    stages = [{"name": "canary", "percentage": 10, "duration": "1s"}, {"name": "full", "percentage": 100}]
    body = manifest(double, namespace, name, FLAGS[len(name) % len(FLAGS)], stages=stages, **extra)
    for change in draft.changes:
        _apply(body["spec"], change)
    if draft.verb is not None:
        body["metadata"]["annotations"] = {"airollout.dev/action": draft.verb}
    return body


@dataclass
class Tally:
    """What the apiserver and the operator made of the generated objects."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def names_a_field(answer: dict[str, Any]) -> bool:
    causes = (answer.get("details") or {}).get("causes") or []
    if causes and all(_NAMES_A_FIELD.search(f"{c.get('field', '')}.") for c in causes):
        return True
    return bool(_NAMES_A_FIELD.search(str(answer.get("message"))))


def settled(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return bool(status.get("phase")) and any(c.get("reason") for c in status.get("conditions") or [])


@pytest.fixture
def operator(testbed: Testbed, namespace: str, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    with operator_in(testbed, tmp_path, namespace) as process:
        yield process


@pytest.fixture
def prepared(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, kube: Kube) -> FeatBitDouble:
    """The flags the generated specs name, a segment, and Secrets good and bad."""
    for flag in FLAGS:
        create_flag(featbit_double, flag)
    featbit_double.create_segment(key="internal-users", included=["qa-1"])
    kube.create_secret(namespace, "featbit", {"token": featbit_double.token.encode()})
    kube.create_secret(namespace, "binary-token", {"token": b"\xff\xfe\x00api-\x80\x81"})
    kube.create_secret(namespace, "newline-token", {"token": featbit_double.token.encode() + b"\n\n"})
    return featbit_double


"""URLs the CRD's pattern (^https?://) lets through that no client can use. The generator leaves them to the
test below, which names each that goes wrong."""


def test_every_url_the_crd_accepts_but_no_client_can_use_gets_a_condition_naming_it(
    testbed: Testbed, namespace: str, prepared: FeatBitDouble, kube: Kube, operator: OperatorProcess
) -> None:
    """Each unusable URL in each field at once (the generator meets them one at a time, among other changes)."""
    cases: dict[str, str] = {}
    for part in ("featbit", "prometheus"):
        for index, url in enumerate(_UNUSABLE_URLS):
            name = f"{part}-{index}"
            body = build(Draft((), guarded=part == "prometheus", verb=None), name, namespace, prepared, "http://x")
            body["spec"][part]["url"] = url
            answer = kube.create(body)
            assert answer.status_code == 201, answer.text  # the CRD lets it through: the operator must cope
            cases[name] = part

    def unnamed() -> list[str]:
        """The rollouts without a failing condition that names the field holding their URL."""
        wrong = []
        for item in kube.rollouts(namespace):
            name = item["metadata"]["name"]
            conditions = (item.get("status") or {}).get("conditions") or []
            failing = [c["message"] for c in conditions if c["status"] == "False"]
            url = item["spec"][cases[name]]["url"]
            # An unusable URL is named by its field; one that is well formed but leads nowhere, by itself.
            if not settled(item) or not any(f"spec.{cases[name]}" in m or url in m for m in failing):
                wrong.append(f"{cases[name]}.url {url!r}: {conditions}")
        return wrong

    try:
        wait_for("a condition naming each URL's field", lambda: not unnamed(), timeout=20)
    except TimedOut:
        raise AssertionError("\n".join(unnamed())) from None
    assert not tracebacks(operator.log)


def check_batches(
    examples: int,
    batch: int,
    testbed: Testbed,
    namespace: str,
    double: FeatBitDouble,
    kube: Kube,
    operator: OperatorProcess,
) -> Tally:
    tally = Tally()
    counter = itertools.count()
    pid = operator.pid

    @settings(
        max_examples=examples // batch,
        derandomize=True,
        deadline=None,
        database=None,
        # Shrinking would re-run batches against the operator for many minutes; a failure names its batch.
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(drafts, min_size=batch, max_size=batch))
    def one_batch(generated: list[Draft]) -> None:
        accepted: list[str] = []
        for draft in generated:
            name = f"hs-{next(counter)}"
            body = build(draft, name, namespace, double, testbed.prometheus_url)
            answer = kube.create(body)
            if answer.status_code == 201:
                accepted.append(name)
                continue
            refusal = answer.json()
            assert answer.status_code in (400, 422), f"{answer.status_code}: {answer.text[:2000]}"
            assert names_a_field(refusal), f"a refusal that names no field: {json.dumps(refusal)[:2000]}"
            tally.refused[str(refusal.get("reason"))] += 1

        def all_settled() -> bool:
            items = {i["metadata"]["name"]: i for i in kube.rollouts(namespace)}
            return all(settled(items[name]) for name in accepted)

        wait_for(
            f"{len(accepted)} accepted AIRollouts to have a phase and a condition",
            all_settled,
            timeout=SETTLE_BOUND,
            interval=0.5,
            running=lambda: processes.is_running(processes.find(operator.directory, operator.name)),  # type: ignore[arg-type]
            log=operator.log,
        )
        for item in kube.rollouts(namespace):
            status = item["status"]
            tally.phases[status["phase"]] += 1
            tally.reasons.update({c["reason"] for c in status["conditions"] if c["status"] == "False"})
        tally.accepted += len(accepted)
        assert operator.pid == pid, "the operator process changed"
        found = tracebacks(operator.log)
        assert not found, found[0]
        kube.delete_rollouts(namespace)
        wait_for("the batch to be deleted", lambda: not kube.rollouts(namespace), timeout=60)

    one_batch()
    print(  # the figure docs/reliability.md quotes; shown with `pytest -s`
        f"{examples} specs: {tally.accepted} accepted {dict(tally.phases)}, conditions False by reason "
        f"{dict(tally.reasons)}; refused {dict(tally.refused)}"
    )
    assert tally.accepted > 0, "the generator must produce specs the apiserver accepts"
    assert sum(tally.refused.values()) > 0, "the generator must produce specs the apiserver refuses"
    return tally


def test_generated_specs_are_refused_naming_a_field_or_get_a_phase_and_a_condition_and_never_crash_the_operator(
    testbed: Testbed, namespace: str, prepared: FeatBitDouble, kube: Kube, operator: OperatorProcess
) -> None:
    check_batches(200, 20, testbed, namespace, prepared, kube, operator)


@pytest.mark.long
def test_ten_thousand_generated_specs_never_crash_the_operator(
    testbed: Testbed, namespace: str, prepared: FeatBitDouble, kube: Kube, operator: OperatorProcess
) -> None:
    check_batches(10_000, 50, testbed, namespace, prepared, kube, operator)
