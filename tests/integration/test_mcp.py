"""`airollout mcp` driven by the MCP SDK's own client over stdio, against the sandbox and a running operator.

An agent creates a rollout and promotes it stage by stage to Promoted, and creates another from a scan result
and aborts it; the history names the agent (the MCP client) as the actor, and the tools that change what users
are served say so in their annotations.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fbclient.client import FBClient
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from airollout.cli import main as airollout
from airollout_testbed.ai_corpus import EXAMPLES, write_corpus
from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.harness import OperatorProcess, rollout_manifest
from airollout_testbed.waiting import wait_for
from tests.support.featbit import count_variations, synthetic_users
from tests.support.operator import create_token_secret, get_rollout, status_of
from tests.support.sandbox import Testbed

pytestmark = pytest.mark.integration

AGENT = "rollout-agent"
USERS = synthetic_users(400)


async def _call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert not result.is_error, text
    structured: dict[str, Any] = result.structured_content
    return structured


def _pending_verb(testbed: Testbed, namespace: str, name: str) -> bool:
    annotations = get_rollout(testbed, namespace, name)["metadata"].get("annotations") or {}
    return "airollout.dev/action" in annotations


def _server(testbed: Testbed, namespace: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "airollout", "mcp", "--namespace", namespace],
        # The server imports the same AIRollout as the test (PYTHONPATH, where a run sets one).
        env={"KUBECONFIG": str(testbed.kubeconfig), **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
    )


async def test_an_agent_walks_a_rollout_to_promoted_and_aborts_another(
    testbed: Testbed, namespace: str, featbit_double: FeatBitDouble, operator: OperatorProcess,
    featbit_client: Callable[..., FBClient], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for flag in ("summary-model", "search-embeddings"):
        featbit_double.create_flag(
            key=flag, variations=[("canary", "true"), ("stable", "false")],
            enabled_variation_id="canary", disabled_variation_id="stable",
        )  # fmt: skip
    featbit_double.create_flag(
        key="answer-model", variations=[("candidate", "candidate"), ("control", "control")],
        enabled_variation_id="candidate", disabled_variation_id="control",
    )  # fmt: skip
    featbit_double.create_segment(key="internal-users", included=["qa-1"])
    create_token_secret(testbed, namespace, featbit_double.token)
    sdk = featbit_client()
    stages = [
        {"name": "canary", "percentage": 10, "duration": "1h"},
        {"name": "half", "percentage": 50, "duration": "1h"},
        {"name": "full", "percentage": 100},
    ]
    manifest = rollout_manifest(
        namespace, "summary-v2", api_url=featbit_double.api_url, env_id=featbit_double.env_id, flag="summary-model",
        stages=stages,
    )  # fmt: skip
    corpus = write_corpus(tmp_path, tuple(e for e in EXAMPLES if e.name == "openai-py"))
    assert airollout(["scan", str(corpus["openai-py"]), "--format", "json"]) == 0
    site = json.loads(capsys.readouterr().out)["sites"][0]

    async with (
        stdio_client(_server(testbed, namespace)) as (read, write),
        ClientSession(read, write, client_info=types.Implementation(name=AGENT, version="1.0")) as session,
    ):
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) >= {"list_rollouts", "show_rollout", "create_rollout", "create_rollout_from_scan",
                              "promote", "pause", "resume", "abort", "retry"}  # fmt: skip
        for name in ("abort", "promote", "resume", "retry"):
            hints = tools[name].annotations
            assert hints is not None, name
            assert hints.destructive_hint, name
        hints = tools["show_rollout"].annotations
        assert hints is not None
        assert hints.read_only_hint

        created = await _call(session, "create_rollout", manifest=json.dumps(manifest))
        assert created["name"] == "summary-v2"
        wait_for("the first stage", lambda: status_of(testbed, namespace, "summary-v2").get("stageName") == "canary",
                 timeout=30, log=operator.log)  # fmt: skip
        await _call(session, "pause", name="summary-v2", reason="looking at the dashboards")
        wait_for("Paused", lambda: status_of(testbed, namespace, "summary-v2").get("phase") == "Paused",
                 timeout=30, log=operator.log)  # fmt: skip
        await _call(session, "resume", name="summary-v2")
        for stage in ("half", "full"):
            wait_for("Progressing", lambda: status_of(testbed, namespace, "summary-v2").get("phase") == "Progressing",
                     timeout=30, log=operator.log)  # fmt: skip
            wait_for("the last verb handled", lambda: not _pending_verb(testbed, namespace, "summary-v2"), timeout=30)
            # The operator tells one verb from the next by who set it and the second it was set (managedFields).
            await asyncio.sleep(1.1)
            await _call(session, "promote", name="summary-v2", reason="the canary looks healthy")
            wait_for(
                f"stage {stage}", lambda s=stage: status_of(testbed, namespace, "summary-v2").get("stageName") == s,
                timeout=30, log=operator.log,
            )  # fmt: skip
        wait_for("Promoted", lambda: status_of(testbed, namespace, "summary-v2").get("phase") == "Promoted",
                 timeout=30, log=operator.log)  # fmt: skip
        wait_for(
            "everyone on the candidate",
            lambda: count_variations(sdk, "summary-model", USERS)["canary"] == len(USERS), timeout=30,
        )  # fmt: skip

        shown = await _call(session, "show_rollout", name="summary-v2")
        assert shown["phase"] == "Promoted"
        actors = {entry.get("actor") for entry in shown["history"]}
        assert f"mcp:{AGENT}" in actors, shown["history"]
        listed = await _call(session, "list_rollouts")
        assert [(r["name"], r["phase"]) for r in listed["rollouts"]] == [("summary-v2", "Promoted")]

        from_scan = await _call(
            session, "create_rollout_from_scan", site=site, flag="answer-model", env_id=featbit_double.env_id,
            featbit_url=featbit_double.api_url, name="answer-v2",
        )  # fmt: skip
        assert from_scan["name"] == "answer-v2"
        wait_for(
            "the internal stage",
            lambda: status_of(testbed, namespace, "answer-v2").get("stageName") == "internal",
            timeout=30, log=operator.log,
        )  # fmt: skip
        await _call(session, "abort", name="answer-v2", reason="the candidate answers in the wrong language")
        wait_for("RolledBack", lambda: status_of(testbed, namespace, "answer-v2").get("phase") == "RolledBack",
                 timeout=30, log=operator.log)  # fmt: skip
        aborted = await _call(session, "show_rollout", name="answer-v2")
        last = aborted["history"][-1]
        assert last["actor"] == f"mcp:{AGENT}", last
        assert "abort" in last["message"], last
        assert [s["name"] for s in aborted["stages"]] == ["internal", "canary", "progressive", "full"]
        assert count_variations(sdk, "answer-model", [{"key": "qa-1", "name": "qa-1"}])["control"] == 1

        broken = {"kind": "AIRollout", "apiVersion": "airollout.dev/v1alpha1", "metadata": {"name": "broken"}}
        refused = await session.call_tool("create_rollout", {"manifest": json.dumps({**broken, "spec": {}})})
        assert refused.is_error
        assert "spec.flag" in " ".join(getattr(block, "text", "") for block in refused.content)
