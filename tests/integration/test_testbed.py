"""The test bed itself: every later test trusts that these real components behave as a cluster does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.environment import read_env
from airollout_testbed.sandbox.tools import tool
from airollout_testbed.waiting import wait_for
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.testbed.airollout.dev}
spec:
  group: testbed.airollout.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Size, type: integer, jsonPath: .spec.size}
        - {name: Phase, type: string, jsonPath: .status.phase}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
              x-kubernetes-validations:
                - rule: "self.size <= 10"
                  message: "spec.size must be at most 10"
            status:
              type: object
              properties:
                phase: {type: string}
"""


def _widget(namespace: str, name: str, size: int) -> str:
    return json.dumps(
        {
            "apiVersion": "testbed.airollout.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"size": size},
        }
    )


def test_crd_validates_prints_columns_patches_status_and_shows_events(testbed: Testbed, namespace: str) -> None:
    testbed.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    testbed.kubectl("wait", "--for=condition=Established", "crd/widgets.testbed.airollout.dev", "--timeout=30s")

    refused = testbed.kubectl("apply", "-f", "-", input=_widget(namespace, "too-big", 11), check=False)
    assert refused.returncode != 0
    assert "spec.size must be at most 10" in refused.stderr

    testbed.kubectl("apply", "-f", "-", input=_widget(namespace, "w1", 3))
    testbed.kubectl(
        "patch", "widget", "w1", "-n", namespace, "--subresource=status", "--type=merge", "-p",
        '{"status": {"phase": "Ready"}}',
    )  # fmt: skip
    table = testbed.kubectl("get", "widgets", "-n", namespace).stdout
    assert table.split()[:3] == ["NAME", "SIZE", "PHASE"]
    assert "w1" in table
    assert "Ready" in table

    uid = testbed.kubectl("get", "widget", "w1", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "w1.checked", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "testbed.airollout.dev/v1", "kind": "Widget", "name": "w1",
            "namespace": namespace, "uid": uid,
        },
        "reason": "Checked",
        "message": "the widget was checked",
        "type": "Normal",
        "source": {"component": "testbed"},
    }  # fmt: skip
    testbed.kubectl("create", "-f", "-", input=json.dumps(event))
    described = testbed.kubectl("describe", "widget", "w1", "-n", namespace).stdout
    assert "Checked" in described
    assert "the widget was checked" in described


def test_service_account_token_authenticates_and_rbac_denies_the_rest(testbed: Testbed, namespace: str) -> None:
    testbed.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    testbed.kubectl("create", "role", "read-configmaps", "--verb=get,list", "--resource=configmaps", "-n", namespace)
    testbed.kubectl(
        "create", "rolebinding", "reader", "--role=read-configmaps", f"--serviceaccount={namespace}:reader",
        "-n", namespace,
    )  # fmt: skip
    token = testbed.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    server = testbed.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    as_reader = [
        str(tool("kubectl")), "--kubeconfig=/dev/null", f"--server={server}", f"--token={token}",
        f"--certificate-authority={testbed.dir / 'pki' / 'ca.crt'}", "-n", namespace,
    ]  # fmt: skip

    allowed = subprocess.run([*as_reader, "get", "configmaps"], capture_output=True, text=True, check=False)
    assert allowed.returncode == 0, allowed.stderr
    denied = subprocess.run([*as_reader, "get", "secrets"], capture_output=True, text=True, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr


def test_prometheus_scrapes_an_exporter_and_answers_promql(testbed: Testbed) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("testbed_answer", "A value the test sets", ["variant"], registry=registry)
    gauge.labels(variant="canary").set(42)
    port = processes.free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        testbed.add_scrape_target("testbed-exporter", f"127.0.0.1:{port}")
        prometheus = PrometheusConnect(url=testbed.prometheus_url, disable_ssl=True)
        found = wait_for(
            "Prometheus to scrape the exporter",
            lambda: prometheus.custom_query('testbed_answer{variant="canary"}'),
            timeout=30,
        )
        assert float(found[0]["value"][1]) == 42.0  # type: ignore[index]
    finally:
        server.shutdown()
        thread.join(5)


def test_helm_lints_and_renders_a_chart(testbed: Testbed, tmp_path: Path) -> None:
    testbed.helm("create", str(tmp_path / "trivial"))
    assert "0 chart(s) failed" in testbed.helm("lint", str(tmp_path / "trivial")).stdout
    rendered = testbed.helm("template", "demo", str(tmp_path / "trivial")).stdout
    assert "kind: Deployment" in rendered


@pytest.mark.slow
def test_two_sandboxes_run_side_by_side_and_down_leaves_no_process(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "airollout", "sandbox"]
    dirs = [tmp_path / "a", tmp_path / "b"]
    try:
        for directory in dirs:
            subprocess.run([*cli, "up", "--dir", str(directory)], check=True, capture_output=True, timeout=180)
        envs = [read_env(d) for d in dirs]
        assert envs[0]["KUBECONFIG"] != envs[1]["KUBECONFIG"]
        assert envs[0]["PROMETHEUS_URL"] != envs[1]["PROMETHEUS_URL"]
        assert envs[0]["FEATBIT_API_URL"] != envs[1]["FEATBIT_API_URL"]
        for env in envs:
            assert {"FEATBIT_EVAL_URL", "FEATBIT_TOKEN", "FEATBIT_ENV_ID", "FEATBIT_ENV_SECRET"} <= env.keys()
            kubectl = subprocess.run(
                [str(tool("kubectl")), "get", "namespace", "default"],
                env={**os.environ, "KUBECONFIG": env["KUBECONFIG"]},
                capture_output=True,
                text=True,
                check=False,
            )
            assert kubectl.returncode == 0, kubectl.stderr
        pids = [r["pid"] for d in dirs for r in json.loads((d / "processes.json").read_text())]
        assert len(pids) == 8  # etcd, kube-apiserver, Prometheus, FeatBit double, twice
    finally:
        for directory in dirs:
            subprocess.run([*cli, "down", "--dir", str(directory)], check=True, capture_output=True, timeout=120)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
