"""Prometheus metrics: every definition, the `GET /metrics` view and the worker's own endpoint, in one place.

Under gunicorn, `gunicorn.conf.py` sets PROMETHEUS_MULTIPROC_DIR before any worker process imports
prometheus_client: each process writes its values to its own files there, and the view adds them up
(`MultiProcessCollector`), so the totals are the same whichever worker answers. Without it (flask's dev
server, the tests, the worker command) the process's own registry is served.

Label values are fixed strings only: the URL rule (`/flow/<token>/status`, never the path), the webhook
event types this service knows (others are "other"), fixed operation names and a few outcomes. No flow
token, registration id, Stripe id or amount ever becomes a label value.

Registrations by state, those needing attention and the worker's backlog are read from the database at
scrape time (a GROUP BY on an indexed column and a few indexed counts): right whichever process answers,
and no process has to keep them.
"""
import hashlib
import hmac
import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import requests
import stripe
from flask import Blueprint, Flask, Response, abort, current_app, g, jsonify, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import and_, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from .db import db, utcnow
from .models import ACCESS_DIFFERS, Registration, State

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

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
    "paygate_http_requests", "HTTP requests answered, by route (the URL rule, never the path), method and status.",
    ["route", "method", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "paygate_http_request_duration_seconds", "Time to answer an HTTP request, by route and method.",
    ["route", "method"], buckets=_REQUEST_BUCKETS, registry=REGISTRY)
WEBHOOK_EVENTS = Counter(
    "paygate_webhook_events", "Stripe webhook deliveries, by event type (known types; others: other) and outcome.",
    ["type", "outcome"], registry=REGISTRY)
LTIAAS_CALLS = Counter(
    "paygate_ltiaas_calls", "Calls to the LTIaaS API, by operation and outcome.",
    ["operation", "outcome"], registry=REGISTRY)
LTIAAS_DURATION = Histogram(
    "paygate_ltiaas_call_duration_seconds", "Duration of calls to the LTIaaS API, by operation.",
    ["operation"], buckets=_CALL_BUCKETS, registry=REGISTRY)
STRIPE_CALLS = Counter(
    "paygate_stripe_calls", "Calls to the Stripe API, by operation and outcome.",
    ["operation", "outcome"], registry=REGISTRY)
STRIPE_DURATION = Histogram(
    "paygate_stripe_call_duration_seconds",
    "Duration of calls to the Stripe API (the library's network retries included), by operation.",
    ["operation"], buckets=_CALL_BUCKETS, registry=REGISTRY)

_CALLS = {"ltiaas": (LTIAAS_CALLS, LTIAAS_DURATION), "stripe": (STRIPE_CALLS, STRIPE_DURATION)}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "unmatched"  # the route of a request no URL rule matched (404, 405)


def _safely(fn, *args) -> None:
    """Metrics never break what they measure."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - e.g. the multiprocess directory is gone
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
    """A request answered before the application (app/guard.py: a host not served): no route."""
    method = method if method in _METHODS else "other"
    _safely(lambda: HTTP_REQUESTS.labels(UNMATCHED, method, str(status)).inc())


# ---------------------------------------------------------------------------------------------
# Stripe webhooks

EVENT_OUTCOMES = ("paid", "already_paid", "recorded", "no_change", "processing", "needs_attention", "foreign",
                  "ignored", "malformed", "refused_signature", "unavailable", "error", "other")
_RESULTS = {
    "paid": "paid", "already paid": "already_paid", "ignored: already paid": "already_paid",
    "recorded": "recorded", "expired": "recorded", "failed": "recorded", "processing": "processing",
    "mismatch": "needs_attention", "no payment": "needs_attention", "duplicate payment": "needs_attention",
    "unknown session": "foreign", "foreign subscription": "foreign", "foreign invoice": "foreign",
    "foreign payment": "foreign", "not a refund": "malformed", "not a dispute": "malformed",
    "ignored": "ignored", "malformed": "malformed",
}
_known_types: frozenset | None = None


def _event_type(kind) -> str:
    global _known_types
    if _known_types is None:
        from .webhooks import CLOSING, CONFIRMING, ROUTES
        _known_types = frozenset(CONFIRMING) | frozenset(CLOSING) | frozenset(ROUTES)
    return kind if kind in _known_types else "other"


def webhook_outcome(result: str) -> str:
    """One of EVENT_OUTCOMES for a webhook's result (app/webhooks.py)."""
    if result in EVENT_OUTCOMES:
        return result
    if result in _RESULTS:
        return _RESULTS[result]
    if result.startswith("no change"):
        return "no_change"
    if result.startswith(("subscription ", "invoice ")):  # "subscription past_due": the licence changed
        return "recorded"
    return "other"


