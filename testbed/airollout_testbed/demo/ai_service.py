"""A synthetic AI service whose health a rollout can be judged on: the demo's workload and the tests' target.

It generates its own steady traffic of virtual users (``user-<n>``, each with a fixed ``locale``), asks the
real FeatBit SDK which variation every request gets, simulates the request, and exports Prometheus metrics
labelled the way OpenTelemetry's ``feature_flag.result.variant`` would carry it: ``variant`` is the FeatBit
variation id. How each variant behaves (error rate, latency, quality) is a set of knobs, settable at start and
at runtime (``GET``/``POST /knobs``), so a test or a demo can inject a regression into one variant, one
locale, or only above a share of traffic: the load-dependent regression that appears only past 25 %.

Requests are simulated, not served: nothing sleeps for the simulated latency, so the service costs a few
per cent of a core at 200 requests/s and shares a small machine with an apiserver and Prometheus. A seeded
RNG makes a run repeatable, and `AIService.simulate` drives it synchronously for deterministic tests.

Run it: ``python -m airollout_testbed.demo.ai_service --port 8000 --flag ai-summary --env-secret S
--eval-url http://127.0.0.1:5100 --streaming-url ws://127.0.0.1:5100 --knobs '{"rps": 200}'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Histogram, Summary
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "DEFAULT_VARIANT",
    "LOCALES",
    "AIService",
    "Behaviour",
    "Divert",
    "FlagEvaluator",
    "Knobs",
    "LoadRegression",
    "main",
]

log = logging.getLogger(__name__)

# A user's locale is fixed by its number: en 50 %, de 20 %, fr 20 %, ja 10 %. Uneven on purpose, so that a
# small segment (ja) sees few candidate requests at low percentages, as real minority segments do.
LOCALES = ("en", "de", "fr", "ja")
_LOCALE_OF_DIGIT = ("en",) * 5 + ("de",) * 2 + ("fr",) * 2 + ("ja",)
DEFAULT_VARIANT = "default"
"""The ``variant`` label of a request the SDK could not evaluate (not ready, unknown flag): it got the default."""
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LATENCY_SIGMA = 0.25  # lognormal spread around the configured mean
_QUALITY_SPREAD = 0.05
_SHARE_WINDOW_REQUESTS = 1000  # the traffic share is a moving average over about this many requests
_TICK_SECONDS = 0.1
_ACTIVE_SECONDS = 10.0


class _Knob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Behaviour(_Knob):
    """How requests behave; unset fields inherit (default, then the variant, then the variant's locale)."""

    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_seconds: float | None = Field(default=None, gt=0)
    """The mean simulated latency."""
    quality: float | None = Field(default=None, ge=0, le=1)
    """The mean quality score of a successful answer."""

    def over(self, base: Behaviour) -> Behaviour:
        return Behaviour(
            error_rate=base.error_rate if self.error_rate is None else self.error_rate,
            latency_seconds=base.latency_seconds if self.latency_seconds is None else self.latency_seconds,
            quality=base.quality if self.quality is None else self.quality,
        )


class _Resolved(NamedTuple):
    error_rate: float
    latency_seconds: float
    quality: float


class LoadRegression(_Knob):
    """A regression of one variant that appears only while its share of traffic is above ``share_above``."""

    variant: str
    share_above: float = Field(default=0.25, ge=0, le=1)
    extra_latency_seconds: float = Field(default=0.0, ge=0)
    extra_error_rate: float = Field(default=0.0, ge=0, le=1)


class Divert(_Knob):
    """Serve ``to_variant`` to a share of the users FeatBit assigned ``from_variant``: a stale cache or a broken
    bucketing, the faults a sample-ratio check is there to catch. The same users every time (by their number)."""

    from_variant: str
    to_variant: str
    fraction: float = Field(ge=0, le=1)


class Knobs(_Knob):
    """The service's behaviour; ``POST /knobs`` replaces the top-level fields it names, keeps the others."""

    rps: float = Field(default=200.0, ge=0, le=2000)
    default: Behaviour = Behaviour(error_rate=0.01, latency_seconds=0.2, quality=0.9)
    variants: dict[str, Behaviour] = {}
    """Per FeatBit variation id."""
    overrides: dict[str, dict[str, Behaviour]] = {}
    """Per variation id, then per locale: ``{"canary": {"de": {"error_rate": 0.2}}}``."""
    load_regression: LoadRegression | None = None
    divert: Divert | None = None

    @model_validator(mode="after")
    def _default_is_complete(self) -> Knobs:
        if None in (self.default.error_rate, self.default.latency_seconds, self.default.quality):
            raise ValueError("default must set error_rate, latency_seconds and quality")
        return self

    def behaviour(self, variant: str, locale: str) -> _Resolved:
        """How a request of ``variant`` from ``locale`` behaves: its override, else the variant's, else the default."""
        layered = self.default
        for layer in (self.variants.get(variant), self.overrides.get(variant, {}).get(locale)):
            if layer is not None:
                layered = layer.over(layered)
        # The validator below guarantees the default sets every field, so nothing is None here.
        return _Resolved(layered.error_rate or 0.0, layered.latency_seconds or 0.0, layered.quality or 0.0)

    def merged(self, changes: dict[str, Any]) -> Knobs:
        return Knobs.model_validate({**self.model_dump(), **changes})


class FlagEvaluator(Protocol):
    """The part of FeatBit's ``FBClient`` the service uses, so tests can stand in a fixed split."""

    @property
    def initialize(self) -> bool: ...

    def variation_detail(self, key: str, user: dict[str, Any], default: Any = None) -> Any:
        """An object whose ``variation_id`` is the FeatBit variation served (None on failure)."""
        ...


class _ActiveUsers(Collector):
    """``ai_active_users{variant}``: the users each variant served in the last ``_ACTIVE_SECONDS``, at scrape."""

    def __init__(self, seen: dict[int, tuple[str, float]]) -> None:
        self._seen = seen

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        family = GaugeMetricFamily(
            "ai_active_users", f"Users served each variant in the last {_ACTIVE_SECONDS:g}s.", labels=["variant"]
        )
        recent: Counter[str] = Counter(v for v, at in list(self._seen.values()) if now - at <= _ACTIVE_SECONDS)
        for variant, users in sorted(recent.items()):
            family.add_metric([variant], users)
        yield family


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("variant", "locale")
        self.requests = CounterMetric("ai_requests", "Requests served.", labels, registry=registry)
        self.errors = CounterMetric("ai_errors", "Requests that failed.", labels, registry=registry)
        self.duration = Histogram(
            "ai_request_duration_seconds", "Request latency.", labels, buckets=_LATENCY_BUCKETS, registry=registry
        )
        self.quality = Summary(
            "ai_quality_score", "Quality score of successful answers (0-1).", labels, registry=registry
        )
        # Units, not requests: the users each variant served lately. A sample-ratio check counts users, because
        # one user's requests all go the same way: counted as requests, they look like far more evidence.
        self._seen: dict[int, tuple[str, float]] = {}
        registry.register(_ActiveUsers(self._seen))
        # The flags evaluated beside the main one, for many rollouts on one service: requests and errors only.
        flag_labels = ("flag", "variant")
        self.flag_requests = CounterMetric(
            "ai_flag_requests", "Requests per extra flag.", flag_labels, registry=registry
        )
        self.flag_errors = CounterMetric(
            "ai_flag_errors", "Failed requests per extra flag.", flag_labels, registry=registry
        )
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def assign(self, user: int, variant: str, now: float) -> None:
        self._seen[user] = (variant, now)

    def record(self, variant: str, locale: str, seconds: float, failed: bool, quality: float) -> None:
        key = (variant, locale)
        children = self._children.get(key)
        if children is None:
            # Create every series of the pair at once, so an error rate reads 0 rather than "no series"
            # before the first error.
            children = (
                self.requests.labels(*key),
                self.errors.labels(*key),
                self.duration.labels(*key),
                self.quality.labels(*key),
            )
            self._children[key] = children
        requests, errors, duration, quality_score = children
        requests.inc()
        duration.observe(seconds)
        if failed:
            errors.inc()
        else:
            quality_score.observe(quality)


class AIService:
    """The synthetic service, in process: `start` serves HTTP and traffic, `simulate` drives it by hand."""

    def __init__(
        self,
        flags: FlagEvaluator,
        flag_key: str,
        *extra_flags: str,
        knobs: Knobs | None = None,
        seed: int = 0,
        users: int = 10_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.flag_key = flag_key
        self.extra_flags = extra_flags
        """Flags every request also evaluates, each a rollout of its own (``ai_flag_requests_total{flag}``)."""
        self._flags = flags
        self._knobs = knobs or Knobs()
        self._rng = random.Random(seed)
        self._users = users
        self._lock = threading.Lock()  # one simulation at a time: the RNG and the shares are shared state
        self._served: Counter[str] = Counter()
        self._share: dict[str, float] = {}
        self.registry = CollectorRegistry()
        self._metrics = _Metrics(self.registry)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._host = host
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def knobs(self) -> Knobs:
        return self._knobs

    @knobs.setter
    def knobs(self, knobs: Knobs) -> None:
        self._knobs = knobs  # read once per batch by the traffic thread; assignment is atomic

    def start(self, *, traffic: bool = True) -> None:
        """Serve ``/metrics`` and ``/knobs`` and, unless ``traffic`` is False, generate ``knobs.rps`` requests/s."""
        serve = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="ai-service-http", daemon=True
        )
        self._threads.append(serve)
        if traffic:
            self._threads.append(threading.Thread(target=self._generate, name="ai-service-traffic", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._threads:  # shutdown() waits for serve_forever(), which only runs once started
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> AIService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def simulate(self, count: int) -> None:
        """Serve ``count`` requests now, from random virtual users."""
        knobs = self._knobs
        with self._lock:
            for _ in range(count):
                self._serve_one(knobs)

    def stats(self) -> dict[str, Any]:
        """Requests served per variant so far, and each variant's recent share of traffic."""
        with self._lock:
            return {
                "flag": self.flag_key,
                "flag_ready": bool(self._flags.initialize),
                "served": dict(self._served),
                "share": {variant: round(share, 4) for variant, share in self._share.items()},
            }

    def _variant(self, user: dict[str, Any], flag: str | None = None) -> str:
        # Asking an SDK that is not ready would log a warning per request; the answer is the default anyway.
        if not self._flags.initialize:
            return DEFAULT_VARIANT
        detail = self._flags.variation_detail(flag or self.flag_key, user, False)
        return str(detail.variation_id) if detail.variation_id else DEFAULT_VARIANT

    def _serve_one(self, knobs: Knobs) -> None:
        rng = self._rng
        n = rng.randrange(self._users)
        locale = _LOCALE_OF_DIGIT[n % 10]
        user = {"key": f"user-{n}", "name": f"user-{n}", "locale": locale}
        for flag in self.extra_flags:
            extra = self._variant(user, flag)
            self._metrics.flag_requests.labels(flag, extra).inc()
            if rng.random() < knobs.behaviour(extra, locale).error_rate:
                self._metrics.flag_errors.labels(flag, extra).inc()
        variant = self._variant(user)
        divert = knobs.divert
        if divert is not None and variant == divert.from_variant and (n * 2654435761 % 2**32) / 2**32 < divert.fraction:
            variant = divert.to_variant
        self._metrics.assign(n, variant, time.monotonic())
        self._served[variant] += 1
        for name in self._share.keys() | {variant}:
            hit = 1.0 if name == variant else 0.0
            self._share[name] = self._share.get(name, 0.0) + (hit - self._share.get(name, 0.0)) / _SHARE_WINDOW_REQUESTS

        behaviour = knobs.behaviour(variant, locale)
        mean_latency, error_rate = behaviour.latency_seconds, behaviour.error_rate
        regression = knobs.load_regression
        if (
            regression is not None
            and variant == regression.variant
            and self._share.get(variant, 0.0) > regression.share_above
        ):
            mean_latency += regression.extra_latency_seconds
            error_rate = min(1.0, error_rate + regression.extra_error_rate)

        # A lognormal with this mu has the configured mean.
        seconds = rng.lognormvariate(math.log(mean_latency) - _LATENCY_SIGMA**2 / 2, _LATENCY_SIGMA)
        failed = rng.random() < error_rate
        quality = min(1.0, max(0.0, rng.gauss(behaviour.quality, _QUALITY_SPREAD)))
        self._metrics.record(variant, locale, seconds, failed, quality)

    def _generate(self) -> None:
        owed = 0.0
        next_tick = time.monotonic()
        while not self._stopping.wait(max(0.0, next_tick - time.monotonic())):
            knobs = self._knobs
            owed += knobs.rps * _TICK_SECONDS
            count = int(owed)
            owed -= count
            try:
                self.simulate(count)
            except Exception:  # keep the traffic flowing: a demo that stops on one bad request shows nothing
                log.exception("simulated request failed")
            next_tick += _TICK_SECONDS
            if time.monotonic() - next_tick > 1.0:
                next_tick = time.monotonic()  # fell behind (a busy machine): skip ahead rather than burst


def _handler_for(service: AIService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(service.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/knobs":
                self._json(HTTPStatus.OK, service.knobs.model_dump())
            elif self.path == "/stats":
                self._json(HTTPStatus.OK, service.stats())
            elif self.path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/knobs":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                service.knobs = service.knobs.merged(changes)
            except (ValueError, ValidationError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._json(HTTPStatus.OK, service.knobs.model_dump())

        def _json(self, status: HTTPStatus, payload: object) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)  # a 1 s scrape would flood stderr

    return Handler


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m airollout_testbed.demo.ai_service",
        description="A synthetic AI service: FeatBit decides each request's variant, Prometheus sees the result.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--flag", required=True, help="the FeatBit flag key each request evaluates")
    parser.add_argument("--env-secret", required=True, help="the FeatBit environment's server secret")
    parser.add_argument("--eval-url", required=True, help="FeatBit's evaluation server, e.g. http://127.0.0.1:5100")
    parser.add_argument("--streaming-url", required=True, help="its streaming URL, e.g. ws://127.0.0.1:5100")
    parser.add_argument("--start-wait", type=float, default=15.0, help="seconds to wait for FeatBit's first sync")
    parser.add_argument(
        "--websocket-timeout",
        type=float,
        default=5.0,
        help="the SDK's WebSocket timeout; stopping waits up to this plus 1 s (1 is ample on loopback)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=10_000, help="virtual users user-0 .. user-(N-1)")
    parser.add_argument("--rps", type=float, help="requests per second (overrides the knobs' rps)")
    parser.add_argument("--knobs", default="{}", help="initial knobs as JSON, or @FILE")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from fbclient import Config, FBClient  # the sandbox extra; the operator itself never needs it
    from fbclient.config import WebSocketConfig

    knobs_text = args.knobs
    if knobs_text.startswith("@"):
        with open(knobs_text[1:], encoding="utf-8") as file:
            knobs_text = file.read()
    changes = json.loads(knobs_text)
    if args.rps is not None:
        changes["rps"] = args.rps
    knobs = Knobs().merged(changes)

    websocket = WebSocketConfig(timeout=args.websocket_timeout)
    config = Config(args.env_secret, args.eval_url, args.streaming_url, websocket=websocket)
    client = FBClient(config, start_wait=args.start_wait)
    if not client.initialize:
        log.warning("FeatBit is not ready yet: requests get the default until it is")
    service = AIService(
        client, args.flag, knobs=knobs, seed=args.seed, users=args.users, host=args.host, port=args.port
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.start()
    print(f"ai_service listening on {service.url}", flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
