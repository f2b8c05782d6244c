"""The operator on its chart's ServiceAccount: RBAC rendered by helm, a token from the TokenRequest API, and the
apiserver's audit log to tell which of its requests were refused.

The least-privilege tests and the image test both run the operator this way, so what they prove is what a pod
of the chart would meet: the rights the chart grants, and nothing of the sandbox's admin.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airollout_testbed.sandbox.control_plane import audit_log
from tests.support.sandbox import Testbed

__all__ = ["CHART", "Grant", "Rule", "denials", "grant", "rules_of", "token_kubeconfig"]

CHART = Path(__file__).resolve().parents[2] / "charts" / "airollout"


@dataclass(frozen=True, order=True)
class Rule:
    """One verb on one resource (a subresource written `airollouts/status`), as RBAC grants and audit logs it."""

    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")


@dataclass(frozen=True)
class Grant:
    """A release's ServiceAccount and its RBAC objects, as applied."""

    release: str
    namespace: str
    service_account: str
    objects: tuple[dict[str, Any], ...]

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def rules_of(objects: Iterable[dict[str, Any]]) -> list[Rule]:
    """Every verb/resource pair the Roles and ClusterRoles among ``objects`` grant, each once, sorted."""
    pairs = set()
    for role in objects:
        if role["kind"] not in {"Role", "ClusterRole"}:
            continue
        for rule in role.get("rules") or []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    pairs |= {Rule(group, resource, verb) for verb in rule["verbs"]}
    return sorted(pairs)


def _without(objects: Iterable[dict[str, Any]], removed: Rule) -> list[dict[str, Any]]:
    """``objects`` with ``removed`` taken out of every Role and ClusterRole (the rest of its rule kept)."""
    kept = []
    for original in objects:
        role = json.loads(json.dumps(original))
        if role["kind"] in {"Role", "ClusterRole"}:
            rules = []
            for rule in role.get("rules") or []:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        verbs = [verb for verb in rule["verbs"] if Rule(group, resource, verb) != removed]
                        if verbs:
                            rules.append({"apiGroups": [group], "resources": [resource], "verbs": verbs})
            role["rules"] = rules
        kept.append(role)
    return kept


def grant(
    testbed: Testbed, namespace: str, *values: str, removed: Rule | None = None, release: str | None = None
) -> Grant:
    """Render the chart's ServiceAccount and RBAC into ``namespace`` (``values``: helm `--set` pairs), take out
    ``removed`` if given, and apply them to the apiserver."""
    release = release or f"lp-{uuid.uuid4().hex[:8]}"
    rendered = testbed.helm(
        "template", release, str(CHART), "--namespace", namespace,
        "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml",
        *(arg for value in values for arg in ("--set", value)),
    ).stdout  # fmt: skip
    objects = [document for document in yaml.safe_load_all(rendered) if document]
    if removed is not None:
        objects = _without(objects, removed)
    testbed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    account = next(o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount")
    return Grant(release, namespace, account, tuple(objects))


def token_kubeconfig(testbed: Testbed, grant: Grant, path: Path) -> Path:
    """A kubeconfig at ``path`` holding only a TokenRequest token of ``grant``'s ServiceAccount (CA inline, so
    it can be mounted alone, readable by any user)."""
    token = testbed.kubectl(
        "-n", grant.namespace, "create", "token", grant.service_account, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(testbed.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": cluster["server"], "certificate-authority-data": ca}}],
        "users": [{"name": grant.service_account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "sandbox", "user": grant.service_account}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


def _audit_events(testbed: Testbed, username: str) -> Iterator[dict[str, Any]]:
    try:
        lines = audit_log(testbed.dir).read_text().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        event = json.loads(line)
        if event.get("user", {}).get("username") == username:
            yield event


def denials(testbed: Testbed, grant: Grant) -> list[Rule]:
    """The requests of ``grant``'s ServiceAccount the apiserver refused (403), as the rule each one lacked."""
    events = list(_audit_events(testbed, grant.username))
    assert events, f"the audit log holds no request of {grant.username}: it proves nothing"
    refused = set()
    for event in events:
        if event.get("responseStatus", {}).get("code") != 403:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        refused.add(Rule(ref.get("apiGroup", ""), resource, event["verb"]))
    return sorted(refused)
