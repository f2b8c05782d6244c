"""`airollout run` authenticating as clusters make it: with a ServiceAccount's bearer token, not the sandbox's
admin certificate.

In a pod the operator holds a ServiceAccount token; through a kubeconfig it may hold a token too (EKS, OIDC,
`kubectl create token`). The other tests run it with the sandbox's admin client certificate, which would hide
an operator that only ever authenticates by certificate. Cluster-admin is bound to the ServiceAccount here, so
only the way of authenticating differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess
from airollout_testbed.waiting import wait_for
from tests.reliability.rollouts import Kube, create_flag, manifest
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration


def token_kubeconfig(testbed: Testbed, namespace: str, directory: Path) -> Path:
    """A kubeconfig holding a token of ServiceAccount `airollout` in ``namespace``, bound to cluster-admin."""
    testbed.kubectl("-n", namespace, "create", "serviceaccount", "airollout")
    testbed.kubectl(
        "create", "clusterrolebinding", f"airollout-{namespace}", "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:airollout",
    )  # fmt: skip
    token = testbed.kubectl("-n", namespace, "create", "token", "airollout", "--duration=1h").stdout.strip()
    cluster = yaml.safe_load(testbed.kubeconfig.read_text())["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "airollout", "user": {"token": token}}],
        "contexts": [{"name": "airollout", "context": {"cluster": cluster["name"], "user": "airollout"}}],
        "current-context": "airollout",
    }
    path = directory / "token-kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_an_operator_holding_a_service_account_token_writes_status_and_events(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, kube: Kube, airollout_crd: Path, tmp_path: Path
) -> None:
    kubeconfig = token_kubeconfig(testbed, namespace, tmp_path)
    testbed.kubectl(
        "-n", namespace, "create", "secret", "generic", "featbit", f"--from-literal=token={featbit_double.token}"
    )
    create_flag(featbit_double, "identity")
    stages = [{"name": "canary", "percentage": 5, "duration": "1h"}]
    testbed.kubectl(
        "apply", "-f", "-", input=json.dumps(manifest(featbit_double, namespace, "identity", "identity", stages=stages))
    )
    with OperatorProcess(tmp_path, kubeconfig, f"--namespace={namespace}") as operator:
        status = wait_for(
            "the first stage in status",
            lambda: (s := kube.status(namespace, "identity")).get("stageName") == "canary" and s,
            timeout=15,
            log=operator.log,
        )
    assert status["phase"] == "Progressing"
    assert "Started" in {event["reason"] for event in kube.events(namespace)}
    assert "system:anonymous" not in operator.log.read_text()
