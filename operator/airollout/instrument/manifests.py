"""The AIRollout a newly gated call starts with: four stages and default guardrails on the call's own metrics.

The guardrails read OpenTelemetry's GenAI client metrics (``gen_ai.client.operation.duration``, exported to
Prometheus as ``gen_ai_client_operation_duration_seconds``) labelled with the flag and the variant served
(``feature_flag.key``, ``feature_flag.result.variant``), which is what the code `gate` writes records. The
spec is checked with the operator's own model before it is returned, so a bad value is named here.
"""

from __future__ import annotations

from typing import Any

from airollout.guardrails.templating import validate_query
from airollout.instrument.providers import Provider
from airollout.model.spec import AIRolloutSpec

__all__ = ["CANDIDATE", "CONTROL", "STAGES", "rollout_manifest"]

CANDIDATE = "candidate"
CONTROL = "control"
STAGES = ("internal", "canary", "progressive", "full")
_METRIC = "gen_ai_client_operation_duration_seconds"
# Latency above which a call is too slow whatever the control does: embeddings answer far sooner than generation.
_LATENCY_LIMIT = {"generation": 20.0, "embedding": 2.0}


def rollout_manifest(
    *,
    name: str,
    namespace: str,
    flag: str,
    env_id: str,
    featbit_url: str,
    provider: Provider,
    kind: str = "generation",
    token_secret: str = "featbit",
    internal_segment: str = "internal-users",
    prometheus_url: str | None = None,
) -> dict[str, Any]:
    """An AIRollout of ``flag`` (variations ``candidate`` and ``control``); guardrails when Prometheus is given."""
    selector = (
        f'gen_ai_system="{provider.system}",'
        'feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'
    )
    spec: dict[str, Any] = {
        "flag": {"key": flag, "envId": env_id, "candidate": CANDIDATE, "control": CONTROL},
        "featbit": {"url": featbit_url, "tokenSecretRef": {"name": token_secret, "key": "token"}},
        "stages": [
            {"name": "internal", "segments": [internal_segment], "duration": "1h"},
            {"name": "canary", "percentage": 5, "duration": "1h"},
            {"name": "progressive", "percentage": 50, "duration": "2h"},
            {"name": "full", "percentage": 100},
        ],
        "onBreach": "rollback",
    }
    if prometheus_url:
        spec["prometheus"] = {"url": prometheus_url}
        spec["guardrails"] = [
            {
                "name": f"{provider.slug}-error-rate",
                "query": (
                    f'sum(rate({_METRIC}_count{{{selector},error_type!=""}}[5m]))'
                    f" / sum(rate({_METRIC}_count{{{selector}}}[5m]))"
                ),
                "max": 0.02,
                "maxIncreaseOverControl": 0.25,
                "noData": "hold",
            },
            {
                "name": f"{provider.slug}-latency-p95",
                "query": f"histogram_quantile(0.95, sum by (le) (rate({_METRIC}_bucket{{{selector}}}[5m])))",
                "max": _LATENCY_LIMIT.get(kind, _LATENCY_LIMIT["generation"]),
                "maxIncreaseOverControl": 0.2,
                "noData": "hold",
            },
        ]
    AIRolloutSpec.model_validate(spec)
    for guardrail in spec.get("guardrails", ()):
        validate_query(guardrail["query"])
    return {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "AIRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
