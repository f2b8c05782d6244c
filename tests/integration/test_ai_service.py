"""The AI service as the demo runs it: a process whose requests the real FeatBit SDK splits, via the double."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from airollout_testbed.featbit_double import FeatBitDouble
from airollout_testbed.waiting import wait_for

pytestmark = pytest.mark.integration

FLAG = "ai-summary"
RunAIService = Callable[[Sequence[str]], str]


def set_candidate_percentage(featbit: FeatBitDouble, percent: float) -> None:
    """Serve the candidate to ``percent`` of users, as the operator's targeting update does."""
    url = f"{featbit.api_url}/api/v1/envs/{featbit.env_id}/feature-flags/{FLAG}"
    headers = {"Authorization": featbit.token}
    revision = httpx.get(url, headers=headers).raise_for_status().json()["data"]["revision"]
    share = percent / 100
    targeting = {
        "targetUsers": [],
        "rules": [],
        "exptIncludeAllTargets": True,
        "fallthrough": {
            "dispatchKey": "keyId",
            "includedInExpt": True,
            "variations": [
                {"id": "canary", "rollout": [0, share], "exptRollout": 1},
                {"id": "stable", "rollout": [share, 1], "exptRollout": 1},
            ],
        },
    }
    body = {"revision": revision, "targeting": targeting, "comment": f"test: {percent:g}%"}
    httpx.put(f"{url}/targeting", json=body, headers=headers).raise_for_status()


def scrape(url: str, metric: str) -> dict[tuple[str, str], float]:
    """``metric``'s values by (variant, locale), read from the service's own /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                values[sample.labels["variant"], sample.labels["locale"]] += sample.value
    return values


def requests_by_variant(url: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for (variant, _), value in scrape(url, "ai_requests_total").items():
        totals[variant] += int(value)
    return totals


def split_of_next_requests(url: str, count: int, seconds: float = 60) -> Counter[str]:
    """Requests per variant among the next ``count`` the service serves."""
    before = requests_by_variant(url)

    def served() -> Counter[str] | None:
        delta = requests_by_variant(url) - before
        return delta if delta.total() >= count else None

    return wait_for(f"{count} more requests", served, timeout=seconds)


def eventually_split(url: str, candidate_share: float, seconds: float = 60) -> float:
    """Wait until a window of 1000 requests is split as FeatBit says; return the candidate's share seen."""

    def split_as_featbit_says() -> Counter[str] | None:
        split = split_of_next_requests(url, 1000)
        close = abs(split["canary"] / split.total() - candidate_share) < 0.05
        return split if close and set(split) <= {"canary", "stable"} else None

    # No pause between windows: each one already takes the time 1000 requests take.
    split = wait_for(f"the split to reach {candidate_share:.0%}", split_as_featbit_says, timeout=seconds, interval=0)
    return split["canary"] / split.total()


def service_args(featbit: FeatBitDouble, knobs: dict[str, Any] | None = None) -> list[str]:
    return [
        "--flag",
        FLAG,
        # A secret may start with "-": glued to its option, argparse never mistakes it for one.
        f"--env-secret={featbit.env_secret}",
        "--eval-url",
        featbit.eval_url,
        "--streaming-url",
        featbit.streaming_url,
        "--knobs",
        json.dumps(knobs or {}),
        "--websocket-timeout",
        "1",
    ]


def test_the_variant_split_follows_featbit_into_the_metrics(
    featbit_double: FeatBitDouble, run_ai_service: RunAIService
) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    set_candidate_percentage(featbit_double, 30)
    url = run_ai_service(service_args(featbit_double))

    assert eventually_split(url, 0.30) == pytest.approx(0.30, abs=0.05)
    locales = {locale for _, locale in scrape(url, "ai_requests_total")}
    assert {"en", "de", "fr", "ja"} <= locales

    set_candidate_percentage(featbit_double, 80)
    assert eventually_split(url, 0.80) == pytest.approx(0.80, abs=0.05)


def test_knobs_change_a_running_process(featbit_double: FeatBitDouble, run_ai_service: RunAIService) -> None:
    featbit_double.create_flag(key=FLAG, is_enabled=True)
    set_candidate_percentage(featbit_double, 50)
    url = run_ai_service(
        service_args(featbit_double, {"default": {"error_rate": 0, "latency_seconds": 0.2, "quality": 0.9}})
    )
    eventually_split(url, 0.50)
    assert sum(scrape(url, "ai_errors_total").values()) == 0

    request = urllib.request.Request(
        f"{url}/knobs", data=json.dumps({"overrides": {"canary": {"de": {"error_rate": 1.0}}}}).encode()
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["overrides"] == {
            "canary": {"de": {"error_rate": 1.0, "latency_seconds": None, "quality": None}}
        }

    wait_for(
        "50 canary errors in de after the knob changed",
        lambda: scrape(url, "ai_errors_total").get(("canary", "de"), 0) >= 50,
        timeout=60,
    )
    errors = scrape(url, "ai_errors_total")
    assert {key for key, value in errors.items() if value} == {("canary", "de")}
