"""How fast FeatBit's kill switch reaches users: from the toggle call returning to the SDK serving control.

The operator's kill switch is `FeatBitClient.toggle(..., False)`; what matters to users is when the SDK in
their service stops serving the candidate. The SDK evaluates locally from a store its WebSocket keeps in
step, so this measures the push: double -> WebSocket -> SDK store. The double runs as its own process; the
client and the SDK share this one, which in production they would not. A real FeatBit passes a change from
its API server to its evaluation server through a message queue first, a hop the double does not have, so
these figures are a lower bound for a real deployment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fbclient import FBClient
from harness.figures import header, report, trials
from harness.stack import Stack, all_served, connect_sdk, featbit_double_only, stop_sdk, users

from airollout_testbed.waiting import wait_for

FLAG = "kill-switch-bench"
USERS = users(1000)
SENTINEL = USERS[-1]
POLL_SECONDS = 0.0001  # a sleep between evaluations releases the GIL to the SDK's WebSocket thread


def _served(sdk: FBClient, user: dict[str, str]) -> str | None:
    variation: str | None = sdk.variation_detail(FLAG, user, None).variation_id
    return variation


def _poll_until_control(sdk: FBClient) -> float:
    """Poll the sentinel until it gets control; returns when. Blocking is deliberate: nothing else runs."""
    while _served(sdk, SENTINEL) != "stable":
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


@dataclass
class _Figures:
    round_trip: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    every: list[float] = field(default_factory=list)
    check_pass: list[float] = field(default_factory=list)
    early: int = 0
    stragglers: int = 0


async def _measure(stack: Stack, count: int) -> _Figures:
    env_id = stack.env["FEATBIT_ENV_ID"]
    async with stack.featbit_client() as client:
        await stack.create_flag(client, FLAG, enabled=True)
        sdk = connect_sdk(stack)
        try:
            figures = _Figures()
            for trial in range(count):
                await client.toggle(env_id, FLAG, True, comment=f"benchmark trial {trial}: candidate on")
                wait_for("the SDK to serve the candidate to everyone", lambda: all_served(sdk, FLAG, USERS, "canary"))
                called = time.perf_counter()
                await client.toggle(env_id, FLAG, False, comment=f"benchmark trial {trial}: kill switch")
                returned = time.perf_counter()
                if _served(sdk, SENTINEL) == "stable":
                    figures.early += 1
                flipped = _poll_until_control(sdk)
                # The flag changes as one item in the SDK's store, so everyone should flip with the sentinel;
                # the full pass checks it, and the time at its end is the "every user" figure.
                while not all_served(sdk, FLAG, USERS, "stable"):
                    figures.stragglers += 1
                verified = time.perf_counter()
                figures.round_trip.append(returned - called)
                figures.first.append(flipped - returned)
                figures.every.append(verified - returned)
                figures.check_pass.append(verified - flipped)
        finally:
            stop_sdk(sdk)
    return figures


def main() -> int:
    count = trials(__doc__ or "", default=100)
    header(
        f"Kill switch, toggle returned -> FeatBit SDK serves control to all {len(USERS)} users ({count} trials)",
        "FeatBitClient.toggle(env, flag, False) against the FeatBit double (own process, loopback);",
        "the real fbclient SDK (WebSocket streaming, insight events off) in this process; one user polled",
        f"every {POLL_SECONDS * 1e3:g} ms until it gets control, then all {len(USERS)} users checked in one pass.",
        "Between trials the flag is switched on again and the SDK seen serving the candidate to everyone.",
    )
    with featbit_double_only() as stack:
        figures = asyncio.run(_measure(stack, count))
    report("toggle() call -> return (HTTP round trip)", figures.round_trip)
    report("toggle() returned -> first user served control", figures.first)
    report(f"toggle() returned -> all {len(USERS)} users served control (end of check pass)", figures.every)
    report(f"the check pass itself ({len(USERS)} evaluations)", figures.check_pass)
    print(f"trials where the SDK already served control when toggle() returned: {figures.early} of {count}")
    print(f"check passes that found a user still on the candidate: {figures.stragglers}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
