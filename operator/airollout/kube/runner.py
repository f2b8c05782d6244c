"""`airollout run`: the operator process, the same entry point locally and in the container image."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any, cast

import kopf

from airollout.settings import Settings


def run_operator(
    namespaces: Sequence[str],
    liveness: str | None,
    verbose: bool = False,
    metrics_port: int | None = None,
    settings: Settings | None = None,
) -> int:
    """Serve AIRollouts in ``namespaces`` (all when empty) until interrupted; 0 on a clean stop."""
    # Registering the handlers is importing them.
    import airollout.kube.handlers  # noqa: F401
    from airollout.kube import metrics

    if metrics_port:
        metrics.serve(metrics_port)

    kopf.configure(verbose=verbose)
    if not verbose:
        # One line per HTTP request and per watch event is noise at a thousand rollouts, and costs CPU.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf_settings = kopf.OperatorSettings()
    # Kopf finds AIRollouts' resource at start-up through API discovery, which every account may read; it
    # need not watch CRDs or namespaces cluster-wide, rights the chart then never grants (in a namespaced
    # install a Role could not). A CRD installed after the operator, or a new served version, takes a restart.
    kopf_settings.scanning.disabled = True
    # One process per shard set, no peering: Kopf's peering freezes operators of equal priority.
    asyncio.run(
        kopf.operator(
            settings=kopf_settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
            # Kopf would name the process after the user's login name, which a numeric user with no passwd entry
            # (the image's, or an arbitrary UID a platform assigns) lacks, and it would stop at start-up; the
            # host name (the pod's name) identifies it as well. (Kopf's type for it is not public, hence Any.)
            identity=cast(Any, socket.gethostname()),
            memo=kopf.Memo(settings=settings or Settings()),
        )
    )
    return 0