def webhook_event(kind: str | None, result: str) -> None:
    """Count one webhook delivery; `kind` is None when the signature was refused (nothing is trusted)."""
    _safely(lambda: WEBHOOK_EVENTS.labels("unverified" if kind is None else _event_type(kind),
                                          webhook_outcome(result)).inc())


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


# ---------------------------------------------------------------------------------------------
# The worker (app/worker.py): defined on its first pass, so that web processes do not show them.

_worker_metrics: dict = {}
_worker_lock = threading.Lock()


def _worker() -> dict:
    with _worker_lock:
        if not _worker_metrics:
            _worker_metrics.update(
                duration=Histogram("paygate_worker_pass_duration_seconds", "Duration of the worker's passes.",
                                   buckets=_PASS_BUCKETS, registry=REGISTRY),
                last=Gauge("paygate_worker_last_pass_timestamp_seconds",
                           "When the worker's last pass ended (Unix time).", multiprocess_mode="max",
                           registry=REGISTRY),
                last_duration=Gauge("paygate_worker_last_pass_duration_seconds",
                                    "Duration of the worker's last pass.", multiprocess_mode="mostrecent",
                                    registry=REGISTRY),
                failures=Counter("paygate_worker_pass_failures", "Worker passes that failed (e.g. no database).",
                                 registry=REGISTRY),
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


# ---------------------------------------------------------------------------------------------
# Read from the database at scrape time

class _Families:
    def __init__(self, families):
        self._families = families

    def collect(self):
        return self._families


# States a registration passes through, counted exactly at every scrape (an index range over few rows), and
# the final ones, which hold nearly every row of a large database: their GROUP BY reads the whole index
# (about 130 ms at a million rows on 2 CPUs, 400 ms cold: scripts/bench_metrics.py), so it runs at most
# once a minute per process.
LIVE_STATES = (State.PENDING.value, State.PAID.value, State.COMPLETING.value, State.NEEDS_ATTENTION.value)
FINAL_STATES = tuple(s.value for s in State if s.value not in LIVE_STATES)
FINAL_COUNTS_TTL = 60.0


def database_queries(settings, now) -> dict:
    """The scrape's queries, each on an index (state, attention, the access-differs partial index)."""
    from .worker import due_condition, stale_condition  # app.worker imports much of the app

    grace = timedelta(seconds=settings.worker_grace_seconds)
    stale_cutoff = now - timedelta(seconds=settings.stale_after_seconds)
    return {
        "live_states": select(Registration.state, func.count()).where(Registration.state.in_(LIVE_STATES))
        .group_by(Registration.state),
        "final_states": select(Registration.state, func.count()).where(Registration.state.in_(FINAL_STATES))
        .group_by(Registration.state),
        "attention": select(func.count()).select_from(Registration).where(Registration.attention.is_not(None)),
        "backlog": select(
            func.count().filter(and_(Registration.state == State.PAID.value, due_condition(now, grace))),
            func.count().filter(and_(Registration.state == State.COMPLETING.value, stale_condition(stale_cutoff))),
            func.min(func.coalesce(Registration.paid_at, Registration.created_at)),
        ).where(Registration.state.in_((State.PAID.value, State.COMPLETING.value))),
        "access_differs": select(func.count()).select_from(Registration).where(text(ACCESS_DIFFERS)),
    }


def database_facts(settings, now=None) -> dict:
    """Registrations by state, needing attention, and the backlog, read now."""
    now = now or utcnow()
    queries = database_queries(settings, now)
    by_state = dict(db.session.execute(queries["live_states"]).all())
    cache = current_app.extensions.setdefault("metrics_final_states", {"at": None, "counts": {}})
    if cache["at"] is None or time.monotonic() - cache["at"] >= FINAL_COUNTS_TTL:
        cache["counts"] = dict(db.session.execute(queries["final_states"]).all())
        cache["at"] = time.monotonic()
    by_state.update(cache["counts"])
    attention = db.session.scalar(queries["attention"])
    due, stale, oldest = db.session.execute(queries["backlog"]).one()
    differs = db.session.scalar(queries["access_differs"])
    db.session.commit()  # ends the read transaction
    return {"by_state": {s.value: by_state.get(s.value, 0) for s in State}, "attention": attention,
            "due": due, "stale": stale, "access_differs": differs,
            "oldest_paid_age": max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0}


def _database_families() -> list:
    started = time.perf_counter()
    try:
        facts = database_facts(current_app.config["SETTINGS"])
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("metrics: the database could not be read (%s)", type(exc).__name__)
        facts = None
    families = [GaugeMetricFamily("paygate_database_up", "Whether this scrape could read the database.",
                                  value=1 if facts else 0)]
    if facts:
        states = GaugeMetricFamily("paygate_registrations", "Registrations by state.", labels=["state"])
        for state, count in facts["by_state"].items():
            states.add_metric([state], count)
        families += [
            states,
            GaugeMetricFamily("paygate_registrations_needing_attention",
                              "Registrations an operator must look at (any reason, any state).",
                              value=facts["attention"]),
            GaugeMetricFamily("paygate_completions_due",
                              "Paid registrations whose completion at LTIaaS is due now (the worker's backlog).",
                              value=facts["due"]),
            GaugeMetricFamily("paygate_completions_stale",
                              "Completion attempts running longer than the stale bound (cut short).",
                              value=facts["stale"]),
            GaugeMetricFamily("paygate_access_differs",
                              "Platforms whose access differs from what LTIaaS was last told.",
                              value=facts["access_differs"]),
            GaugeMetricFamily("paygate_paid_not_completed_oldest_age_seconds",
                              "Age of the oldest paid registration not yet completed (paid or completing), "
                              "since its payment; 0 when there is none.", value=facts["oldest_paid_age"]),
        ]
    families.append(GaugeMetricFamily("paygate_metrics_database_seconds",
                                      "Time this scrape spent reading the database.",
                                      value=time.perf_counter() - started))
    return families


def exposition(with_database: bool) -> bytes:
    """The Prometheus text: every process's metrics (multiprocess mode) or this one's, then the database's."""
    if MULTIPROCESS_DIR:
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry = REGISTRY
    output = generate_latest(registry)
    if with_database:
        scraped = CollectorRegistry(auto_describe=False)
        scraped.register(_Families(_database_families()))
        output += generate_latest(scraped)
    return output


# ---------------------------------------------------------------------------------------------
# GET /metrics

def token_ok(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time (digests: the length does not leak)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.strip().encode("utf-8", "surrogatepass")).digest(),
                               digest(token.encode("utf-8")).digest())


