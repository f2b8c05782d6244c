"""`airollout gate --write` on each Python example service, run: the gated code evaluates the flag with
FeatBit's own SDK against the FeatBit double, and calls a stub model with the control's model or the candidate's
as the flag serves each user. The flag itself is the one `gate` created through FeatBit's API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airollout.cli import main as airollout
from airollout.featbit import FeatBitClient, targeting_of
from airollout.model.spec import AIRolloutSpec
from airollout_testbed.ai_corpus import EXAMPLES, Example, write_corpus
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.stub_models import write_stub_libraries
from tests.support.gating import gated_site

pytestmark = pytest.mark.integration

PYTHON = [e for e in EXAMPLES if e.language == "python" and e.entry]
USERS = [f"user-{i}" for i in range(6)]
ON_CANDIDATE = {"user-1", "user-4"}

# Runs an example's entry function once per user in a fresh interpreter, the stub libraries and the example
# first on the path, FeatBit's SDK configured against the double as a service would configure it at start-up.
_RUN = """
import builtins, importlib, json, sys
import fbclient
from fbclient.config import Config, WebSocketConfig
stubs, root, module, function, secret, event_url, streaming_url, users = sys.argv[1:9]
sys.path[:0] = [stubs, root]
fbclient.set_config(Config(secret, event_url=event_url, streaming_url=streaming_url,
                           websocket=WebSocketConfig(timeout=1.0)))
assert fbclient.get().initialize, "the SDK did not connect"
entry = getattr(importlib.import_module(module), function)
served = {}
for user in users.split(","):
    builtins.stub_model_calls.clear()
    entry(user)
    served[user] = next((model for model in builtins.stub_model_calls if model), None)
print(json.dumps(served))
fbclient.get().stop()
"""


def _serve(double: FeatBitDouble, stubs: Path, root: Path, entry: str) -> dict[str, str]:
    file, function = entry.split(":")
    module = file.removesuffix(".py").replace("/", ".")
    arguments = [str(stubs), str(root), module, function, double.env_secret, double.eval_url, double.streaming_url]
    result = subprocess.run(
        [sys.executable, "-c", _RUN, *arguments, ",".join(USERS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    served: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return served


async def _serve_candidate_to(double: FeatBitDouble, users: set[str]) -> None:
    def targeting(flag: dict[str, Any]) -> dict[str, Any]:
        return {**targeting_of(flag), "targetUsers": [{"variationId": "candidate", "keyIds": sorted(users)}]}

    async with FeatBitClient(double.api_url, double.token) as featbit:
        await featbit.write_targeting(double.env_id, "new-model", targeting, comment="a test serves the candidate")
        await featbit.toggle(double.env_id, "new-model", True, comment="a test turns the flag on")


@pytest.mark.parametrize("example", PYTHON, ids=[e.name for e in PYTHON])
def test_gated_python_serves_control_or_candidate_as_the_flag_says(
    example: Example, featbit_double: FeatBitDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_corpus(tmp_path / "corpus", (example,))[example.name]
    stubs = write_stub_libraries(tmp_path / "stubs")
    site, control = gated_site(example)
    monkeypatch.setenv("FEATBIT_TOKEN", featbit_double.token)
    manifest = tmp_path / "rollout.yaml"
    command = [
        "gate", site, "--root", str(root), "--flag", "new-model", "--candidate", "model-b", "--write",
        "--featbit-url", featbit_double.api_url, "--env-id", featbit_double.env_id,
        "--manifest", str(manifest), "--namespace", "ai", "--prometheus-url", "http://prometheus:9090",
    ]  # fmt: skip
    assert airollout(command) == 0

    flag = featbit_double.get_flag("new-model")
    assert sorted(v["id"] for v in flag["variations"]) == ["candidate", "control"]
    assert (flag["isEnabled"], flag["disabledVariationId"]) == (False, "control")
    assert set(_serve(featbit_double, stubs, root, example.entry).values()) == {control}

    asyncio.run(_serve_candidate_to(featbit_double, ON_CANDIDATE))
    served = _serve(featbit_double, stubs, root, example.entry)
    assert served == {user: "model-b" if user in ON_CANDIDATE else control for user in USERS}

    rollout = yaml.safe_load(manifest.read_text())
    spec = AIRolloutSpec.model_validate(rollout["spec"])
    assert [stage.name for stage in spec.stages] == ["internal", "canary", "progressive", "full"]
    assert (spec.flag.key, spec.flag.candidate, spec.flag.control) == ("new-model", "candidate", "control")
    assert len(spec.guardrails) == 2
    assert all('feature_flag_result_variant="{{variant}}"' in g.query for g in spec.guardrails)
