"""What the image and the chart promise an operator of the cluster, checked without a cluster or Docker.

No Docker engine runs where these tests run, so the Dockerfile is read as text: stages, base pins, user and
entrypoint, and the wheel its builder installs is built here from the same files. The chart is rendered with
helm (offline) and its RBAC compared with what the operator calls.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoints, entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

import airollout.cli
from airollout_testbed.sandbox.tools import INSTALL_HINT, ToolMissing, tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "airollout"
RELEASE_NAMESPACE = "airollout-system"

# What the operator calls in a namespace it watches (Kopf's watch and patches, events, the Secrets each
# AIRollout names), and, cluster-wide, Kopf's CRD discovery. Anything more is a privilege nobody uses.
NAMESPACED_RULES = {
    ("airollout.dev", "airollouts"): {"list", "watch", "patch"},
    ("airollout.dev", "airollouts/status"): {"patch"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
    ("airollout.dev", "guardrailtemplates"): {"get"},
}
CLUSTER_TEMPLATE_RULES = {("airollout.dev", "clusterguardrailtemplates"): {"get"}}
"""Cluster-scoped, so a ClusterRole of its own even in a namespaced install."""
CLUSTER_RULES = {
    **NAMESPACED_RULES,
    **CLUSTER_TEMPLATE_RULES,
}
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|apt-get|apk)\b")


# -- the Dockerfile ----------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            stages.append(Stage(base=base, name=words[2] if len(words) == 3 else None))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return global_args, stages


def test_the_image_is_built_in_one_stage_and_shipped_from_another() -> None:
    _, stages = _dockerfile()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert any("--from=builder" in copy for copy in final.args_of("COPY"))


def test_every_base_image_is_a_slim_python_pinned_by_digest() -> None:
    _, stages = _dockerfile()
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", stage.base), stage.base


def test_the_builder_installs_the_package_from_the_operator_source_root() -> None:
    builder = _dockerfile()[1][0]
    copied = " ".join(builder.args_of("COPY"))
    assert "pyproject.toml" in copied
    assert "operator/" in copied
    assert any("install --no-cache-dir --no-deps ." in run for run in builder.args_of("RUN"))


def test_the_final_image_runs_as_a_numeric_non_root_user() -> None:
    final = _dockerfile()[1][-1]
    (user,) = final.args_of("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    assert user == "65532:65532"


def test_the_final_image_installs_nothing_and_so_no_compiler() -> None:
    final = _dockerfile()[1][-1]
    assert final.args_of("RUN") == [], "the final stage only copies the built virtualenv"
    assert not any(COMPILERS.search(args) for _, args in final.instructions)


def test_the_entrypoint_is_the_operator_command_that_pyproject_installs() -> None:
    final = _dockerfile()[1][-1]
    (entrypoint,) = final.args_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["airollout", "run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "airollout" in scripts
    assert any(kw == "ENV" and "/bin:$PATH" in args for kw, args in final.instructions)


def test_the_build_context_holds_only_what_the_builder_copies() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "start from nothing and re-include what the image needs"
    included = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "operator"}


# -- what ships: the operator distribution, never the test bed ---------------------------------------------


def test_the_builder_copies_nothing_of_the_test_bed() -> None:
    builder = _dockerfile()[1][0]
    assert not [copy for copy in builder.args_of("COPY") if "testbed" in copy]


def test_the_wheel_the_image_installs_holds_the_operator_and_nothing_of_the_test_bed(tmp_path: Path) -> None:
    source = tmp_path / "context"
    source.mkdir()
    # What the builder copies, less what .dockerignore keeps out of the context.
    for copy in _dockerfile()[1][0].args_of("COPY"):
        *sources, _ = copy.split()
        for name in sources:
            origin = ROOT / name
            if origin.is_dir():
                shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy(origin, source / name)
    # Offline, with the build system's setuptools from the test environment.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    built = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("airollout-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"airollout"}
    assert "airollout/cli.py" in names
    assert "airollout/py.typed" in names
    assert not [name for name in names if re.search(r"testbed|sandbox|demo|featbit_double", name)]


def test_no_operator_module_imports_the_test_bed() -> None:
    importers = []
    for module in (ROOT / "operator" / "airollout").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "airollout_testbed" for name in names):
                importers.append(str(module.relative_to(ROOT)))
    assert importers == []


def test_sandbox_and_demo_come_from_the_test_beds_entry_points() -> None:
    commands = entry_points(group=airollout.cli.COMMANDS_GROUP)
    assert {"sandbox", "demo"} <= set(commands.names)
    assert {command.dist.name for command in commands if command.dist} == {"airollout-testbed"}


@pytest.mark.parametrize(
    "argv", [["sandbox", "up", "--dir", "x"], ["sandbox", "down"], ["demo", "--keep"]], ids=" ".join
)
def test_without_the_test_bed_its_commands_say_how_to_install_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(airollout.cli, "entry_points", lambda group: EntryPoints(()))
    assert airollout.cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"airollout {argv[0]}: the test bed is not installed" in error
    assert "pip install ./testbed" in error


# -- the chart ---------------------------------------------------------------------------------------------


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        helm = tool("helm")
    except ToolMissing:
        message = f"helm is not installed: {INSTALL_HINT}"
        if os.environ.get("AIROLLOUT_REQUIRE_TESTBED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=60)


def _render(*sets: str) -> list[dict[str, Any]]:
    flags = [arg for s in sets for arg in ("--set", s)]
    result = _helm("template", "airollout", str(CHART), "--namespace", RELEASE_NAMESPACE, *flags)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in kinds]


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "namespaced"])
def test_rbac_has_no_wildcards(cluster_wide: bool) -> None:
    roles = _of_kind(_render(f"rbac.clusterWide={cluster_wide}"), "ClusterRole", "Role")
    assert roles
    for role in roles:
        assert not [s for s in _strings(role["rules"]) if "*" in s], role["rules"]


def test_cluster_wide_rbac_grants_exactly_what_the_operator_calls() -> None:
    docs = _render("rbac.clusterWide=true")
    assert _of_kind(docs, "Role", "RoleBinding") == []
    (role,) = _of_kind(docs, "ClusterRole")
    assert _granted(role) == CLUSTER_RULES
    (binding,) = _of_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "airollout"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "airollout", "namespace": RELEASE_NAMESPACE}]


def test_namespaced_rbac_is_a_role_in_each_watched_namespace_and_cluster_wide_only_cluster_templates() -> None:
    docs = _render("rbac.clusterWide=false", "watchNamespaces={search,ranking}")
    (cluster_role,) = _of_kind(docs, "ClusterRole")
    assert _granted(cluster_role) == CLUSTER_TEMPLATE_RULES
    (cluster_binding,) = _of_kind(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    roles = _of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ranking", "search"]
    assert all(_granted(role) == NAMESPACED_RULES for role in roles)
    bindings = _of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ranking", "search"]
    (deployment,) = _of_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=search", "--namespace=ranking"]


def test_namespaced_rbac_defaults_to_the_release_namespace() -> None:
    roles = _of_kind(_render("rbac.clusterWide=false"), "Role")
    assert [r["metadata"]["namespace"] for r in roles] == [RELEASE_NAMESPACE]


def test_the_deployment_is_one_hardened_replica_with_a_liveness_probe() -> None:
    (deployment,) = _of_kind(_render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "airollout"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"].keys() == {"requests", "limits"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert not [a for a in container["args"] if a.startswith(("--namespace", "--metrics-port"))]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_every_resource_carries_the_standard_labels() -> None:
    for doc in _render("metrics.enabled=true", "metrics.serviceMonitor.enabled=true"):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "airollout", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == "airollout"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_metrics_service_and_service_monitor_are_off_by_default() -> None:
    assert _of_kind(_render(), "Service", "ServiceMonitor") == []
    docs = _render("metrics.enabled=true", "metrics.serviceMonitor.enabled=true")
    (service,) = _of_kind(docs, "Service")
    (monitor,) = _of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (deployment,) = _of_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9102" in container["args"]
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in container["ports"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}]


def test_the_image_defaults_to_the_charts_app_version_and_can_be_pinned_by_digest() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    def image(*sets: str) -> str:
        (deployment,) = _of_kind(_render(*sets), "Deployment")
        return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])

    assert image().endswith(f":{chart['appVersion']}")
    digest = "sha256:" + "ab" * 32
    assert image(f"image.digest={digest}").endswith(f"@{digest}")


def test_the_chart_ships_the_same_crd_as_the_repository() -> None:
    assert (CHART / "crds" / "airollout.dev_airollouts.yaml").read_bytes() == (
        ROOT / "crds" / "airollout.dev_airollouts.yaml"
    ).read_bytes()


def test_the_values_schema_rejects_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def open_objects(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                yield path
            for key, value in node.items():
                yield from open_objects(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from open_objects(value, f"{path}/{i}")

    assert list(open_objects(schema, "#")) == []


def test_the_values_file_and_its_schema_agree() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert values.keys() == schema["properties"].keys()


def test_notes_show_the_first_apply_of_an_airollout() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl apply -f -" in notes
    assert "kind: AIRollout" in notes
    assert "get airollouts" in notes