_PRIVATE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


@bp.get("/metrics")
def metrics_view():
    token = current_app.config["SETTINGS"].metrics_token
    if not token:
        abort(404)
    if not token_ok(request.headers.get("Authorization"), token):
        response = jsonify(error="Unauthorized", message="GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.")
        response.status_code = 401
        response.headers.update(_PRIVATE)
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = Response(exposition(with_database=True), mimetype=None, content_type=CONTENT_TYPE_LATEST)
    response.headers.update(_PRIVATE)
    return response


def init_app(app: Flask) -> None:
    """Register /metrics and the request hooks (first, so that the latency covers the other hooks)."""
    app.register_blueprint(bp)
    app.before_request(_started)
    app.after_request(_answered)


# ---------------------------------------------------------------------------------------------
# The worker command's own endpoint: its passes and the calls it makes are in its process only.

def serve_worker_metrics(port: int, token: str | None, host: str = "0.0.0.0"):
    """Serve this process's metrics at http://host:port/metrics with the same bearer rule, in a daemon
    thread; returns the server (its `shutdown()` stops it), or None without a token."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
    from socketserver import ThreadingMixIn

    if not token:
        log.warning("WORKER_METRICS_PORT is set but METRICS_TOKEN is not: the worker serves no metrics")
        return None

    def app(environ, start_response):
        private = list(_PRIVATE.items())
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "application/json")] + private)
            return [b'{"error": "Not Found"}']
        if not token_ok(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')] + private)
            return [b'{"error": "Unauthorized"}']
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)] + private)
        return [exposition(with_database=False)]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(host, port, app, server_class=Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("worker metrics at http://%s:%s/metrics", host, server.server_port)
    return server
