"""Prometheus metrics: GET /metrics behind its bearer token, the counters moving with the flow, webhooks and
LTIaaS calls, no id or token as a label, the database's gauges, and the same totals under gunicorn whichever
of its two worker processes answers."""

import glob
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from paygate.core import telemetry
from paygate.core.db import db, utcnow
from paygate.core.models import Registration, State, VendorMessage
from paygate.ops import metrics_page
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.vendor import messages as vendor_messages
from tests.helpers.webhooks import deliver

TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def metrics_app(database_url, monkeypatch):
    monkeypatch.setattr(metrics_page, "FINAL_COUNTS_TTL", 0.0)  # every scrape counts every state
    app = make_app(database_url, metrics_token=TOKEN)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def mclient(metrics_app):
    return metrics_app.test_client()


def scrape(client) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    return parse(response.text)


def parse(body: str) -> dict:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ---------------------------------------------------------------------------------------------
# the token


def test_metrics_are_not_served_without_a_token_setting(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_need_the_bearer_token(mclient):
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ):
        response = mclient.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"] == "Unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.headers["Cache-Control"] == "no-store"
        assert TOKEN not in response.text
    response = mclient.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain") and "version=" in response.content_type
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "paygate_http_requests_total" in response.text and "paygate_registrations" in response.text


# ---------------------------------------------------------------------------------------------
# counters


