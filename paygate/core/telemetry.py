"""Telemetry: every Prometheus metric this service records, and the helpers that record them.

Callers pass what they know (an operation name, the webhook's event type as a label); nothing here imports
the domain. The `GET /metrics` view and the gauges read from the database at scrape time live in
paygate/ops/metrics_page.py.

Under gunicorn, `gunicorn.conf.py` sets PROMETHEUS_MULTIPROC_DIR before any worker process imports
prometheus_client: each process writes its values to its own files there, and the view adds them up
(`MultiProcessCollector`), so the totals are the same whichever worker answers. Without it (flask's dev
server, the tests, the worker command) the process's own registry is served.

Label values are fixed strings only: the URL rule (`/flow/<token>/status`, never the path), the webhook
event types this service knows (others are "other"), fixed operation names and a few outcomes. No flow
token, registration id, Stripe id or amount ever becomes a label value.
"""

import logging
import os
import threading
import time
from contextlib import contextmanager

import requests
import stripe
from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

log = logging.getLogger(__name__)

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROCESS_DIR:  # prometheus_client opens its files there as soon as a metric is defined
    os.makedirs(MULTIPROCESS_DIR, exist_ok=True)

disable_created_metrics()  # no *_created series: the same output with and without multiprocess mode
# This process's metrics (served as they are without multiprocess mode).
REGISTRY = CollectorRegistry(auto_describe=True)

_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
_PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter(
    "paygate_http_requests",
    "HTTP requests answered, by route (the URL rule, never the path), method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "paygate_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and method.",
    ["route", "method"],
    buckets=_REQUEST_BUCKETS,
    registry=REGISTRY,
)
WEBHOOK_EVENTS = Counter(
    "paygate_webhook_events",
    "Stripe webhook deliveries, by event type (known types; others: other) and outcome.",
    ["type", "outcome"],
    registry=REGISTRY,
)
LTIAAS_CALLS = Counter(
    "paygate_ltiaas_calls",
    "Calls to the LTIaaS API, by operation and outcome.",
    ["operation", "outcome"],
    registry=REGISTRY,
)
LTIAAS_DURATION = Histogram(
    "paygate_ltiaas_call_duration_seconds",
    "Duration of calls to the LTIaaS API, by operation.",
    ["operation"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)
STRIPE_CALLS = Counter(
    "paygate_stripe_calls",
    "Calls to the Stripe API, by operation and outcome.",
    ["operation", "outcome"],
    registry=REGISTRY,
)
STRIPE_DURATION = Histogram(
    "paygate_stripe_call_duration_seconds",
    "Duration of calls to the Stripe API (the library's network retries included), by operation.",
    ["operation"],
    buckets=_CALL_BUCKETS,
    registry=REGISTRY,
)

VENDOR_DELIVERIES = Counter(
    "paygate_vendor_webhook_deliveries",
    "Tries to deliver a message to the vendor's webhook endpoint, by outcome (delivered, failed, gave_up).",
    ["outcome"],
    registry=REGISTRY,
)

NOTIFICATIONS = Counter(
    "paygate_notifications",
    "Tries to e-mail a notification to operators, by outcome (sent, failed, gave_up).",
    ["outcome"],
    registry=REGISTRY,
)

_CALLS = {"ltiaas": (LTIAAS_CALLS, LTIAAS_DURATION), "stripe": (STRIPE_CALLS, STRIPE_DURATION)}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "unmatched"  # the route of a request no URL rule matched (404, 405)


def _safely(fn, *args) -> None:
    """Metrics never break what they measure."""
    try:
        fn(*args)
    except Exception:  # e.g. the multiprocess directory is gone (logged, so not blind)
        log.debug("metrics: could not record", exc_info=True)


# ---------------------------------------------------------------------------------------------
# HTTP requests


def _started() -> None:
    g._metrics_started = time.perf_counter()


def _answered(response: Response) -> Response:
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    method = request.method if request.method in _METHODS else "other"
    started = g.pop("_metrics_started", None)

    def record():
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        if started is not None:
            HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)

    _safely(record)
    return response


def request_refused(method: str, status: int) -> None:
    """A request answered before the application (paygate/web/guard.py: a host not served): no route."""
    method = method if method in _METHODS else "other"
    _safely(lambda: HTTP_REQUESTS.labels(UNMATCHED, method, str(status)).inc())


# ---------------------------------------------------------------------------------------------
# Stripe webhooks

EVENT_OUTCOMES = (
    "paid",
    "already_paid",
    "recorded",
    "no_change",
    "processing",
    "needs_attention",
    "foreign",
    "ignored",
    "malformed",
    "refused_signature",
    "unavailable",
    "error",
    "other",
)
_RESULTS = {
    "paid": "paid",
    "already paid": "already_paid",
    "ignored: already paid": "already_paid",
    "recorded": "recorded",
    "expired": "recorded",
    "failed": "recorded",
    "processing": "processing",
    "mismatch": "needs_attention",
    "no payment": "needs_attention",
    "duplicate payment": "needs_attention",
    "unknown session": "foreign",
    "foreign session": "foreign",
    "foreign subscription": "foreign",
    "foreign invoice": "foreign",
    "foreign payment": "foreign",
    "foreign refund": "foreign",
    "foreign dispute": "foreign",
    "not a refund": "malformed",
    "not a dispute": "malformed",
    "ignored": "ignored",
    "malformed": "malformed",
}


