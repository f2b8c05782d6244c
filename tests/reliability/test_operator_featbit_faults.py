"""`airollout run` against a FeatBit that is slow, failing, contended, half-failing or refusing: no stage is
claimed that FeatBit was not confirmed to serve, and the kill switch lands as soon as FeatBit lets it.

The FeatBit double injects the faults (`airollout_testbed.featbit_double.faults`): added latency, bursts of
5xx, requests held unanswered, 409s from a concurrent writer, writes saved and then answered 500, SDK streams
dropped, and a token whose policy loses and regains a permission. During a rollout a fault is re-armed every
`CHAOS_PERIOD` seconds, so it lands on whatever the operator is doing at that moment; status is compared
with the flag in the double ten times a second throughout. For the kill switch each fault is in place when
it is engaged, and the clock starts when FeatBit answers again.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fbclient.client import FBClient

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.waiting import TimedOut, wait_for
from tests.reliability.rollouts import (
    ExposureWatch,
    Kube,
    assert_featbit_serves_what_status_says,
    audit_comments,
    condition,
    create_flag,
    entered_stages,
    manifest,
    operator_in,
    tracebacks,
    wait_seconds,
)
from tests.support.featbit import count_variations, synthetic_users
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

NAME = FLAG = "assistant-v2"
USERS = synthetic_users(2000)
STAGES = [
    {"name": "canary", "percentage": 5, "duration": "1s"},
    {"name": "ramp-25", "percentage": 25, "duration": "1s"},
    {"name": "ramp-50", "percentage": 50, "duration": "1s"},
    {"name": "full", "percentage": 100},
]
CHAOS_PERIOD = 0.5
CHAOS_FOR = 30.0
FEATBIT_TIMEOUT = 2.0
"""--featbit-timeout: routine calls give up after 2 s here (5 s by default); the kill switch keeps its 30 s."""
RETRY_CAP = 2.0
"""--retry-backoff-cap: a refused call is retried after at most 2 s here (30 s by default)."""
LANDS_AFTER_RECOVERY = 5.0
"""A few seconds: the kill switch's longest pause between attempts (1 s, or `RETRY_CAP` after a refusal) and
one request."""
HEDGE_AFTER = 4.0
"""--kill-switch-hedge-after for the six-second test (2 s by default): room to tell the first attempt's answer
from a later one's."""
HELD_FOR = 3.0
"""Seconds FeatBit leaves the kill switch's first attempt unanswered before it answers new requests again."""
TOGGLE_PUT = "PUT /api/v1/envs/{env_id}/feature-flags/{key}/toggle/{status}"


@dataclass
class Token:
    """The rollout's FeatBit token, for faults that act on its policy."""

    value: str
    rounds: int = 0


Arm = Callable[[FeatBitDouble, Token, random.Random], None]


