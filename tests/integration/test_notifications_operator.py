"""Notifications end to end: `airollout run` posting to a real HTTP receiver, per rollout and cluster-wide.

The receiver is a plain HTTP server in the test process; the operator reads its URLs from Secrets, as it would
a Slack incoming webhook's. One receiver answers at once, another never answers: the second shows that a
receiver that hangs costs the rollout (and its kill switch) nothing, and ends as a condition and an Event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.operator import apply, create_token_secret, events, status_of, wait_for_phase
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

FLAG = "answer-style"
NAME = "style-v2"
# What a real webhook URL carries in its path: the credential. It must never show anywhere but in the Secret.
CREDENTIAL = "T000-B000-xoxb-never-print-this"


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (path, JSON body); with ``hang`` it never answers."""

    def __init__(self, *, hang: bool = False) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.waiting = 0
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append((self.path, body))
                if hang:
                    receiver.waiting += 1
                    receiver._released.wait()
                    receiver.waiting -= 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def reasons(self, path: str) -> list[str]:
        return [body.get("reason") or body.get("text", "") for p, body in list(self.posts) if p == path]

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hanging_receiver() -> Iterator[Receiver]:
    server = Receiver(hang=True)
    yield server
    server.close()


@pytest.fixture
def flag_env(testbed: Testbed, namespace: str, featbit_double: FeatBitDouble) -> FeatBitDouble:
    featbit_double.create_flag(
        key=FLAG, variations=[("canary", "true"), ("stable", "false")],
        enabled_variation_id="canary", disabled_variation_id="stable",
    )  # fmt: skip
    create_token_secret(testbed, namespace, featbit_double.token)
    return featbit_double


def url_secret(testbed: Testbed, namespace: str, name: str, **urls: str) -> None:
    literals = [f"--from-literal={key}={url}" for key, url in urls.items()]
    testbed.kubectl("-n", namespace, "create", "secret", "generic", name, *literals)


def notified(double: FeatBitDouble, namespace: str, stages: list[dict[str, Any]], targets: list[Any]) -> dict[str, Any]:
    return rollout_manifest(
        namespace, NAME, api_url=double.api_url, env_id=double.env_id, flag=FLAG, stages=stages, notifications=targets
    )


def nowhere_but_the_secret(testbed: Testbed, namespace: str, log: Path) -> None:
    """The credential in the URLs is in no status, no Event and no line the operator logged."""
    assert CREDENTIAL not in json.dumps(status_of(testbed, namespace, NAME))
    assert CREDENTIAL not in json.dumps(events(testbed, namespace, NAME))
    assert CREDENTIAL not in log.read_text()


def test_each_decision_reaches_the_webhook_the_slack_hook_and_the_cluster_wide_target(
    testbed: Testbed, namespace: str, flag_env: FeatBitDouble, receiver: Receiver, tmp_path: Path, airollout_crd: Path
) -> None:
    url_secret(
        testbed, namespace, "hooks",
        url=receiver.url(f"/webhook/{CREDENTIAL}"), slack=receiver.url(f"/services/{CREDENTIAL}"),
    )  # fmt: skip
    url_secret(testbed, namespace, "cluster-hooks", **{"slack-ops": receiver.url(f"/cluster/{CREDENTIAL}")})
    stages = [{"name": "canary", "percentage": 10, "duration": "1s"}, {"name": "full", "percentage": 100}]
    targets = [
        {"type": "webhook", "urlSecretRef": {"name": "hooks"}},
        {"type": "slack", "urlSecretRef": {"name": "hooks", "key": "slack"}, "events": ["Promoted"]},
    ]
    with OperatorProcess(
        tmp_path, testbed.kubeconfig, "--notifications-secret", f"{namespace}/cluster-hooks"
    ) as operator:
        apply(testbed, notified(flag_env, namespace, stages, targets))
        wait_for_phase(testbed, namespace, NAME, "Promoted", log=operator.log)
        webhook = f"/webhook/{CREDENTIAL}"
        wait_for("three webhook posts", lambda: len(receiver.reasons(webhook)) >= 3, timeout=15, log=operator.log)
        wait_for("the Slack post", lambda: receiver.reasons(f"/services/{CREDENTIAL}"), timeout=15)
        wait_for("three cluster-wide posts", lambda: len(receiver.reasons(f"/cluster/{CREDENTIAL}")) >= 3, timeout=15)

        assert receiver.reasons(webhook) == ["Started", "StageAdvanced", "Promoted"]
        body = next(b for p, b in receiver.posts if p == webhook and b["reason"] == "StageAdvanced")
        assert body["rollout"]["namespace"] == namespace
        assert body["rollout"]["name"] == NAME
        assert (body["flag"], body["stage"], body["percentage"], body["phase"]) == (FLAG, "full", 100, "Progressing")
        assert body["type"] == "Normal"
        assert "stage 2/2 full" in body["message"]
        # The Slack target asked for Promoted only, and gets Slack's message shape.
        (slack,) = [b for p, b in receiver.posts if p == f"/services/{CREDENTIAL}"]
        assert set(slack) == {"text"}
        assert slack["text"].startswith(f":large_green_circle: *Promoted* `{namespace}/{NAME}` at stage full (100%)")
        # A key named slack-* in the cluster-wide Secret is a Slack target, posted for every rollout's decisions.
        cluster = [b["text"] for p, b in receiver.posts if p == f"/cluster/{CREDENTIAL}"]
        assert [text.split("*")[1] for text in cluster] == ["Started", "StageAdvanced", "Promoted"]
        assert "NotificationsDelivered" not in {c["type"] for c in status_of(testbed, namespace, NAME)["conditions"]}
        nowhere_but_the_secret(testbed, namespace, operator.log)


