"""The Helm chart and the container image on a kind cluster: the operator starts, serves and stays least-privileged."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_chart_installs_and_the_operator_becomes_ready(kind_cluster: Any) -> None:
    kind_cluster.kubectl("create", "namespace", "airollout-system")
    kind_cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds" / "airollout.dev_airollouts.yaml"),
    )  # fmt: skip
    subprocess.run(
        [
            "helm", "install", "airollout", str(ROOT / "charts" / "airollout"), "-n", "airollout-system",
            "--set", "image.repository=airollout", "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
            "--kubeconfig", str(kind_cluster.kubeconfig_path), "--wait", "--timeout", "180s",
        ],
        check=True,
    )  # fmt: skip
    ready = kind_cluster.kubectl(
        "-n", "airollout-system", "get", "deploy", "-o", "jsonpath={.items[0].status.readyReplicas}"
    )  # fmt: skip
    assert ready.strip() == "1"
    can_i = kind_cluster.kubectl(
        "auth", "can-i", "delete", "secrets", "--as=system:serviceaccount:airollout-system:airollout", "-A"
    )  # fmt: skip
    assert can_i.strip() == "no"