def latency(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.faults.latency = rng.choice([0.0, 0.3, 0.8, 1.5])


def bursts_of_5xx(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.faults.update(errors=rng.randint(1, 6), error_status=rng.choice([500, 502, 503, 504]))


def held_requests(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.faults.timeouts = 1


def concurrent_writers(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.faults.conflicts = rng.randint(1, 3)


def saved_then_500(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.faults.audit_failures = 1


def dropped_streams(double: FeatBitDouble, _: Token, rng: random.Random) -> None:
    double.drop_streaming_connections()


def flapping_permissions(double: FeatBitDouble, token: Token, rng: random.Random) -> None:
    """A permission the next write needs taken away for two rounds, then given back for one: someone editing
    the token in FeatBit."""
    token.rounds += 1
    if token.rounds % 3 == 0:
        double.set_token_policy(token.value)
    else:
        double.set_token_policy(token.value, deny=[rng.choice(["UpdateFlagDefaultRule", "ToggleFlag"])])


ROLLOUT_FAULTS: dict[str, Arm] = {
    "latency": latency,
    "5xx-bursts": bursts_of_5xx,
    "timeouts": held_requests,
    "409-races": concurrent_writers,
    "committed-then-500": saved_then_500,
    "dropped-streams": dropped_streams,
    "403-by-permission": flapping_permissions,
}
# A write FeatBit saved but answered 500 for leaves no audit entry, and its change is published to SDKs only
# by a later change (tests/integration/test_featbit_faults_operator.py holds the operator to that).
_LOSES_AUDIT_ENTRIES = {"committed-then-500"}
_COUNTED_FAULTS = {"5xx-bursts", "timeouts", "409-races", "committed-then-500"}


OPERATOR_ARGS = (f"--featbit-timeout={FEATBIT_TIMEOUT:g}", f"--retry-backoff-cap={RETRY_CAP:g}")


@pytest.fixture
def operator(testbed: Testbed, namespace: str, airollout_crd: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    with operator_in(testbed, tmp_path, namespace, *OPERATOR_ARGS) as process:
        yield process


@pytest.fixture
def token(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> str:
    """A token of its own for the rollout, allowed everything until a test narrows it; and the flag."""
    value = featbit_double.mint_token("airollout-reliability")
    testbed.kubectl("-n", namespace, "create", "secret", "generic", "featbit", f"--from-literal=token={value}")
    create_flag(featbit_double, FLAG)
    return value


_COUNTED = ("errors", "timeouts", "conflicts", "audit_failures")
"""Faults armed as a number of requests (or saved writes) to fail: what is left shows how many met one."""


class Chaos:
    """Re-arms a fault every `CHAOS_PERIOD` seconds (give or take half) while running; FeatBit behaves again
    after it. `met` counts the counted faults that requests actually ran into."""

    def __init__(self, double: FeatBitDouble, arm: Arm, token: Token, seed: int) -> None:
        self.double, self.arm, self.token = double, arm, token
        self.rng = random.Random(seed)
        self.rounds = 0
        self.met = 0
        self._armed = dict.fromkeys(_COUNTED, 0)
        self._stop = threading.Event()

    def _round(self) -> None:
        faults = self.double.faults
        self.met += sum(max(0, self._armed[name] - getattr(faults, name)) for name in _COUNTED)
        self.arm(self.double, self.token, self.rng)
        self._armed = {name: getattr(faults, name) for name in _COUNTED}
        self.rounds += 1

    def _loop(self) -> None:
        while not self._stop.wait(CHAOS_PERIOD * self.rng.uniform(0.5, 1.5)):
            self._round()

    @contextmanager
    def running(self) -> Iterator[Chaos]:
        self._round()  # in place before the first write
        thread = threading.Thread(target=self._loop, name="featbit-chaos", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)
            self.met += sum(max(0, self._armed[name] - getattr(self.double.faults, name)) for name in _COUNTED)
            self.double.faults.clear()
            self.double.set_token_policy(self.token.value)


def status_when(kube: Kube, namespace: str, what: str, test: Callable[[dict[str, Any]], bool], **kw: Any) -> Any:
    return wait_for(what, lambda: (s := kube.status(namespace, NAME)) and test(s) and s, **kw)


@pytest.mark.parametrize("fault", list(ROLLOUT_FAULTS))
def test_under_featbit_faults_every_stage_is_entered_once_and_only_after_featbit_confirmed_it(
    fault: str, testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, token: str, kube: Kube,
    operator: OperatorProcess, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    sdk = featbit_client()
    watch = ExposureWatch(kube, featbit_double)
    watch.add(namespace, NAME, FLAG)
    chaos = Chaos(featbit_double, ROLLOUT_FAULTS[fault], Token(token), seed=len(fault))
    with watch.running():
        with chaos.running():
            testbed.kubectl(
                "apply", "-f", "-", input=_json(manifest(featbit_double, namespace, NAME, FLAG, stages=STAGES))
            )
            # Faults on every write into the first three stages, or for half a minute if FeatBit holds it back.
            with contextlib.suppress(TimedOut):
                status_when(kube, namespace, "ramp-50", lambda s: s.get("stageIndex", 0) >= 2, timeout=CHAOS_FOR)
        status = status_when(
            kube, namespace, "Promoted", lambda s: s.get("phase") == "Promoted", timeout=60, log=operator.log
        )
    watch.check_once()
    watch.assert_held()
    if fault in _COUNTED_FAULTS:
        assert chaos.met > 0, "no request ever met the fault"
    if fault == "403-by-permission":
        assert "PermissionDenied" in [e["reason"] for e in status["history"]], "no write ever met the refusal"
    print(  # the figure docs/reliability.md quotes; shown with `pytest -s`
        f"{fault}: {chaos.rounds} rounds, {chaos.met} counted faults met; history "
        f"{[e['reason'] for e in status['history']]}; {watch.comparisons} comparisons"
    )

    names = [str(s["name"]) for s in STAGES]
    assert entered_stages(status["history"]) == [names], status["history"]
    assert_featbit_serves_what_status_says(featbit_double, status, FLAG)
    if fault not in _LOSES_AUDIT_ENTRIES:
        # Every stage status entered has its write in FeatBit's audit log, under this rollout's name.
        comments = [c for c in audit_comments(featbit_double, FLAG) if c.startswith(f"AIRollout {namespace}/{NAME} ")]
        written = [name for name in names if any(f" {name} (" in c for c in comments)]
        assert written == names, comments
        wait_for(
            "the SDK to serve the candidate to everyone",
            lambda: count_variations(sdk, FLAG, USERS)["canary"] == len(USERS),
            timeout=15,
        )
    assert not tracebacks(operator.log)


@dataclass(frozen=True)
class KillFault:
    """A fault in place when the kill switch is engaged (`arm`), and how FeatBit comes back (`heal`)."""

    arm: Callable[[FeatBitDouble, str], None]
    heal: Callable[[FeatBitDouble, str], None] | None
    """None: FeatBit never gets better, and the kill switch must land through the fault."""
    answers: bool = True
    """Whether a failing attempt gets an answer at once (an error) rather than none (a held request)."""


def _clear(double: FeatBitDouble, token: str) -> None:
    double.faults.clear()


KILL_FAULTS = [
    pytest.param(KillFault(lambda d, t: d.faults.update(errors=10**9), _clear), id="featbit-down"),
    pytest.param(
        KillFault(lambda d, t: d.faults.update(errors=10**9, error_status=502, latency=0.5), _clear),
        id="5xx-bursts-and-latency",
    ),
    pytest.param(KillFault(lambda d, t: d.faults.update(timeouts=10**9), _clear, answers=False), id="timeouts"),
    pytest.param(
        KillFault(lambda d, t: d.set_token_policy(t, deny=["ToggleFlag"]), lambda d, t: d.set_token_policy(t)),
        id="403-by-permission",
    ),
    pytest.param(KillFault(lambda d, t: d.faults.update(audit_failures=1), None), id="committed-then-500"),
    pytest.param(KillFault(lambda d, t: d.faults.update(conflicts=10), None), id="409-races"),
]


@pytest.mark.parametrize("case", KILL_FAULTS)
def test_the_kill_switch_lands_within_seconds_of_featbit_answering_again_and_is_recorded_once(
    case: KillFault, testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, token: str, kube: Kube,
    operator: OperatorProcess, featbit_client: Callable[..., FBClient],
) -> None:  # fmt: skip
    watch = ExposureWatch(kube, featbit_double)
    watch.add(namespace, NAME, FLAG)
    half = [{"name": "half", "percentage": 50, "duration": "1h"}]
    with watch.running():
        testbed.kubectl("apply", "-f", "-", input=_json(manifest(featbit_double, namespace, NAME, FLAG, stages=half)))
        status_when(kube, namespace, "the stage", lambda s: s.get("stageName") == "half", log=operator.log)
        case.arm(featbit_double, token)
        toggles = toggle_requests(featbit_double)
        engage(testbed, namespace)
        if case.heal is not None and not case.answers:
            wait_for("a first attempt", lambda: toggle_requests(featbit_double) > toggles, timeout=10)
            wait_seconds(HELD_FOR)  # FeatBit holds it unanswered a while, then answers new requests again
            assert featbit_double.get_flag(FLAG)["isEnabled"] is True
            case.heal(featbit_double, token)
        elif case.heal is not None:
            status = status_when(
                kube, namespace, "the kill switch reported unacknowledged",
                lambda s: "not acknowledged" in (condition(s, "FeatBitSynced") or {}).get("message", ""),
                timeout=30, log=operator.log,
            )  # fmt: skip
            assert status["phase"] != "RolledBack"
            assert featbit_double.get_flag(FLAG)["isEnabled"] is True
            case.heal(featbit_double, token)
        healed = time.monotonic()
        wait_for(
            "FeatBit to serve the control to everyone",
            lambda: not featbit_double.get_flag(FLAG)["isEnabled"],
            timeout=LANDS_AFTER_RECOVERY if case.heal is not None else 15,
        )
        landed = time.monotonic() - healed
        featbit_double.faults.clear()
        status = status_when(
            kube, namespace, "RolledBack", lambda s: s.get("phase") == "RolledBack", timeout=30, log=operator.log
        )
    watch.assert_held()
    assert [e["reason"] for e in status["history"]].count("KillSwitchEngaged") == 1, status["history"]
    assert_featbit_serves_what_status_says(featbit_double, status, FLAG)
    assert count_variations(featbit_client(), FLAG, USERS)["stable"] == len(USERS)
    assert not tracebacks(operator.log)
    print(  # the figure docs/reliability.md quotes; shown with `pytest -s`
        f"kill switch: off {landed:.2f}s after FeatBit {'answered again' if case.heal else 'was faulted'}; "
        f"{toggle_requests(featbit_double) - toggles} toggle requests"
    )


def test_with_featbit_answering_every_request_after_six_seconds_the_kill_switch_lands_on_its_first_attempt(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, token: str, kube: Kube, airollout_crd: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    # A second attempt goes out beside one FeatBit has not answered for HEDGE_AFTER seconds; the first must be
    # the one that lands, at 6 s, before any other could (at HEDGE_AFTER + 6 s at the earliest).
    hedge = f"--kill-switch-hedge-after={HEDGE_AFTER:g}"
    with operator_in(testbed, tmp_path, namespace, *OPERATOR_ARGS, hedge) as operator:
        half = [{"name": "half", "percentage": 50, "duration": "1h"}]
        testbed.kubectl("apply", "-f", "-", input=_json(manifest(featbit_double, namespace, NAME, FLAG, stages=half)))
        status_when(kube, namespace, "the stage", lambda s: s.get("stageName") == "half", log=operator.log)
        toggles = toggle_requests(featbit_double)
        featbit_double.faults.latency = 6.0
        engage(testbed, namespace)
        first: float = wait_for(
            "the first attempt to reach FeatBit",
            lambda: toggle_requests(featbit_double) > toggles and time.monotonic(),
            timeout=10,
            interval=0.02,
        )
        wait_for(
            "the first attempt to turn the flag off",
            lambda: not featbit_double.get_flag(FLAG)["isEnabled"],
            timeout=6 + HEDGE_AFTER - 1,
            interval=0.05,
        )
        landed = time.monotonic() - first
        assert landed >= 6  # it really went through the slow FeatBit
        status = status_when(
            kube, namespace, "RolledBack", lambda s: s.get("phase") == "RolledBack", timeout=60, log=operator.log
        )
    assert [e["reason"] for e in status["history"]].count("KillSwitchEngaged") == 1
    assert not tracebacks(operator.log)
    print(f"six-second FeatBit: the flag off {landed:.2f}s after the first attempt reached it")  # docs figure


def toggle_requests(double: FeatBitDouble) -> int:
    """How many switch-on/off requests the double has received so far (answered or not)."""
    count: int = double.requests.snapshot()["byRoute"].get(TOGGLE_PUT, 0)
    return count


def engage(testbed: Testbed, namespace: str) -> None:
    patch = '{"spec": {"killSwitch": true}}'
    testbed.kubectl("-n", namespace, "patch", "airollout", NAME, "--type=merge", "-p", patch)


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)