def test_a_receiver_that_never_answers_holds_up_neither_the_rollout_nor_the_kill_switch(
    testbed: Testbed,
    namespace: str,
    flag_env: FeatBitDouble,
    hanging_receiver: Receiver,
    tmp_path: Path,
    airollout_crd: Path,
) -> None:
    url_secret(testbed, namespace, "hooks", url=hanging_receiver.url(f"/webhook/{CREDENTIAL}"))
    stages = [
        {"name": "canary", "percentage": 10, "duration": "1s"},
        {"name": "half", "percentage": 50, "duration": "1h"},
        {"name": "full", "percentage": 100},
    ]
    targets = [{"type": "webhook", "urlSecretRef": {"name": "hooks"}}]
    timeout, attempts = 3, 2
    with OperatorProcess(
        tmp_path, testbed.kubeconfig,
        "--notification-timeout", str(timeout), "--notification-attempts", str(attempts),
        "--notification-backoff-cap", "0.5",
    ) as operator:  # fmt: skip
        apply(testbed, notified(flag_env, namespace, stages, targets))
        # The rollout walks on while its first notification hangs.
        wait_for(
            "stage half",
            lambda: status_of(testbed, namespace, NAME).get("stageName") == "half",
            timeout=20,
            log=operator.log,
        )
        assert hanging_receiver.waiting == 1
        assert len(hanging_receiver.posts) == 1  # Started, still unanswered; StageAdvanced waits behind it

        asked = time.monotonic()
        testbed.kubectl(
            "-n", namespace, "patch", "airollout", NAME, "--type=merge", "-p", '{"spec": {"killSwitch": true}}'
        )
        wait_for("the flag off", lambda: flag_env.get_flag(FLAG)["isEnabled"] is False, timeout=10, interval=0.02)
        landed = time.monotonic() - asked
        # Landed while the notification was still hanging: the kill switch waited for none of it.
        still_waiting = hanging_receiver.waiting
        print(f"kill switch landed {landed:.3f}s after the patch; notifications still hanging: {still_waiting}")
        assert still_waiting == 1
        wait_for_phase(testbed, namespace, NAME, "RolledBack", log=operator.log)

        status = wait_for(
            "the NotificationsDelivered condition",
            lambda: (
                (s := status_of(testbed, namespace, NAME))
                and any(c["type"] == "NotificationsDelivered" for c in s.get("conditions", []))
                and s
            ),
            timeout=30,
            log=operator.log,
        )
        (delivered,) = [c for c in status["conditions"] if c["type"] == "NotificationsDelivered"]
        assert (delivered["status"], delivered["reason"]) == ("False", "NotificationFailed")
        assert f"the URL in Secret {namespace}/hooks key url" in delivered["message"]
        assert f"failed after {attempts} attempts: no answer within {timeout}s" in delivered["message"]
        failed = wait_for(
            "a NotificationFailed Event",
            lambda: [e for e in events(testbed, namespace, NAME) if e["reason"] == "NotificationFailed"],
            timeout=15,
        )
        assert failed[0]["type"] == "Warning"
        assert "Started" in failed[0]["message"]
        nowhere_but_the_secret(testbed, namespace, operator.log)
