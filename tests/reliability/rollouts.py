"""What the operator-level reliability tests share: rollouts on flags of their own, a quick reader of the
apiserver, and a watch that holds status to what FeatBit really serves.

Each test drives `airollout run` through its public contract only (the Kubernetes API, the CRD, FeatBit's HTTP
API and SDK), so the checks here read what a user would read. They are strict where the README promises
something (status never claims a stage FeatBit was not confirmed to serve; no stage entered twice) and name
the rollout, the stage and the numbers when a promise is broken.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from tests.support.sandbox import Testbed

__all__ = [
    "ETCD_REQUEST_LIMIT",
    "ExposureWatch",
    "Kube",
    "assert_featbit_serves_what_status_says",
    "audit_comments",
    "condition",
    "create_flag",
    "entered_stages",
    "manifest",
    "operator_in",
    "served_percentage",
    "tracebacks",
    "user_kubeconfig",
    "wait_seconds",
]

CANDIDATE, CONTROL = "canary", "stable"
ETCD_REQUEST_LIMIT = int(1.5 * 2**20)
"""Bytes: etcd's default --max-request-bytes; an object (status included) larger than this cannot be written."""
# The history reasons that enter a stage with a write FeatBit confirmed; `Recovered` enters one found already
# served (or records a rollback found already done).
_ENTERING = ("Started", "StageAdvanced")
# A history entry after which the walk through the stages starts again from the first.
_RESTARTING = ("Restarted", "FlagChanged")
_RECOVERED = re.compile(r"^FeatBit already serves stage ([a-z0-9-]+) \(")


