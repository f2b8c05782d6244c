"""A whole life of the operator in seconds: one rollout walked to Promoted and one stopped by the kill switch.

The least-privilege tests run it once per RBAC rule taken away, and the image test runs it against the operator
started from the image, so it is short and says what did not happen rather than stopping at the first miss:
each behaviour a user relies on is named, and the run answers with the ones still missing at its deadline.
Two more rollouts are judged, one on a GuardrailTemplate's guardrail and one on a ClusterGuardrailTemplate's (a
query Prometheus always answers, so only reading the template can hold them), and the first of them notifies a
webhook whose URL it reads from a Secret.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import rollout_manifest
from tests.support.operator import apply, create_token_secret, event_reasons, get_rollout
from tests.support.sandbox import Testbed

__all__ = ["BEHAVIOURS", "prepare", "run"]

BEHAVIOURS = (
    "starts a rollout",
    "judges a rollout on a GuardrailTemplate",
    "judges a rollout on a ClusterGuardrailTemplate",
    "promotes a rollout",
    "notifies a webhook",
    "engages the kill switch",
    "clears a handled verb",
    "records Events",
)
"""What a short run must show, in the order a user would meet them."""

_PROMOTED, _KILLED, _CLUSTER_JUDGED = "promote-me", "kill-me", "judge-me"
_ABORT = "airollout.dev/action"
_TEMPLATE = "steady"
_ALWAYS_ANSWERED = {"query": "vector(0)", "max": 1}


def _cluster_template(namespace: str) -> str:
    return f"steady-{namespace}"  # cluster-scoped: one per test namespace


def prepare(testbed: Testbed, double: FeatBitDouble, namespace: str) -> None:
    """What a short run needs before the operator starts: its two flags in FeatBit, the Secret with the FeatBit
    token, and the two guardrail templates."""
    for flag in (_PROMOTED, _KILLED, _CLUSTER_JUDGED):
        double.create_flag(
            key=flag, variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary", disabled_variation_id="stable",
        )  # fmt: skip
    create_token_secret(testbed, namespace, double.token)
    for kind, name, where in (
        ("GuardrailTemplate", _TEMPLATE, {"namespace": namespace}),
        ("ClusterGuardrailTemplate", _cluster_template(namespace), {}),
    ):
        guardrail = {"name": kind.lower(), **_ALWAYS_ANSWERED}
        apply(
            testbed,
            {
                "apiVersion": "airollout.dev/v1alpha1",
                "kind": kind,
                "metadata": {"name": name, **where},
                "spec": {"guardrails": [guardrail]},
            },
        )


@contextmanager
def _webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A receiver on loopback: its URL and the bodies posted to it."""
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posts
    finally:
        server.shutdown()
        server.server_close()


def run(testbed: Testbed, double: FeatBitDouble, namespace: str, deadline: float = 15.0) -> list[str]:
    """Apply both rollouts to an operator already running, abort the second once it serves its first stage, and
    return the `BEHAVIOURS` not seen within ``deadline`` seconds (empty: all of them)."""

    def manifest(flag: str, stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return rollout_manifest(
            namespace, flag, flag=flag, env_id=double.env_id, api_url=double.api_url, stages=stages, **spec
        )

    with _webhook() as (url, posts):
        testbed.kubectl("-n", namespace, "create", "secret", "generic", "hooks", f"--from-literal=url={url}")
        walk = [{"name": "canary", "percentage": 5, "duration": "1s"}, {"name": "full", "percentage": 100}]
        judged = manifest(
            _PROMOTED, walk,
            prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
            analysis={"interval": "1s"},
            guardrails=[{"templateRef": {"name": _TEMPLATE, "kind": "GuardrailTemplate"}}],
            notifications=[{"type": "webhook", "urlSecretRef": {"name": "hooks"}, "events": ["Promoted"]}],
        )  # fmt: skip
        apply(testbed, judged)
        cluster_judged = manifest(
            _CLUSTER_JUDGED, walk,
            prometheus={"url": testbed.prometheus_url, "timeout": "3s"},
            analysis={"interval": "1s"},
            guardrails=[{"templateRef": {"name": _cluster_template(namespace), "kind": "ClusterGuardrailTemplate"}}],
        )  # fmt: skip
        apply(testbed, cluster_judged)
        apply(testbed, manifest(_KILLED, [{"name": "half", "percentage": 50, "duration": "1h"}]))
        return _watch(testbed, double, namespace, posts, deadline)


def _watch(
    testbed: Testbed, double: FeatBitDouble, namespace: str, posts: list[dict[str, Any]], deadline: float
) -> list[str]:
    seen: set[str] = set()
    aborted = False
    end = time.monotonic() + deadline
    while time.monotonic() < end and len(seen) < len(BEHAVIOURS):
        promoted, killed = get_rollout(testbed, namespace, _PROMOTED), get_rollout(testbed, namespace, _KILLED)
        cluster_judged = get_rollout(testbed, namespace, _CLUSTER_JUDGED)
        if {(r.get("status") or {}).get("phase") for r in (promoted, killed)} - {None}:
            seen.add("starts a rollout")
        for rollout, kind in ((promoted, "GuardrailTemplate"), (cluster_judged, "ClusterGuardrailTemplate")):
            verdicts = (rollout.get("status") or {}).get("guardrails") or []
            if any(v["name"] == kind.lower() and v["outcome"] == "Passed" for v in verdicts):
                seen.add(f"judges a rollout on a {kind}")
        if (promoted.get("status") or {}).get("phase") == "Promoted":
            seen.add("promotes a rollout")
        if any(post.get("reason") == "Promoted" for post in list(posts)):
            seen.add("notifies a webhook")
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