def test_counters_move_with_the_flow_a_webhook_and_ltiaas_calls(mclient, stripe_api, ltiaas_api):
    before = scrape(mclient)
    _registration_id, token, _ = open_frame(mclient, ltiaas_api)  # pre-approval: LTIaaS get_registration
    assert mclient.get(f"/flow/{token}/pay").status_code == 303  # Stripe: price, checkout session
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    # The webhook records the payment; Complete Registration runs after the answer.
    response = deliver(mclient, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    assert response.status_code == 200 and response.get_json()["result"] == "paid"
    assert status(mclient, token)["phase"] == "done"
    after = scrape(mclient)

    assert moved(before, after, "paygate_http_requests_total", route="/pre-approval", method="GET", status="200") == 1
    assert (
        moved(before, after, "paygate_http_requests_total", route="/flow/<token>/pay", method="GET", status="303") == 1
    )
    assert (
        moved(before, after, "paygate_http_requests_total", route="/webhooks/stripe", method="POST", status="200") == 1
    )
    assert moved(before, after, "paygate_http_request_duration_seconds_count", route="/pre-approval", method="GET") == 1
    assert moved(before, after, "paygate_webhook_events_total", type="checkout.session.completed", outcome="paid") == 1
    for operation in ("get_registration", "complete_registration"):
        assert moved(before, after, "paygate_ltiaas_calls_total", operation=operation, outcome="ok") == 1
        assert moved(before, after, "paygate_ltiaas_call_duration_seconds_count", operation=operation) == 1
    assert moved(before, after, "paygate_stripe_calls_total", operation="checkout_session.create", outcome="ok") == 1
    assert moved(before, after, "paygate_stripe_calls_total", operation="checkout_session.retrieve", outcome="ok") >= 1
    assert value(after, "paygate_registrations", state="completed") == 1
    assert value(after, "paygate_registrations", state="pending") == 0
    assert value(after, "paygate_database_up") == 1

    # A repeat is "already paid"; a type the service does not handle is "other", ignored; a bad signature
    # is counted without trusting anything of the body.
    deliver(mclient, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    deliver(
        mclient, stripe_api, {**stripe_api.event("checkout.session.completed", session_id), "type": "customer.created"}
    )
    deliver(mclient, stripe_api, stripe_api.event("checkout.session.completed", session_id), secret="whsec_wrong")
    last = scrape(mclient)
    assert (
        moved(after, last, "paygate_webhook_events_total", type="checkout.session.completed", outcome="already_paid")
        == 1
    )
    assert moved(after, last, "paygate_webhook_events_total", type="other", outcome="ignored") == 1
    assert moved(after, last, "paygate_webhook_events_total", type="unverified", outcome="refused_signature") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failed_ltiaas_and_stripe_calls_are_counted_by_outcome(mclient, stripe_api, ltiaas_api):
    ltiaas_api.complete_failures = [503, requests.ConnectTimeout("connect timeout")]
    before = scrape(mclient)
    _, token, _ = open_frame(mclient, ltiaas_api)
    mclient.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    deliver(mclient, stripe_api, stripe_api.event("checkout.session.completed", session_id))  # Complete: 503
    with mclient.application.app_context():
        from paygate.sales import fulfilment

        reg = db.session.scalars(select(Registration)).one()
        reg.next_attempt_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        fulfilment.complete(reg, "test")  # Complete: connect timeout
    after = scrape(mclient)
    assert (
        moved(before, after, "paygate_ltiaas_calls_total", operation="complete_registration", outcome="http_5xx") == 1
    )
    assert moved(before, after, "paygate_ltiaas_calls_total", operation="complete_registration", outcome="timeout") == 1
    assert value(after, "paygate_registrations", state="paid") == 1
    assert telemetry.call_outcome(telemetry.stripe.APIConnectionError("down")) == "connection_error"
    assert telemetry.call_outcome(telemetry.stripe.RateLimitError("slow down", http_status=429)) == "rate_limited"
    assert telemetry.call_outcome(telemetry.stripe.APIError("oops", http_status=500)) == "http_5xx"


def test_every_stripe_call_has_a_fixed_operation_name():
    source = Path(telemetry.__file__).parent.parent.joinpath("gateways", "payments", "client.py").read_text()
    from paygate.gateways.payments import OPERATIONS

    assert set(re.findall(r'_call\("([^"]+)"', source)) <= set(OPERATIONS)
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", op) for op in OPERATIONS.values())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_token_id_or_path_becomes_a_label(mclient, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(mclient, ltiaas_api)
    mclient.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    mclient.get(f"/flow/{token}/paid?session_id={session['id']}")
    deliver(mclient, stripe_api, stripe_api.event("checkout.session.completed", session["id"]))
    assert status(mclient, token)["phase"] == "done"
    mclient.get("/flow/not-a-real-flow-token-0123456789/status")  # a 404 under a known rule
    mclient.get(f"/no/such/path/{token}")  # no rule at all
    mclient.open(f"/flow/{token}/status", method="BREW")  # a method nobody routes
    with mclient.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        secrets_ = {
            token,
            registration_id,
            session["id"],
            reg.payment_intent_id,
            reg.platform_id,
            "not-a-real-flow-token-0123456789",
        }
    response = mclient.get("/metrics", headers=AUTH)
    labels = {
        v
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        for k, v in s.labels.items()
        if k != "le"
    }
    assert labels, "no labels at all?"
    for label in labels:
        assert not any(secret and secret in label for secret in secrets_), label
        # URL rules as Flask writes them (the local stand-ins' include "<any(activate, deactivate):action>")
        assert re.fullmatch(r"[A-Za-z0-9_./<>:(), -]+", label), label
    routes = {
        v
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        for k, v in s.labels.items()
        if k == "route"
    }
    assert {"/flow/<token>/status", "/flow/<token>/paid", "/pre-approval", telemetry.UNMATCHED} <= routes
    assert "other" in {
        s.labels.get("method") for family in text_string_to_metric_families(response.text) for s in family.samples
    }


# ---------------------------------------------------------------------------------------------
# the database's gauges and the worker


def _registration(n: int, state: str, **values) -> Registration:
    return Registration(
        registration_id=f"R-metrics-{n}",
        flow_token=f"flow-metrics-{n}",
        state=state,
        lms_url="https://lms.example",
        price_id="price_registration",
        amount=4900,
        currency="usd",
        **values,
    )


def test_registrations_by_state_attention_and_backlog_are_read_at_scrape_time(mclient):
    now = utcnow()
    with mclient.application.app_context():
        db.session.add_all(
            [
                _registration(1, State.PENDING.value),
                _registration(
                    2, State.PAID.value, paid_at=now - timedelta(minutes=30), next_attempt_at=now - timedelta(seconds=5)
                ),  # a retry due
                _registration(
                    3, State.PAID.value, paid_at=now - timedelta(minutes=2), next_attempt_at=now + timedelta(minutes=5)
                ),  # backing off: not due
                _registration(
                    4,
                    State.COMPLETING.value,
                    paid_at=now - timedelta(minutes=10),
                    attempt_started_at=now - timedelta(hours=1),
                ),  # cut short
                _registration(5, State.NEEDS_ATTENTION.value, attention="completion_refused"),
                _registration(
                    6,
                    State.COMPLETED.value,
                    platform_id="P6",
                    platform_active=True,
                    access_wanted=False,
                    attention="disputed",
                ),  # LTIaaS not yet told; attention beside "completed"
                _registration(7, State.COMPLETED.value, platform_id="P7", platform_active=True, access_wanted=True),
            ]
        )
        db.session.commit()
    samples = scrape(mclient)
    assert {state.value: value(samples, "paygate_registrations", state=state.value) for state in State} == {
        "pending": 1,
        "paid": 2,
        "completing": 1,
        "completed": 2,
        "needs_attention": 1,
        "refunded": 0,
        "abandoned": 0,
    }
    assert value(samples, "paygate_registrations_needing_attention") == 2
    assert value(samples, "paygate_completions_due") == 1
    assert value(samples, "paygate_completions_stale") == 1
    assert value(samples, "paygate_access_differs") == 1
    assert 30 * 60 - 5 <= value(samples, "paygate_paid_not_completed_oldest_age_seconds") <= 30 * 60 + 60
    assert value(samples, "paygate_metrics_database_seconds") > 0
    assert value(samples, "paygate_vendor_messages_pending") == 0


def test_events_the_vendor_has_not_received_are_counted_with_the_oldest_ones_age(mclient):
    written = vendor_messages(mclient.application, licences=2, per_licence=2)
    with mclient.application.app_context():
        first = db.session.scalars(select(VendorMessage).order_by(VendorMessage.id)).first()
        first.created_at = utcnow() - timedelta(hours=2)  # the endpoint has refused it for two hours
        first.attempts = 5
        delivered = db.session.scalars(select(VendorMessage).where(VendorMessage.licence_pk != first.licence_pk)).all()
        for message in delivered:
            message.status = "delivered"
        db.session.commit()
    assert sum(len(ids) for ids in written.values()) == 4
    samples = scrape(mclient)
    assert value(samples, "paygate_vendor_messages_pending") == 2
    assert 2 * 3600 <= value(samples, "paygate_vendor_messages_oldest_pending_age_seconds") <= 2 * 3600 + 60


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scrape_without_the_database_still_answers(mclient, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database down"))

    monkeypatch.setattr(metrics_page, "database_facts", down)
    samples = scrape(mclient)
    assert value(samples, "paygate_database_up") == 0
    assert ("paygate_registrations", frozenset({("state", "paid")})) not in samples
    assert (
        "paygate_http_requests_total",
        frozenset({("route", "/metrics"), ("method", "GET"), ("status", "200")}),
    ) in samples


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_passes_are_timed_and_served_on_the_worker_port(mclient):
    from paygate.ops import worker

    before = scrape(mclient)
    with mclient.application.app_context():
        worker.run_once()
    after = scrape(mclient)
    assert moved(before, after, "paygate_worker_pass_duration_seconds_count") == 1
    assert time.time() - 60 < value(after, "paygate_worker_last_pass_timestamp_seconds") <= time.time()
    assert value(after, "paygate_worker_last_pass_duration_seconds") >= 0

    server = metrics_page.serve_worker_metrics(0, TOKEN, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(url + "/metrics", timeout=5).status_code == 401
        assert requests.get(url + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        assert requests.get(url + "/", headers=AUTH, timeout=5).status_code == 404
        response = requests.get(url + "/metrics", headers=AUTH, timeout=5)
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        served = parse(response.text)
        assert value(served, "paygate_worker_pass_duration_seconds_count") >= 1
        assert not any(name.startswith("paygate_registrations") for name, _ in served)  # the web's, not here
    finally:
        server.shutdown()
        server.server_close()
    assert metrics_page.serve_worker_metrics(0, None) is None  # no token: nothing served


# ---------------------------------------------------------------------------------------------
# gunicorn with two worker processes: the same totals whichever answers


@pytest.fixture(scope="module")
def gunicorn_database():
    from tests.helpers.apps import own_database

    yield from own_database("metrics")


def _per_process(directory: str, route: str) -> dict[str, float]:
    """paygate_http_requests_total{route=...} summed over statuses, per worker process (its counter file)."""
    counts = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        pid = os.path.basename(path)[len("counter_") : -len(".db")]
        total = 0.0
        for key, val, _, _ in MmapedDict.read_all_values_from_file(path):
            _, name, labels, _ = json.loads(key)
            if name == "paygate_http_requests_total" and labels.get("route") == route:
                total += val
        counts[pid] = total
    return counts


@pytest.mark.postgres
def test_gunicorn_with_two_workers_shows_the_same_totals_whichever_answers(gunicorn_database, tmp_path):
    from tests.helpers.servers import PUBLIC_URL, Server, Upstreams, environment

    directory = tmp_path / "prometheus"
    directory.mkdir()
    # A file left by an earlier run: gunicorn.conf.py empties the directory at master start.
    stale = MmapedDict(str(directory / "counter_1.db"))
    stale.write_value(
        mmap_key(
            "paygate_http_requests",
            "paygate_http_requests_total",
            ["route", "method", "status"],
            ["/healthz", "GET", "200"],
            "old run",
        ),
        1000.0,
        0.0,
    )
    stale.close()
    upstreams = Upstreams()
    server = Server(
        environment(
            gunicorn_database, upstreams, PUBLIC_URL, METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory)
        ),
        workers=2,
        threads=2,
    )
    try:
        server.wait_ready()
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 401

        def hit(_):
            with requests.Session() as s:  # a new connection each: gunicorn's workers take turns accepting
                assert s.get(server.url + "/healthz", headers={"Connection": "close"}, timeout=10).status_code == 200

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 400:
                list(pool.map(hit, range(40)))
                sent += 40
                if sum(1 for n in _per_process(str(directory), "/healthz").values() if n) >= 2:
                    break
        per_process = _per_process(str(directory), "/healthz")
        assert sum(1 for n in per_process.values() if n) == 2, per_process  # both workers answered some
        assert sum(per_process.values()) == sent  # the stale file's 1000 is gone

        def total(body: str, name: str, **labels) -> float:
            return sum(v for (n, ls), v in parse(body).items() if n == name and labels.items() <= dict(ls).items())

        def scrape(_=None) -> float:
            response = requests.get(server.url + "/metrics", headers={**AUTH, "Connection": "close"}, timeout=10)
            assert response.status_code == 200, response.text
            assert total(response.text, "paygate_http_requests_total", route="/healthz") == sent
            assert total(response.text, "paygate_registrations") == 0
            return total(response.text, "paygate_http_requests_total", route="/metrics", status="200")

        # One scrape alone (it counts exactly the ones before it, whichever process answered them), then four
        # at once, so that both workers are busy and both answer some: an idle worker may win every accept.
        scrapes, answered_by = 0, {}
        with ThreadPoolExecutor(4) as pool:
            for _ in range(20):
                assert scrape() == scrapes
                scrapes += 1
                assert all(scrapes <= n < scrapes + 4 for n in pool.map(scrape, range(4)))
                scrapes += 4
                answered_by = _per_process(str(directory), "/metrics")
                if scrapes >= 10 and sum(1 for n in answered_by.values() if n) == 2:
                    break
        assert sum(1 for n in answered_by.values() if n) == 2, answered_by  # both workers answered scrapes
        print(
            f"\n{sent} requests answered per process {per_process}; {scrapes} scrapes, the /metrics route "
            f"per process {answered_by}: every scrape showed {sent}"
        )
        assert "Traceback" not in server.output(tail=0)
    finally:
        server.stop()
        upstreams.close()
