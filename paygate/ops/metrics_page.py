"""The metrics page: `GET /metrics` (bearer METRICS_TOKEN) and the worker command's own endpoint.

What every process records is defined in paygate/core/telemetry.py. Under gunicorn, `gunicorn.conf.py` sets
PROMETHEUS_MULTIPROC_DIR before any worker process imports prometheus_client: each process writes its values
to its own files there, and the view adds them up (`MultiProcessCollector`), so the totals are the same
whichever worker answers. Without it (flask's dev server, the tests, the worker command) the process's own
registry is served.

Registrations by state, those needing attention and the worker's backlog are read from the database at
scrape time (a GROUP BY on an indexed column and a few indexed counts): right whichever process answers,
and no process has to keep them.
"""

import hashlib
import hmac
import logging
import threading
import time
from datetime import timedelta

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import and_, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from paygate.core import telemetry
from paygate.core.db import db, utcnow
from paygate.core.models import ACCESS_DIFFERS, Notification, Registration, State, VendorMessage
from paygate.ops.worker import due_condition, stale_condition

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)


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
    grace = timedelta(seconds=settings.worker_grace_seconds)
    stale_cutoff = now - timedelta(seconds=settings.stale_after_seconds)
    return {
        "live_states": select(Registration.state, func.count())
        .where(Registration.state.in_(LIVE_STATES))
        .group_by(Registration.state),
        "final_states": select(Registration.state, func.count())
        .where(Registration.state.in_(FINAL_STATES))
        .group_by(Registration.state),
        "attention": select(func.count()).select_from(Registration).where(Registration.attention.is_not(None)),
        "backlog": select(
            func.count().filter(and_(Registration.state == State.PAID.value, due_condition(now, grace))),
            func.count().filter(and_(Registration.state == State.COMPLETING.value, stale_condition(stale_cutoff))),
            func.min(func.coalesce(Registration.paid_at, Registration.created_at)),
        ).where(Registration.state.in_((State.PAID.value, State.COMPLETING.value))),
        "access_differs": select(func.count()).select_from(Registration).where(text(ACCESS_DIFFERS)),
        # The outbox's backlog for the vendor's systems, on its (status, next_attempt_at) index.
        "vendor_pending": select(func.count(), func.min(VendorMessage.created_at)).where(
            VendorMessage.status == "pending"
        ),
        # Notifications to operators not sent yet, on their (status, next_attempt_at) index.
        "notify_pending": select(func.count(), func.min(Notification.created_at)).where(
            Notification.status == "pending"
        ),
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
    vendor_pending, vendor_oldest = db.session.execute(queries["vendor_pending"]).one()
    notify_pending, notify_oldest = db.session.execute(queries["notify_pending"]).one()
    db.session.commit()  # ends the read transaction
    return {
        "by_state": {s.value: by_state.get(s.value, 0) for s in State},
        "attention": attention,
        "due": due,
        "stale": stale,
        "access_differs": differs,
        "oldest_paid_age": max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
        "vendor_pending": vendor_pending,
        "vendor_oldest_age": max(0.0, (now - vendor_oldest).total_seconds()) if vendor_oldest is not None else 0.0,
        "notify_pending": notify_pending,
        "notify_oldest_age": max(0.0, (now - notify_oldest).total_seconds()) if notify_oldest is not None else 0.0,
    }


def _database_families() -> list:
    started = time.perf_counter()
    try:
        facts = database_facts(current_app.config["SETTINGS"])
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("metrics: the database could not be read (%s)", type(exc).__name__)
        facts = None
    families = [
        GaugeMetricFamily(
            "paygate_database_up", "Whether this scrape could read the database.", value=1 if facts else 0
        )
    ]
    if facts:
        states = GaugeMetricFamily("paygate_registrations", "Registrations by state.", labels=["state"])
        for state, count in facts["by_state"].items():
            states.add_metric([state], count)
        families += [
            states,
            GaugeMetricFamily(
                "paygate_registrations_needing_attention",
                "Registrations an operator must look at (any reason, any state).",
                value=facts["attention"],
            ),
            GaugeMetricFamily(
                "paygate_completions_due",
                "Paid registrations whose completion at LTIaaS is due now (the worker's backlog).",
                value=facts["due"],
            ),
            GaugeMetricFamily(
                "paygate_completions_stale",
                "Completion attempts running longer than the stale bound (cut short).",
                value=facts["stale"],
            ),
            GaugeMetricFamily(
                "paygate_access_differs",
                "Platforms whose access differs from what LTIaaS was last told.",
                value=facts["access_differs"],
            ),
            GaugeMetricFamily(
                "paygate_paid_not_completed_oldest_age_seconds",
                "Age of the oldest paid registration not yet completed (paid or completing), "
                "since its payment; 0 when there is none.",
                value=facts["oldest_paid_age"],
            ),
            GaugeMetricFamily(
                "paygate_vendor_messages_pending",
                "Events for the vendor's systems not delivered yet (being retried included).",
                value=facts["vendor_pending"],
            ),
            GaugeMetricFamily(
                "paygate_vendor_messages_oldest_pending_age_seconds",
                "Age of the oldest event for the vendor's systems not delivered yet; 0 when there is none.",
                value=facts["vendor_oldest_age"],
            ),
            GaugeMetricFamily(
                "paygate_notifications_pending",
                "Notifications to operators not e-mailed yet (being retried included).",
                value=facts["notify_pending"],
            ),
            GaugeMetricFamily(
                "paygate_notifications_oldest_pending_age_seconds",
                "Age of the oldest notification to operators not e-mailed yet; 0 when there is none.",
                value=facts["notify_oldest_age"],
            ),
        ]
    families.append(
        GaugeMetricFamily(
            "paygate_metrics_database_seconds",
            "Time this scrape spent reading the database.",
            value=time.perf_counter() - started,
        )
    )
    return families


def exposition(with_database: bool) -> bytes:
    """The Prometheus text: every process's metrics (multiprocess mode) or this one's, then the database's."""
    if telemetry.MULTIPROCESS_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=telemetry.MULTIPROCESS_DIR)
    else:
        registry = telemetry.REGISTRY
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
    return hmac.compare_digest(
        digest(given.strip().encode("utf-8", "surrogatepass")).digest(), digest(token.encode("utf-8")).digest()
    )


_PRIVATE = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


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
    """Register /metrics and the request telemetry (first, so that the latency covers the other hooks)."""
    telemetry.init_app(app)
    app.register_blueprint(bp)


# ---------------------------------------------------------------------------------------------
# The worker command's own endpoint: its passes and the calls it makes are in its process only.


def serve_worker_metrics(port: int, token: str | None, host: str = "0.0.0.0"):  # noqa: S104 - scraped from outside
    """Serve this process's metrics at http://host:port/metrics with the same bearer rule, in a daemon
    thread; returns the server (its `shutdown()` stops it), or None without a token."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    if not token:
        log.warning("WORKER_METRICS_PORT is set but METRICS_TOKEN is not: the worker serves no metrics")
        return None

    def app(environ, start_response):
        private = list(_PRIVATE.items())
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "application/json"), *private])
            return [b'{"error": "Not Found"}']
        if not token_ok(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("WWW-Authenticate", 'Bearer realm="metrics"'), *private],
            )
            return [b'{"error": "Unauthorized"}']
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), *private])
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
