"""`airollout mcp`: AIRollout's tools for agents, over the Model Context Protocol on stdio (the official SDK).

Each tool call acts as the connected client: the Kubernetes field manager is ``mcp:<client name>`` (from the
client's ``initialize``), so `kubectl get airollout -o yaml` and the rollout's history name the agent that
asked. Tools that change what users are served carry MCP's ``destructiveHint``; reading tools are read-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from airollout.agent.rollouts import RolloutRequestFailed, Rollouts
from airollout.planner import Verb

__all__ = ["build_server", "serve"]

T = TypeVar("T")

_INSTRUCTIONS = (
    "Drive AIRollouts (staged, guardrail-gated rollouts of AI model changes through FeatBit flags) on the "
    "Kubernetes cluster of the user's kubeconfig. Read with list_rollouts and show_rollout; every change is "
    "recorded in the rollout's history under this client's name."
)
_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
_CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
# Everything that moves users between the control and the candidate changes what they are served.
_EXPOSURE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
_HOLD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

_VERBS: dict[Verb, tuple[str, ToolAnnotations]] = {
    Verb.PROMOTE: ("Move the rollout to its next stage now, skipping the rest of the current stage's bake.", _EXPOSURE),
    Verb.PAUSE: ("Hold the rollout at its current stage; users keep what they are served.", _HOLD),
    Verb.RESUME: ("Continue a paused rollout; re-applies the current stage.", _EXPOSURE),
    Verb.ABORT: ("Roll back: serve the control to everyone at once (the kill switch).", _EXPOSURE),
    Verb.RETRY: ("Restart a RolledBack or Failed rollout from its first stage.", _EXPOSURE),
}


def build_server(default_namespace: str = "default") -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(name="airollout", instructions=_INSTRUCTIONS)

    @server.tool(annotations=_READ)
    async def list_rollouts(ctx: Context, namespace: str | None = None, all_namespaces: bool = False) -> dict[str, Any]:
        """List AIRollouts with their phase, stage, percentage and guardrail summary."""
        rollouts = _rollouts(ctx)
        items = await _act(rollouts.list, None if all_namespaces else namespace or default_namespace)
        return {"rollouts": [_summary(item) for item in items]}

    @server.tool(annotations=_READ)
    async def show_rollout(ctx: Context, name: str, namespace: str | None = None) -> dict[str, Any]:
        """One AIRollout: its status, stages, guardrails (latest judgement) and history (who did what, and why)."""
        rollout = await _act(_rollouts(ctx).get, namespace or default_namespace, name)
        status = rollout.get("status") or {}
        spec = rollout.get("spec") or {}
        return {
            **_summary(rollout),
            "message": status.get("message", ""),
            "flag": spec.get("flag"),
            "stages": spec.get("stages", []),
            "guardrails": status.get("guardrails", []),
            "guardrailSpecs": spec.get("guardrails", []),
            "history": status.get("history", []),
            "conditions": status.get("conditions", []),
        }

    @server.tool(annotations=_CREATE)
    async def create_rollout(ctx: Context, manifest: str, namespace: str | None = None) -> dict[str, Any]:
        """Create an AIRollout from a manifest (YAML or JSON text); it starts at its first stage."""
        try:
            parsed = yaml.safe_load(manifest)
        except yaml.YAMLError as error:
            raise ToolError(f"manifest: not YAML or JSON ({error})") from None
        if not isinstance(parsed, dict):
            raise ToolError("manifest: expected one AIRollout object")
        created = await _act(_rollouts(ctx).create, parsed, namespace or default_namespace)
        return _summary(created)

    @server.tool(annotations=_CREATE)
    async def create_rollout_from_scan(
        ctx: Context,
        site: dict[str, Any],
        flag: str,
        env_id: str,
        featbit_url: str,
        name: str | None = None,
        namespace: str | None = None,
        token_secret: str = "featbit",
        internal_segment: str = "internal-users",
        prometheus_url: str | None = None,
    ) -> dict[str, Any]:
        """Create the AIRollout for a call site that `airollout scan --format json` reported (one of its `sites`).

        Four stages (internal, canary, progressive, full); with prometheus_url, default error-rate and latency
        guardrails on the provider's GenAI metrics labelled by the flag's variant.
        """
        from airollout.instrument.manifests import rollout_manifest
        from airollout.instrument.providers import PROVIDERS

        provider = next((p for p in PROVIDERS if p.name == site.get("provider")), None)
        if provider is None:
            known = ", ".join(p.name for p in PROVIDERS)
            raise ToolError(f"site.provider: {site.get('provider')!r} is not one scan reports; one of {known}")
        manifest = rollout_manifest(
            name=name or flag,
            namespace=namespace or default_namespace,
            flag=flag,
            env_id=env_id,
            featbit_url=featbit_url,
            provider=provider,
            kind=str(site.get("kind") or "generation"),
            token_secret=token_secret,
            internal_segment=internal_segment,
            prometheus_url=prometheus_url,
        )
        created = await _act(_rollouts(ctx).create, manifest, namespace or default_namespace)
        return _summary(created)

    for verb, (description, hints) in _VERBS.items():
        server.add_tool(
            _verb_tool(verb, default_namespace), name=verb.value, description=description, annotations=hints
        )
    return server


def _verb_tool(verb: Verb, default_namespace: str) -> Any:
    async def ask(ctx: Context, name: str, namespace: str | None = None, reason: str | None = None) -> dict[str, Any]:
        rollout = await _act(_rollouts(ctx).request, namespace or default_namespace, name, verb, reason)
        return {**_summary(rollout), "requested": verb.value}

    return ask


async def _act(call: Callable[..., T], *args: Any) -> T:
    """``call`` off the event loop (the Kubernetes client blocks); its refusal becomes the tool's error text."""
    try:
        return await asyncio.to_thread(call, *args)
    except RolloutRequestFailed as error:
        raise ToolError(str(error)) from None


def _rollouts(ctx: Context) -> Rollouts:
    params = ctx.session.client_params
    client = params.client_info.name if params is not None else "unknown"
    return Rollouts(actor=f"mcp:{client}")


def _summary(rollout: dict[str, Any]) -> dict[str, Any]:
    metadata = rollout.get("metadata") or {}
    status = rollout.get("status") or {}
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "phase": status.get("phase", "Pending"),
        "stage": status.get("stageName"),
        "percentage": status.get("percentage"),
        "guardrailSummary": status.get("guardrailSummary"),
    }


def serve(default_namespace: str = "default") -> None:
    asyncio.run(build_server(default_namespace).run_stdio_async())
