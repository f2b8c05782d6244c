"""One way to write an AIRollout, and to install the CRD it needs, wherever the rig drives the operator.

Tests, benchmarks and the demo each vary the spec; the part they share (the flag's two variations, the FeatBit
token in the Secret `featbit`) is written once, so a change to the CRD is followed in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CRD", "DEFAULT_STAGES", "install_crd", "rollout_manifest"]

CRD = Path(__file__).resolve().parents[3] / "crds" / "airollout.dev_airollouts.yaml"
DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "internal", "segments": ["internal-users"], "duration": "2s"},
    {"name": "canary", "percentage": 5, "duration": "2s"},
    {"name": "ramp-25", "percentage": 25, "duration": "2s"},
    {"name": "full", "percentage": 100},
]
"""Four short stages, the first to the segment `internal-users`: a whole rollout in seconds."""


def rollout_manifest(namespace: str, name: str, *, flag: str, env_id: str, api_url: str, **spec: Any) -> dict[str, Any]:
    """An AIRollout of ``flag`` (candidate variation `canary`, control `stable`) in FeatBit at ``api_url``, its
    token read from the Secret `featbit` (key `token`); ``spec`` adds fields or replaces the default stages."""
    body: dict[str, Any] = {
        "flag": {"key": flag, "envId": env_id, "candidate": "canary", "control": "stable"},
        "featbit": {"url": api_url, "tokenSecretRef": {"name": "featbit", "key": "token"}},
        "stages": [dict(stage) for stage in DEFAULT_STAGES],
        **spec,
    }
    return {
        "apiVersion": "airollout.dev/v1alpha1",
        "kind": "AIRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def install_crd(kubectl: Callable[..., object]) -> None:
    """Apply the CRDs with ``kubectl(*args)`` (the AIRollout's, and its guardrail templates') and wait until the
    apiserver serves them."""
    kubectl("apply", "--server-side", "-f", str(CRD.parent))
    kubectl("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=airollout", "--timeout=60s")
