"""How fast the operator's kill switch lands in FeatBit: from the user's command to FeatBit's toggle.

Two ways to pull the switch are measured with kubectl, as a user pulls it: `kubectl patch ...
spec.killSwitch=true` and the abort verb `kubectl annotate ... airollout.dev/action=abort`. Either should reach
FeatBit through the operator's kill-switch lane, started by the watch event (its fast path), without waiting for
the rollout's next scheduled reconcile. kubectl is a process of its own, whose start and exit take longer than
the operator needs, so the patch is also sent from Python straight to the apiserver: the moment its answer
arrives is the closest outside view of the moment the change was accepted. Each trial uses a fresh flag and a
fresh AIRollout in the Progressing phase of a one-hour stage, so nothing but the switch can turn the flag off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import kubernetes
from harness.figures import header, report, trials
from harness.stack import AUDIT_POLL_SECONDS, Stack, epoch, sandbox

from airollout.featbit import FeatBitClient
from airollout.model import GROUP, PLURAL, VERSION
from airollout_testbed.waiting import wait_for_async

NAMESPACE = "bench"
STAGES = [{"name": "long", "percentage": 50, "duration": "1h"}]
FAST_PATH_COMMENT = ", kill switch: "
"""What the kill-switch lane's toggle says in FeatBit's audit log ("AIRollout NS/NAME generation G, kill switch:
spec.killSwitch is true"); a rollback decided on a tick says ", rollback: ..." instead."""

Pull = Callable[[str], tuple[float, float]]
"""Pulls the switch of the named AIRollout; returns the wall clock when asked and when answered."""


@dataclass(frozen=True)
class _Landing:
    """One trial, in wall-clock seconds (this process and the double share the machine's clock)."""

    from_invoked: float
    from_returned: float
    fast_path: bool
    """Whether the kill-switch lane's toggle switched the flag off (rather than a rollback decided on a tick)."""


def _kubectl(stack: Stack, *args: str) -> Pull:
    def pull(name: str) -> tuple[float, float]:
        invoked = time.time()
        stack.kubectl("-n", NAMESPACE, args[0], "airollout", name, *args[1:])
        return invoked, time.time()

    return pull


def _api_patch(stack: Stack) -> Pull:
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(stack.env["KUBECONFIG"]))

    def pull(name: str) -> tuple[float, float]:
        invoked = time.time()
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            name,
            {"spec": {"killSwitch": True}},
            _content_type="application/merge-patch+json",
        )
        return invoked, time.time()

    return pull


async def _progressing(stack: Stack, client: FeatBitClient, name: str, flag: str) -> None:
    env_id = stack.env["FEATBIT_ENV_ID"]

    async def progressing_with_flag_on() -> bool:
        phase = await asyncio.to_thread(stack.phase, NAMESPACE, name)
        return phase == "Progressing" and bool((await client.get_flag(env_id, flag)).get("isEnabled"))

    await wait_for_async(f"AIRollout {name} to progress with its flag on", progressing_with_flag_on, interval=0.1)


async def _trial(stack: Stack, client: FeatBitClient, pull: Pull, name: str) -> _Landing:
    flag = await stack.create_flag(client, f"kill-switch-{name}")
    await asyncio.to_thread(stack.apply, stack.rollout(NAMESPACE, name, flag["key"], stages=STAGES))
    await _progressing(stack, client, name, flag["key"])
    invoked, returned = await asyncio.to_thread(pull, name)
    entry = await stack.switched_off(client, flag["id"])
    landed = epoch(entry["createdAt"])
    # Gone before the next trial, so only one rollout at a time keeps the operator busy.
    await asyncio.to_thread(stack.kubectl, "-n", NAMESPACE, "delete", "airollout", name, "--timeout=60s")
    return _Landing(landed - invoked, landed - returned, FAST_PATH_COMMENT in (entry.get("comment") or ""))


async def _measure(stack: Stack, ways: dict[str, Pull], count: int) -> dict[str, list[_Landing]]:
    async with stack.featbit_client() as client:
        results: dict[str, list[_Landing]] = {}
        for number, (label, pull) in enumerate(ways.items()):
            results[label] = [await _trial(stack, client, pull, f"way{number}-{index}") for index in range(count)]
        return results


def main() -> int:
    count = trials(__doc__ or "", default=20)
    header(
        f"Operator kill switch: the user's command -> FeatBit's toggle landed ({count} trials per way)",
        "Sandbox (etcd + kube-apiserver + FeatBit double, loopback) and `airollout run` as its own process.",
        "Each trial: a fresh flag and AIRollout (one 50% stage of 1h), seen Progressing with the flag on; then",
        "the switch is pulled and the wall clock when the command was invoked and when it returned is compared",
        "with the createdAt (ms) of the FeatBit audit entry that switched the flag off (polled every "
        f"{AUDIT_POLL_SECONDS * 1e3:g} ms).",
        "Negative 'returned' figures: the flag was off before the command had returned (kubectl's own exit).",
    )
    with sandbox() as stack:
        stack.install_crd()
        stack.namespace_with_token(NAMESPACE)
        ways = {
            "spec.killSwitch=true, kubectl patch": _kubectl(
                stack, "patch", "--type=merge", "-p", '{"spec": {"killSwitch": true}}'
            ),
            "abort verb, kubectl annotate": _kubectl(stack, "annotate", "--overwrite", "airollout.dev/action=abort"),
            "spec.killSwitch=true, merge PATCH from Python (no kubectl)": _api_patch(stack),
        }
        with stack.operator():
            results = asyncio.run(_measure(stack, ways, count))
    for label, landings in results.items():
        print(f"{label}:")
        report("   invoked -> toggle landed", [landing.from_invoked for landing in landings])
        report("   returned -> toggle landed", [landing.from_returned for landing in landings])
        fast = sum(landing.fast_path for landing in landings)
        print(f"   switched off by the kill-switch lane (fast path): {fast} of {len(landings)}; the rest on a tick")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
