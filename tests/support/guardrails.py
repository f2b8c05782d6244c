"""A workload for guardrail rollouts: the synthetic AI service, split by FeatBit's SDK, scraped by Prometheus.

Each test gets a Prometheus job of its own, named after its namespace, and its guardrail queries select that
job: a query only ever sees the traffic of the test that wrote it, even though the test bed's Prometheus
lives for the whole session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fbclient.client import FBClient

from airollout_testbed.demo.ai_service import AIService, Knobs
from airollout_testbed.sandbox.prometheus import scrape_targets_dir
from airollout_testbed.waiting import wait_for
from tests.support.ai_service import StartAIService
from tests.support.sandbox import Testbed

__all__ = ["ScrapedService", "StartScrapedService", "scraped_ai_service"]

# Enough traffic that a 5 % canary sees ~50 requests a second, so a short window holds a usable sample.
RPS = 1000.0
# Scrapes of history the service has before a test goes on, as for a service that was already serving when its
# rollout began: the control's values are then those of a steady service, not of its first second.
WARM_UP_SCRAPES = 10


@dataclass(frozen=True)
class ScrapedService:
    """A running AI service, the Prometheus job that scrapes it, and guardrail queries over that job."""

    service: AIService
    job: str

    def set_knobs(self, **changes: Any) -> None:
        """Change how the service behaves from its next request on (``Knobs`` fields, as JSON)."""
        self.service.knobs = self.service.knobs.merged(changes)

    def share(self, variant: str) -> float:
        """The variant's recent share of the service's traffic."""
        share: dict[str, float] = self.service.stats()["share"]
        return share.get(variant, 0.0)

    def _selector(self, metric: str) -> str:
        return f'{metric}{{job="{self.job}",variant="{{{{variant}}}}"}}'

    def error_rate(self, window: str, by: str = "") -> str:
        """Failed requests over requests, per ``by`` label (e.g. ``locale``) when given."""
        group = f" by ({by})" if by else ""
        errors = self._selector("ai_errors_total")
        requests = self._selector("ai_requests_total")
        return f"sum{group} (rate({errors}[{window}])) / sum{group} (rate({requests}[{window}]))"

    def latency_p95(self, window: str) -> str:
        buckets = self._selector("ai_request_duration_seconds_bucket")
        return f"histogram_quantile(0.95, sum by (le) (rate({buckets}[{window}])))"

    def comparison(self, by: str = "", **fields: Any) -> dict[str, Any]:
        """A comparison of the error rate over each stage (per ``by`` label when given)."""
        group = f" by ({by})" if by else ""
        requests, errors = self._selector("ai_requests_total"), self._selector("ai_errors_total")
        return {
            "statistic": "proportion",
            "count": f"sum{group} (increase({requests}[{{{{window}}}}]))",
            "events": f"sum{group} (increase({errors}[{{{{window}}}}]))",
            **fields,
        }

    def flag_comparison(self, flag: str) -> dict[str, Any]:
        """A comparison of the error rate of one of the service's extra flags."""
        labels = f'job="{self.job}",flag="{flag}",variant="{{{{variant}}}}"'
        return {
            "statistic": "proportion",
            "count": f"sum(increase(ai_flag_requests_total{{{labels}}}[{{{{window}}}}]))",
            "events": f"sum(increase(ai_flag_errors_total{{{labels}}}[{{{{window}}}}]))",
        }

    def users(self) -> str:
        """The users each variant served lately: the units of a sample-ratio check."""
        return f"sum({self._selector('ai_active_users')})"

    def quality(self, window: str) -> str:
        """The mean quality score of successful answers."""
        total = self._selector("ai_quality_score_sum")
        count = self._selector("ai_quality_score_count")
        return f"sum(rate({total}[{window}])) / sum(rate({count}[{window}]))"


StartScrapedService = Callable[..., ScrapedService]


@pytest.fixture
def scraped_ai_service(
    testbed: Testbed,
    namespace: str,
    featbit_client: Callable[..., FBClient],
    start_ai_service: StartAIService,
) -> Iterator[StartScrapedService]:
    """Start the AI service on flag ``flag_key`` with ``knobs``, its requests split by a real SDK, and scrape it."""
    jobs: list[str] = []

    def start(flag_key: str, knobs: Knobs, extra_flags: tuple[str, ...] = (), rps: float = RPS) -> ScrapedService:
        service = start_ai_service(
            featbit_client(), flag_key=flag_key, extra_flags=extra_flags, knobs=knobs.merged({"rps": rps})
        )
        job = f"ai-{namespace}"
        testbed.add_scrape_target(job, f"127.0.0.1:{service.port}")
        jobs.append(job)
        _wait_for_history(testbed.prometheus_url, job)
        return ScrapedService(service, job)

    yield start
    # A stopped service's port may be reused; without its target, Prometheus never scrapes a stranger as this job.
    for job in jobs:
        (scrape_targets_dir(testbed.dir) / f"{job}.json").unlink(missing_ok=True)


def _wait_for_history(prometheus_url: str, job: str) -> None:
    query = f'count_over_time(up{{job="{job}"}}[{WARM_UP_SCRAPES + 5}s]) >= {WARM_UP_SCRAPES}'

    def scraped_often_enough() -> list[Any]:
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=5).json()
        result: list[Any] = answer["data"]["result"]
        return result

    wait_for(f"Prometheus to scrape job {job} {WARM_UP_SCRAPES} times", scraped_often_enough, timeout=60, interval=0.5)