def webhook_outcome(result: str) -> str:
    """One of EVENT_OUTCOMES for a webhook's result (paygate/web/webhooks.py)."""
    if result in EVENT_OUTCOMES:
        return result
    if result in _RESULTS:
        return _RESULTS[result]
    if result.startswith("no change"):
        return "no_change"
    if result.startswith(("subscription ", "invoice ")):  # "subscription past_due": the licence changed
        return "recorded"
    return "other"


def webhook_event(type_label: str, result: str) -> None:
    """Count one webhook delivery. `type_label` is the caller's: an event type it knows, "other", or
    "unverified" when the signature was refused (nothing of the event is trusted)."""
    _safely(lambda: WEBHOOK_EVENTS.labels(type_label, webhook_outcome(result)).inc())


# ---------------------------------------------------------------------------------------------
# Calls to LTIaaS and Stripe

CALL_OUTCOMES = ("ok", "http_4xx", "rate_limited", "http_5xx", "timeout", "connection_error", "error")


def call_outcome(exc: BaseException | None) -> str:
    """The outcome of a failed call, from its exception (or the library's, kept as its context)."""
    if exc is None:
        return "ok"
    status = getattr(exc, "http_status", None) or getattr(exc, "status", None)
    if isinstance(status, int):
        return "rate_limited" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"
    seen, depth = exc, 0
    while seen is not None and depth < 5:  # LtiaasError is raised "from None": the cause is its context
        if isinstance(seen, requests.Timeout):
            return "timeout"
        if isinstance(seen, (requests.ConnectionError, stripe.APIConnectionError)):
            return "connection_error"
        seen, depth = seen.__context__, depth + 1
    return "error"


@contextmanager
def outbound(service: str, operation: str):
    """Count and time one call to `service` ("ltiaas" or "stripe"); `operation` is a fixed name."""
    calls, duration = _CALLS[service]
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except BaseException as exc:
        outcome = call_outcome(exc)
        raise
    finally:
        elapsed = time.perf_counter() - started
        _safely(lambda: (calls.labels(operation, outcome).inc(), duration.labels(operation).observe(elapsed)))


def vendor_deliveries(outcome: str, count: int) -> None:
    """Count `count` tries of the vendor outbox (paygate/ops/vendor_outbox.py) with one outcome."""
    if count:
        _safely(lambda: VENDOR_DELIVERIES.labels(outcome).inc(count))


def notifications(outcome: str) -> None:
    """Count one try of the notification outbox (paygate/ops/notify_outbox.py) with its outcome."""
    _safely(lambda: NOTIFICATIONS.labels(outcome).inc())


# ---------------------------------------------------------------------------------------------
# The worker (paygate/ops/worker.py): defined on its first pass, so that web processes do not show them.

_worker_metrics: dict = {}
_worker_lock = threading.Lock()


def _worker() -> dict:
    with _worker_lock:
        if not _worker_metrics:
            _worker_metrics.update(
                duration=Histogram(
                    "paygate_worker_pass_duration_seconds",
                    "Duration of the worker's passes.",
                    buckets=_PASS_BUCKETS,
                    registry=REGISTRY,
                ),
                last=Gauge(
                    "paygate_worker_last_pass_timestamp_seconds",
                    "When the worker's last pass ended (Unix time).",
                    multiprocess_mode="max",
                    registry=REGISTRY,
                ),
                last_duration=Gauge(
                    "paygate_worker_last_pass_duration_seconds",
                    "Duration of the worker's last pass.",
                    multiprocess_mode="mostrecent",
                    registry=REGISTRY,
                ),
                failures=Counter(
                    "paygate_worker_pass_failures", "Worker passes that failed (e.g. no database).", registry=REGISTRY
                ),
                overview=Gauge(
                    "paygate_overview_refresh_duration_seconds",
                    "How long the worker's last count of the overview's figures took.",
                    multiprocess_mode="mostrecent",
                    registry=REGISTRY,
                ),
            )
        return _worker_metrics


def worker_pass(seconds: float) -> None:
    def record():
        m = _worker()
        m["duration"].observe(seconds)
        m["last_duration"].set(seconds)
        m["last"].set(time.time())

    _safely(record)


def worker_pass_failed() -> None:
    _safely(lambda: _worker()["failures"].inc())


def overview_refresh(seconds: float) -> None:
    """The duration of the worker's count of the overview's figures (paygate/ops/overview_summary.py)."""
    _safely(lambda: _worker()["overview"].set(seconds))


def init_app(app: Flask) -> None:
    """Count and time every request (registered first, so that the latency covers the other hooks)."""
    app.before_request(_started)
    app.after_request(_answered)
