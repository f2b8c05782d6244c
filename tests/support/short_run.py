"""A whole life of the operator in seconds: one rollout walked to Promoted and one stopped by the kill switch.

The least-privilege tests run it once per RBAC rule taken away, and the image test runs it against the operator
started from the image, so it is short and says what did not happen rather than stopping at the first miss:
each behaviour a user relies on is named, and the run answers with the ones still missing at its deadline.
"""

from __future__ import annotations

import time
from typing import Any

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import rollout_manifest
from tests.support.operator import apply, create_token_secret, event_reasons, get_rollout
from tests.support.sandbox import Testbed

__all__ = ["BEHAVIOURS", "prepare", "run"]

BEHAVIOURS = (
    "starts a rollout",
    "promotes a rollout",
    "engages the kill switch",
    "clears a handled verb",
    "records Events",
)
"""What a short run must show, in the order a user would meet them."""

_PROMOTED, _KILLED = "promote-me", "kill-me"
_ABORT = "airollout.dev/action"


def prepare(testbed: Testbed, double: FeatBitDouble, namespace: str) -> None:
    """The FeatBit side of a short run (its two flags) and the Secret holding the FeatBit token."""
    for flag in (_PROMOTED, _KILLED):
        double.create_flag(
            key=flag, variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary", disabled_variation_id="stable",
        )  # fmt: skip
    create_token_secret(testbed, namespace, double.token)


def run(testbed: Testbed, double: FeatBitDouble, namespace: str, deadline: float = 15.0) -> list[str]:
    """Apply both rollouts to an operator already running, abort the second once it serves its first stage, and
    return the `BEHAVIOURS` not seen within ``deadline`` seconds (empty: all of them)."""

    def manifest(flag: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
        return rollout_manifest(namespace, flag, flag=flag, env_id=double.env_id, api_url=double.api_url, stages=stages)

    walk = [{"name": "canary", "percentage": 5, "duration": "1s"}, {"name": "full", "percentage": 100}]
    apply(testbed, manifest(_PROMOTED, walk))
    apply(testbed, manifest(_KILLED, [{"name": "half", "percentage": 50, "duration": "1h"}]))
    seen: set[str] = set()
    aborted = False
    end = time.monotonic() + deadline
    while time.monotonic() < end and len(seen) < len(BEHAVIOURS):
        promoted, killed = get_rollout(testbed, namespace, _PROMOTED), get_rollout(testbed, namespace, _KILLED)
        phases = {(r.get("status") or {}).get("phase") for r in (promoted, killed)}
        if phases - {None}:
            seen.add("starts a rollout")
        if (promoted.get("status") or {}).get("phase") == "Promoted":
            seen.add("promotes a rollout")
        # Read before this round's annotation could land: a verb is cleared only once it was set.
        if aborted and _ABORT not in (killed["metadata"].get("annotations") or {}):
            seen.add("clears a handled verb")
        if not aborted and (killed.get("status") or {}).get("stageName") == "half":
            testbed.kubectl("-n", namespace, "annotate", "airollout", _KILLED, f"{_ABORT}=abort")
            aborted = True
        if (killed.get("status") or {}).get("phase") == "RolledBack" and not double.get_flag(_KILLED)["isEnabled"]:
            seen.add("engages the kill switch")
        if "Promoted" in event_reasons(testbed, namespace, _PROMOTED) and "KillSwitchEngaged" in event_reasons(
            testbed, namespace, _KILLED
        ):
            seen.add("records Events")
        time.sleep(0.3)
    return [behaviour for behaviour in BEHAVIOURS if behaviour not in seen]