class Kube:
    """AIRollouts, Events and Secrets over the apiserver's REST API, with the sandbox's admin kubeconfig.

    The same contract kubectl speaks, without a process per call: a watch can read status ten times a second
    on a 2-core machine without starving the operator it watches.
    """

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=cluster["server"], verify=context, timeout=30)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._lock:  # a watch thread and the test share the client: one request at a time, in order
            return self._http.request(method, path, **kwargs)

    @staticmethod
    def rollouts_path(namespace: str, name: str = "") -> str:
        path = f"/apis/airollout.dev/v1alpha1/namespaces/{namespace}/airollouts"
        return f"{path}/{name}" if name else path

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = self.request("GET", self.rollouts_path(namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        status: dict[str, Any] = (self.rollout(namespace, name) or {}).get("status") or {}
        return status

    def rollouts(self, namespace: str) -> list[dict[str, Any]]:
        response = self.request("GET", self.rollouts_path(namespace))
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def create(self, body: Mapping[str, Any]) -> httpx.Response:
        """POST one AIRollout as it is, unknown fields refused as `kubectl apply` refuses them; the apiserver's
        answer is returned, refusals included."""
        path = self.rollouts_path(body["metadata"]["namespace"]) + "?fieldValidation=Strict"
        return self.request("POST", path, content=json.dumps(body), headers={"Content-Type": "application/json"})

    def delete_rollouts(self, namespace: str) -> None:
        self.request("DELETE", self.rollouts_path(namespace)).raise_for_status()

    def events(self, namespace: str) -> list[dict[str, Any]]:
        response = self.request("GET", f"/api/v1/namespaces/{namespace}/events")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def create_secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", json=body).raise_for_status()


@contextmanager
def operator_in(testbed: Testbed, directory: Path, namespace: str, *args: str) -> Iterator[OperatorProcess]:
    """`airollout run` watching only ``namespace``: rollouts that earlier tests of the session left behind in
    theirs never load it."""
    with OperatorProcess(directory, testbed.kubeconfig, f"--namespace={namespace}", *args) as process:
        yield process


def user_kubeconfig(testbed: Testbed, user: str, directory: Path) -> Path:
    """A kubeconfig for ``user``, a client certificate signed by the sandbox's CA: an identity with no rights until
    a (Cluster)RoleBinding grants some, as a cluster's least-privileged users are."""
    pki = testbed.dir / "pki"
    key, csr, crt = (directory / f"{user}.{ext}" for ext in ("key", "csr", "crt"))
    for args in (
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={user}"],
        ["x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key", "-CAcreateserial",
         "-days", "1", "-out", crt, "-extfile", pki / "client.ext"],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    server = yaml.safe_load(testbed.kubeconfig.read_text())["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": user, "context": {"cluster": server["name"], "user": user}}],
        "current-context": user,
    }
    path = directory / f"{user}-kubeconfig"
    path.write_text(json.dumps(config))
    return path


def create_flag(double: FeatBitDouble, key: str) -> None:
    """A boolean flag, off, serving `canary` when on and the control `stable` when off (the kill switch's)."""
    double.create_flag(
        key=key,
        variations=[(CANDIDATE, "true"), (CONTROL, "false")],
        enabled_variation_id=CANDIDATE,
        disabled_variation_id=CONTROL,
    )


def manifest(double: FeatBitDouble, namespace: str, name: str, flag: str, **spec: Any) -> dict[str, Any]:
    return rollout_manifest(namespace, name, flag=flag, env_id=double.env_id, api_url=double.api_url, **spec)


def rollout_percentage(flag: Mapping[str, Any]) -> float:
    """The share of users the flag's default rule sends to the candidate, in percent (on or off)."""
    variations = (flag.get("fallthrough") or {}).get("variations") or []
    share = sum(v["rollout"][1] - v["rollout"][0] for v in variations if v.get("id") == CANDIDATE)
    return round(share * 100, 6)


def served_percentage(flag: Mapping[str, Any]) -> float:
    """What FeatBit serves the candidate to, in percent: nothing while the flag is off."""
    return rollout_percentage(flag) if flag.get("isEnabled") else 0.0


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((dict(c) for c in status.get("conditions") or [] if c.get("type") == kind), None)


def audit_comments(double: FeatBitDouble, flag_key: str) -> list[str]:
    """The comments of the flag's audit entries, oldest first, read through FeatBit's own API."""
    flag = double.get_flag(flag_key)
    response = httpx.get(
        f"{double.api_url}/api/v1/envs/{double.env_id}/audit-logs",
        params={"refType": "FeatureFlag", "refId": flag["id"], "pageSize": 1000},
        headers={"Authorization": double.token},
        timeout=30,
    )
    response.raise_for_status()
    return [str(item.get("comment") or "") for item in reversed(response.json()["data"]["items"])]


def entered_stages(history: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The stages a rollout entered, one list per walk (a `retry` or a new flag starts a new walk).

    A `Recovered` entry is read by the stage its message names: its `stage` field names the stage it left
    (test_operator_restarts.py holds the operator to that separately), and a walk must read true either way.
    """
    walks: list[list[str]] = [[]]
    for entry in history:
        if entry.get("reason") in _RESTARTING:
            walks.append([])
        elif entry.get("reason") in _ENTERING:
            walks[-1].append(str(entry.get("stage")))
        elif entry.get("reason") == "Recovered" and (ahead := _RECOVERED.search(str(entry.get("message") or ""))):
            walks[-1].append(ahead[1])
    return walks


def assert_featbit_serves_what_status_says(double: FeatBitDouble, status: Mapping[str, Any], flag_key: str) -> None:
    """At rest, FeatBit and status agree: the percentage served is status's, and off means rolled back."""
    flag = double.get_flag(flag_key)
    phase = status.get("phase")
    if phase == "RolledBack":
        assert flag["isEnabled"] is False, f"{flag_key}: status says RolledBack but the flag is on"
        assert status.get("percentage") == 0
    elif status.get("stageIndex") is not None:
        assert flag["isEnabled"] is True, f"{flag_key}: status is {phase} at a stage but the flag is off"
        assert served_percentage(flag) == float(status.get("percentage") or 0), (flag_key, status, flag["fallthrough"])


def tracebacks(log: Path) -> list[str]:
    """Every Python traceback in an operator's log (exception groups' too), each with the lines that follow it."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return ["\n".join(lines[i : i + 40]) for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]


@dataclass
class _Watched:
    namespace: str
    name: str
    flag: str


@dataclass
class ExposureWatch:
    """Compares, many times a second, the percentage status claims with the one FeatBit serves.

    Status is read first and FeatBit second. FeatBit is written before status (the README's order), so a
    status read before FeatBit can never be ahead of it honestly: any status percentage above the flag's
    rollout is a stage recorded without a confirmed write. While the flag is off, every user already gets
    the control (a kill switch or rollback landed and is being recorded), which is never more exposure.
    """

    kube: Kube
    double: FeatBitDouble
    interval: float = 0.1
    violations: list[str] = field(default_factory=list)
    comparisons: int = 0
    largest_object: int = 0
    """Bytes of the largest AIRollout seen, as the apiserver serves it."""
    _watched: list[_Watched] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _errors: list[BaseException] = field(default_factory=list)

    def add(self, namespace: str, name: str, flag: str) -> None:
        self._watched.append(_Watched(namespace, name, flag))

    def check_once(self) -> None:
        namespaces = sorted({w.namespace for w in self._watched})
        # One list per namespace, read before any flag: FeatBit can only be ahead of what was read.
        listed = {ns: {item["metadata"]["name"]: item for item in self._list(ns)} for ns in namespaces}
        for watched in list(self._watched):
            item = listed[watched.namespace].get(watched.name)
            if item is None:
                continue
            self.largest_object = max(self.largest_object, len(json.dumps(item)))
            status = item.get("status") or {}
            flag = self.double.get_flag(watched.flag)
            self.comparisons += 1
            claimed = float(status.get("percentage") or 0)
            if flag.get("isEnabled") and claimed > rollout_percentage(flag) + 1e-9:
                self.violations.append(
                    f"{watched.namespace}/{watched.name}: status claims {claimed:g}% at stage "
                    f"{status.get('stageName')} ({status.get('phase')}) while FeatBit serves "
                    f"{rollout_percentage(flag):g}% (revision {flag.get('revision')})"
                )

    def _list(self, namespace: str) -> list[dict[str, Any]]:
        response = self.kube.request("GET", Kube.rollouts_path(namespace))
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
            except httpx.HTTPError:
                continue  # the apiserver restarting (a test may do that on purpose): compare again next time
            except BaseException as error:  # reported by `assert_held`, never lost in the thread
                self._errors.append(error)
                return

    @contextmanager
    def running(self) -> Iterator[ExposureWatch]:
        thread = threading.Thread(target=self._run, name="exposure-watch", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=30)

    def assert_held(self) -> None:
        assert not self._errors, f"the watch itself failed: {self._errors[0]!r}"
        assert self.comparisons > 0, "the watch never compared anything"
        assert not self.violations, "status claimed exposure FeatBit did not serve:\n" + "\n".join(self.violations[:20])


def wait_seconds(seconds: float) -> None:
    """Let the operator work for a while when what is checked is that something does *not* happen."""
    time.sleep(seconds)
