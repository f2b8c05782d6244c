"""`airollout run`: the operator process, the same entry point locally and in the container image."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import kopf


def run_operator(
    namespaces: Sequence[str], liveness: str | None, verbose: bool = False, metrics_port: int | None = None
) -> int:
    """Serve AIRollouts in ``namespaces`` (all when empty) until interrupted; 0 on a clean stop."""
    # Registering the handlers is importing them.
    import airollout.kube.handlers  # noqa: F401
    from airollout.kube import metrics

    if metrics_port:
        metrics.serve(metrics_port)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One replica, no peering: Kopf's peering freezes operators of equal priority rather than electing one.
    kopf.configure(verbose=verbose)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
        )
    )
    return 0
