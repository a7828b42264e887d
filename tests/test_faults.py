"""Fault injection: between "Stripe says paid" and "LTIaaS says completed", everything that fails.

One test (or one parametrized test) per fault of the issue "No payment is ever lost". Each runs on
SQLite and on PostgreSQL and asserts the end state, the number of Complete calls, what the frame
says and what the timeline says. The worker and reconciliation are driven directly, with a clock
moved forward where a retry must become due.
"""
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from paygate.application import create_app
from paygate.core.db import db
from paygate.core.models import CheckoutSession, Registration, StripeEvent, TimelineEntry
from paygate.ops import worker
from paygate.sales.reconcile import reconcile

from .conftest import BASE_CONFIG, make_app
from .fakes import CLOSE_HTML
from .test_flow import open_frame, status
from .test_webhooks import deliver

FINISHING = "Payment received. Finishing the registration"
SAFE = "Your payment is recorded and safe"
NEXT_STEP = "will finish it or refund you"


# ---------------------------------------------------------------------------------------------
# helpers

def load(client, registration_id: str | None = None) -> Registration:
    """The registration (the only one, or by LTIaaS id), with its timeline and sessions loaded."""
    with client.application.app_context():
        query = select(Registration)
        if registration_id:
            query = query.where(Registration.registration_id == registration_id)
        reg = db.session.scalars(query).one()
        reg.timeline, reg.checkout_sessions  # load before the context ends
        return reg


def states(reg: Registration) -> list[str]:
    return [e.to_state for e in reg.timeline if e.kind == "state"]


def run_worker(client, now=None, **kwargs) -> dict:
    with client.application.app_context():
        return worker.run_once(now=now, **kwargs)


def snapshot(client) -> dict:
    """Everything a repeated run must leave alone."""
    with client.application.app_context():
        return {
            "registrations": sorted((r.registration_id, r.state, r.attention, r.payment_session_id,
                                     r.platform_id, r.attempt_count)
                                    for r in db.session.scalars(select(Registration))),
            "timeline": db.session.scalar(select(func.count()).select_from(TimelineEntry)),
            "sessions": sorted((s.session_id, s.status, s.payment_status)
                               for s in db.session.scalars(select(CheckoutSession))),
            "events": db.session.scalar(select(func.count()).select_from(StripeEvent)),
        }


def no_refund(stripe_api) -> bool:
    return not any(kind == "refund" for kind, _ in stripe_api.calls)


@pytest.fixture
def paid(client, stripe_api, ltiaas_api):
    """A registration whose Checkout Session Stripe says is paid: (registration_id, token, session_id)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    return registration_id, token, session_id


@pytest.fixture
def ltiaas_error_bodies(mocked, ltiaas_api):
    """LTIaaS's own error body for the next failing Complete calls (the fake sends a generic one)."""
    bodies: list[dict] = []
    route = next(r for r in mocked.registered() if isinstance(r, responses.CallbackResponse)
                 and r.method == "POST" and "complete" in getattr(r.url, "pattern", str(r.url)))
    original = route.callback

    def callback(request):
        status_code, headers, body = original(request)
        if status_code >= 400 and bodies:
            body = json.dumps(bodies.pop(0))
        return status_code, headers, body

    route.callback = callback
    return bodies


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, no handler catches it."""


# ---------------------------------------------------------------------------------------------
# LTIaaS fails on Complete, transiently

TRANSIENT = [
    pytest.param(500, True, id="500"),
    pytest.param(502, True, id="502"),
    pytest.param(503, False, id="503"),
    pytest.param(504, True, id="504"),
    pytest.param(429, False, id="429"),
    pytest.param(requests.ReadTimeout("Read timed out. (read timeout=2.0)"), True, id="timeout"),
    pytest.param(requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, "
                                          "'Connection reset by peer'))"), True, id="reset"),
    pytest.param(requests.ConnectionError("Failed to establish a new connection: [Errno 111] "
                                          "Connection refused"), False, id="refused"),
    pytest.param(requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), True,
                 id="broken-body"),
]


@pytest.mark.parametrize("failure, uncertain", TRANSIENT)
def test_transient_complete_failures_are_retried_with_backoff_until_success(
        client, stripe_api, ltiaas_api, paid, failure, uncertain):
    registration_id, token, session_id = paid
    ltiaas_api.complete_failures = [failure, failure]
    completed_event = stripe_api.event("checkout.session.completed", session_id)
    response = deliver(client, stripe_api, completed_event)
    assert response.status_code == 200  # the payment is recorded; Stripe has nothing to retry
    assert ltiaas_api.complete_calls == [registration_id]

    reg = load(client)
    assert reg.state == "paid" and reg.payment_session_id == session_id and reg.amount_paid == 4900
    assert reg.attempt_count == 1 and reg.attempt_uncertain is uncertain
    assert reg.last_error["retryable"] is True
    first_due = reg.next_attempt_at
    assert timedelta(seconds=4) < first_due - reg.paid_at < timedelta(seconds=7)
    frame = status(client, token)
    assert frame["phase"] == "wait" and frame["message"].startswith(FINISHING)

    # Not due yet: neither the worker nor a repeated webhook nor the return tries early.
    assert run_worker(client)["attempted"] == 0
    assert deliver(client, stripe_api, completed_event).status_code == 200
    assert client.get(f"/flow/{token}/paid?session_id={session_id}").status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]

    # Due: the second attempt fails too, and the next wait doubles.
    counts = run_worker(client, now=first_due)
    assert counts["attempted"] == 1 and counts["retrying"] == 1
    reg = load(client)
    assert reg.state == "paid" and reg.attempt_count == 2
    assert timedelta(seconds=10) <= reg.next_attempt_at - first_due < timedelta(seconds=11)
    assert status(client, token)["message"].startswith(FINISHING)

    # The third attempt succeeds: the frame closes.
    counts = run_worker(client, now=reg.next_attempt_at)
    assert counts["completed"] == 1
    assert ltiaas_api.complete_calls == [registration_id] * 3
    frame = status(client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
    reg = load(client)
    assert reg.state == "completed" and reg.attention is None and reg.attempt_uncertain is False
    assert states(reg) == ["pending", "paid", "completing", "paid", "completing", "paid", "completing",
                           "completed"]
    retries = [e for e in reg.timeline if e.to_state == "paid"][1:]
    assert all("retrying in" in e.message for e in retries)
    assert [e.cause for e in reg.timeline if e.kind == "state"][-2:] == ["worker", "worker"]
    assert no_refund(stripe_api)


@pytest.mark.parametrize("failure, attention", [(503, "completion_expired"),
                                                (requests.ReadTimeout("timed out"), "completion_uncertain")])
def test_transient_failures_stop_when_the_lms_token_runs_out(client, stripe_api, ltiaas_api, paid, failure,
                                                              attention):
    registration_id, token, session_id = paid
    ltiaas_api.complete_failures = [failure] * 10
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    reg = load(client)
    past_deadline = reg.created_at + timedelta(minutes=61)
    counts = run_worker(client, now=past_deadline)
    assert counts["attempted"] == 1 and counts["needs_attention"] == 1
    assert ltiaas_api.complete_calls == [registration_id] * 2
    reg = load(client)
    assert reg.state == "needs_attention" and reg.attention == attention
    assert reg.payment_session_id == session_id and reg.next_attempt_at is None
    assert run_worker(client, now=past_deadline + timedelta(hours=1))["attempted"] == 0
    assert len(ltiaas_api.complete_calls) == 2
    frame = status(client, token)
    assert SAFE in frame["message"] and NEXT_STEP in frame["message"]
    assert no_refund(stripe_api)


# ---------------------------------------------------------------------------------------------
# LTIaaS refuses Complete, permanently

@pytest.mark.parametrize("status_code, body", [
    (404, {"status": 404, "error": "Not Found", "details": {"message": "REGISTRATION_NOT_FOUND"}}),
    (400, {"status": 400, "error": "Bad Request", "details": {
        "message": "The LMS refused the registration", "externalError": True,
        "lmsResponse": {"error": "invalid_registration_token"}}}),
    (410, {"status": 410, "error": "Gone", "details": {"message": "REGISTRATION_ABANDONED"}}),
], ids=["unknown-id", "lms-external-error", "abandoned"])
def test_permanent_refusal_needs_an_operator_and_keeps_the_payment(
        client, stripe_api, ltiaas_api, ltiaas_error_bodies, paid, status_code, body):
    registration_id, token, session_id = paid
    ltiaas_api.complete_failures = [status_code]
    ltiaas_error_bodies.append(body)
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]

    reg = load(client)
    assert reg.state == "needs_attention" and reg.attention == "completion_refused"
    assert reg.payment_session_id == session_id and reg.amount_paid == 4900 and reg.payment_intent_id
    assert reg.last_error["status"] == status_code and reg.last_error["details"] == body["details"]
    assert reg.last_error["retryable"] is False
    last = reg.timeline[-1]
    assert last.to_state == "needs_attention" and last.message.startswith("LTIaaS refused the completion")
    assert last.details["details"] == body["details"] and last.cause.startswith("webhook evt_")

    frame = status(client, token)
    assert frame["phase"] == "wait" and SAFE in frame["message"] and NEXT_STEP in frame["message"]
    assert "html" not in frame

    # Nobody retries a refusal, and nobody refunds by themselves.
    assert run_worker(client, now=reg.created_at + timedelta(minutes=30))["attempted"] == 0
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    assert ltiaas_api.complete_calls == [registration_id]
    assert no_refund(stripe_api) and load(client).state == "needs_attention"


# ---------------------------------------------------------------------------------------------
# A process dies mid-completion

@pytest.mark.parametrize("reached_ltiaas", [True, False], ids=["after-ltiaas-completed", "before-the-call"])
def test_a_process_killed_mid_completion_is_resolved_by_the_worker(
        client, stripe_api, ltiaas_api, paid, monkeypatch, reached_ltiaas):
    from paygate.gateways import ltiaas

    registration_id, token, session_id = paid
    original = ltiaas.Ltiaas.complete_registration

    def killed(self, *args, **kwargs):
        if reached_ltiaas:
            original(self, *args, **kwargs)  # LTIaaS registers the platform; the answer is lost
        raise Killed()

    monkeypatch.setattr(ltiaas.Ltiaas, "complete_registration", killed)
    with pytest.raises(Killed):
        deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    monkeypatch.setattr(ltiaas.Ltiaas, "complete_registration", original)
    calls_before = len(ltiaas_api.complete_calls)
    assert calls_before == (1 if reached_ltiaas else 0)

    reg = load(client)
    assert reg.state == "completing" and reg.payment_session_id == session_id
    started = reg.attempt_started_at
    assert status(client, token)["message"].startswith(FINISHING)

    # Within the bound the attempt may still be running somewhere: nobody touches it.
    bound = timedelta(seconds=client.application.config["SETTINGS"].stale_after_seconds)
    assert run_worker(client, now=started + bound - timedelta(seconds=1))["stale"] == 0
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    assert load(client).state == "completing" and len(ltiaas_api.complete_calls) == calls_before

    counts = run_worker(client, now=started + bound + timedelta(seconds=1))
    assert counts["stale"] == 1 and counts["attempted"] == 1
    reg = load(client)
    resolved = next(e for e in reg.timeline if e.cause == "worker" and e.from_state == "completing")
    assert resolved.to_state == "paid" and "outcome is unknown" in resolved.message
    assert ltiaas_api.complete_calls == [registration_id] * (calls_before + 1)
    frame = status(client, token)
    if reached_ltiaas:
        # LTIaaS no longer knows the id: that is not a success, and not a reason to charge again.
        assert reg.state == "needs_attention" and reg.attention == "completion_uncertain"
        assert reg.last_error["status"] == 404 and "check LTIaaS" in reg.timeline[-1].message
        assert SAFE in frame["message"]
        assert len(stripe_api.sessions) == 1  # no second Checkout Session
        assert client.get(f"/flow/{token}/pay").status_code == 409  # and none can be opened
        assert run_worker(client, now=started + 2 * bound)["attempted"] == 0
    else:
        assert reg.state == "completed" and frame["phase"] == "done"
    assert states(reg)[:3] == ["pending", "paid", "completing"]
    assert no_refund(stripe_api)


def test_a_late_answer_after_the_attempt_was_given_up_is_still_the_completion(client, stripe_api, ltiaas_api,
                                                                             paid, monkeypatch):
    """An attempt that outlives the stale bound: its success wins over the retry's "unknown id"."""
    from paygate.gateways import ltiaas

    registration_id, token, session_id = paid
    original = ltiaas.Ltiaas.complete_registration
    late = {}

    def slow(self, *args, **kwargs):
        if not late:  # the first attempt: meanwhile the worker gives it up and retries
            late["started"] = True
            reg = db.session.scalars(select(Registration)).one()
            later = reg.attempt_started_at + timedelta(seconds=client.application.config["SETTINGS"]
                                                       .stale_after_seconds + 1)
            ctx = client.application.app_context()
            ctx.push()
            try:
                worker.run_once(now=later)  # resolves it as stale; the retry meets "unknown id"
            finally:
                ctx.pop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ltiaas.Ltiaas, "complete_registration", slow)
    # The first call registers the platform only after the retry: the retry gets 404 first.
    ltiaas_api.complete_failures = [404]
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    assert len(ltiaas_api.complete_calls) == 2
    reg = load(client)
    assert reg.state == "completed" and reg.platform_id and reg.attention is None
    assert status(client, token)["phase"] == "done"
    assert states(reg)[-4:] == ["paid", "completing", "needs_attention", "completed"]


# ---------------------------------------------------------------------------------------------
# Webhooks lost: reconcile

def test_lost_webhooks_are_recovered_by_reconcile_and_a_second_run_changes_nothing(
        client, stripe_api, ltiaas_api):
    paid_ids = []
    for _ in range(5):
        registration_id, token, _ = open_frame(client, ltiaas_api)
        client.get(f"/flow/{token}/pay")
        session_id = next(s["id"] for s in stripe_api.sessions.values()
                          if s["client_reference_id"] == registration_id)
        stripe_api.pay(session_id)
        paid_ids.append((registration_id, token, session_id))
    # The one webhook that arrives is signed with a wrongly rotated secret.
    refused = stripe_api.event("checkout.session.completed", paid_ids[0][2])
    assert deliver(client, stripe_api, refused, secret="whsec_rotated_wrongly").status_code == 400
    # Also listed: an unpaid session of ours, and a paid one of another integration on the account.
    _, unpaid_token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{unpaid_token}/pay")
    stripe_api.sessions["cs_test_other_integration"] = {
        **stripe_api.sessions[paid_ids[0][2]], "id": "cs_test_other_integration", "client_reference_id": None,
        "metadata": {"order": "42"}, "amount_total": 1500}
    assert all(status(client, token)["state"] == "pending" for _, token, _ in paid_ids)

    with client.application.app_context():
        counts = reconcile(since_hours=48, page_size=2)
    assert counts == {"listed": 7, "paid": 6, "known": 0, "fulfilled": 5, "completed": 5, "flagged": 0,
                      "foreign": 1, "errors": 0}
    pages = [url for kind, url in stripe_api.calls if kind == "list"]
    assert len(pages) == 4 and all("starting_after" in url for url in pages[1:])
    assert sorted(ltiaas_api.complete_calls) == sorted(r for r, _, _ in paid_ids)
    for registration_id, token, session_id in paid_ids:
        frame = status(client, token)
        assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
        reg = load(client, registration_id)
        assert reg.payment_session_id == session_id
        assert [(e.to_state, e.cause) for e in reg.timeline if e.kind == "state"][1:] == [
            ("paid", "reconcile"), ("completing", "reconcile"), ("completed", "reconcile")]
    assert status(client, unpaid_token)["state"] == "pending"

    before = snapshot(client)
    result = client.application.test_cli_runner().invoke(args=["reconcile", "--since-hours", "48"])
    assert result.exit_code == 0, result.output
    assert "fulfilled=0" in result.output and "known=5" in result.output and "foreign=1" in result.output
    assert snapshot(client) == before
    assert len(ltiaas_api.complete_calls) == 5

    # The secret is fixed and Stripe's retries arrive at last: acknowledged, nothing happens twice.
    assert deliver(client, stripe_api, refused).status_code == 200
    assert len(ltiaas_api.complete_calls) == 5 and snapshot(client)["registrations"] == before["registrations"]


def test_reconcile_reports_stripe_failures_and_keeps_what_it_did(client, stripe_api, ltiaas_api, paid, mocked):
    registration_id, token, _ = paid
    mocked.replace(responses.GET, stripe_list_pattern(mocked), status=500,
                   json={"error": {"type": "api_error", "message": "try later"}})
    result = client.application.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code != 0 and "could not list checkouts" in result.output
    assert "sk_test" not in result.output
    assert status(client, token)["state"] == "pending" and ltiaas_api.complete_calls == []


def stripe_list_pattern(mocked):
    return next(r.url for r in mocked.registered() if r.method == "GET"
                and getattr(r.url, "pattern", "").endswith(r"/v1/checkout/sessions(\?.*)?$"))


# ---------------------------------------------------------------------------------------------
# Events late, repeated or out of order

def test_late_repeated_and_out_of_order_events_never_move_a_state_backwards(client, stripe_api, ltiaas_api,
                                                                            paid):
    registration_id, token, session_id = paid
    # Out of order: the delayed method's success arrives before the first "completed" (sent unpaid).
    succeeded = stripe_api.event("checkout.session.async_payment_succeeded", session_id)
    first = stripe_api.event("checkout.session.completed", session_id)
    first["data"]["object"]["payment_status"] = "unpaid"
    assert deliver(client, stripe_api, succeeded).status_code == 200
    assert status(client, token)["phase"] == "done"

    for _ in range(100):  # the same event id a hundred times
        response = deliver(client, stripe_api, first)
        assert response.status_code == 200
    late_expired = stripe_api.event("checkout.session.expired", session_id, event_id="evt_late_expired")
    late_expired["data"]["object"]["status"] = "expired"
    late_failed = stripe_api.event("checkout.session.async_payment_failed", session_id, event_id="evt_late_failed")
    for late in (late_expired, late_failed, late_expired, late_failed):
        assert deliver(client, stripe_api, late).status_code == 200
    assert client.get(f"/flow/{token}/paid?session_id={session_id}").status_code == 200

    assert ltiaas_api.complete_calls == [registration_id]
    reg = load(client)
    assert reg.state == "completed" and states(reg) == ["pending", "paid", "completing", "completed"]
    assert reg.checkout_sessions[0].status == "complete" and reg.checkout_sessions[0].failed_at is None
    late_notes = [e for e in reg.timeline if e.kind == "event"]
    assert [e.message for e in late_notes] == ["Stripe confirmed the payment again; already recorded, ignored.",
                                               "Late 'expired' for the session that paid; ignored.",
                                               "Late 'failed' for the session that paid; ignored."]
    assert [e.cause for e in late_notes] == [f"webhook {first['id']} (checkout.session.completed)",
                                             "webhook evt_late_expired (checkout.session.expired)",
                                             "webhook evt_late_failed (checkout.session.async_payment_failed)"]
    with client.application.app_context():
        row = db.session.get(StripeEvent, first["id"])
        assert row.deliveries == 100 and row.registration_pk == reg.id and row.outcome == "already paid"
        assert db.session.get(StripeEvent, "evt_late_expired").deliveries == 2
        assert db.session.get(StripeEvent, succeeded["id"]).outcome == "paid"
    frame = status(client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML


# ---------------------------------------------------------------------------------------------
# A session that does not belong

@pytest.mark.parametrize("tamper, problem", [
    ({"amount_total": 100}, "amount"),
    ({"currency": "eur"}, "currency"),
    ({"_line_items": [{"price": {"id": "price_someone_elses"}, "quantity": 1}]}, "price"),
    ({"client_reference_id": "another-registration"}, "client_reference_id"),
    ({"metadata": {"registration_pk": "999999", "registration_id": "x"}}, "metadata.registration_pk"),
])
@pytest.mark.parametrize("path", ["webhook", "reconcile"])
def test_a_session_that_does_not_match_what_was_sold_is_flagged_not_fulfilled(
        client, stripe_api, ltiaas_api, path, tamper, problem):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.sessions[session_id].update(tamper)
    stripe_api.pay(session_id)
    if path == "webhook":
        response = deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
        assert response.status_code == 200 and response.get_json()["result"] == "mismatch"
    else:
        with client.application.app_context():
            assert reconcile()["flagged"] == 1
    assert ltiaas_api.complete_calls == []
    reg = load(client)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert reg.payment_session_id is None  # not counted as the registration's payment
    flagged = reg.timeline[-1]
    assert problem in flagged.details["mismatch"] and "does not match what was sold" in flagged.message
    assert SAFE in status(client, token)["message"]
    # Nothing picks it up later, and a second reconcile does not flag it again.
    before = snapshot(client)
    assert run_worker(client, now=reg.created_at + timedelta(minutes=10))["attempted"] == 0
    with client.application.app_context():
        assert reconcile()["fulfilled"] == 0
    assert snapshot(client) == before and ltiaas_api.complete_calls == []


def test_a_strangers_session_naming_our_registration_is_flagged(client, stripe_api, ltiaas_api):
    """A paid session we never created, whose metadata points at one of our registrations."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    reg = load(client)
    stripe_api.sessions["cs_test_stranger"] = {
        "id": "cs_test_stranger", "object": "checkout.session", "status": "open", "payment_status": "unpaid",
        "client_reference_id": "not-ours", "metadata": {"registration_pk": str(reg.id)},
        "amount_total": 4900, "currency": "usd", "payment_intent": None, "customer_details": None,
        "created": int(time.time()), "expires_at": int(time.time()) + 3600, "url": None,
        "_price": "price_registration"}
    stripe_api.pay("cs_test_stranger")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", "cs_test_stranger"))
    assert ltiaas_api.complete_calls == []
    reg = load(client)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert reg.timeline[-1].details["mismatch"] == ["client_reference_id"]


# ---------------------------------------------------------------------------------------------
# Stripe fails while creating the session

@pytest.mark.parametrize("failure", [429, 500, 503, "network"])
def test_stripe_failure_on_create_offers_a_retry_and_never_a_second_session(
        client, stripe_api, ltiaas_api, mocked, failure):
    _, token, _ = open_frame(client, ltiaas_api)
    create_url = "https://api.stripe.com/v1/checkout/sessions"
    if failure == "network":
        mocked.replace(responses.POST, create_url, body=requests.ConnectionError("Connection reset by peer"))
    else:
        stripe_api.fail_next_create.append(failure)
    failed = client.get(f"/flow/{token}/pay")
    assert failed.status_code == 503
    assert "Try again" in failed.text and "charged twice" in failed.text
    assert f'/flow/{token}/pay' in failed.text  # the retry link
    assert "sk_test_secret_key_for_tests" not in failed.text
    assert status(client, token)["phase"] == "pay"
    if failure == "network":
        mocked.replace(responses.CallbackResponse("POST", create_url, callback=stripe_api._create))

    retried = client.get(f"/flow/{token}/pay")
    assert retried.status_code == 303 and retried.headers["Location"] == stripe_api.only_session()["url"]
    keys = [call.request.headers["Idempotency-Key"] for call in mocked.calls
            if call.request.method == "POST" and call.request.url == create_url]
    assert len(keys) == 2
    if failure in (429, "network"):
        assert keys[0] == keys[1]  # nothing was kept under the key: the retry replays it safely
    else:
        assert keys[0] != keys[1]  # Stripe keeps a 5xx under its key: reusing it would replay the 5xx
    assert len(stripe_api.sessions) == 1  # one session either way: nobody can be charged twice


# ---------------------------------------------------------------------------------------------
# The database is briefly unavailable during a webhook

def _fail_once(engine, statement_starts: str):
    """Make the first statement starting with `statement_starts` fail as a lost connection would."""
    state = {"armed": True}

    def before(conn, cursor, statement, parameters, context, executemany):
        if state["armed"] and statement.lstrip().upper().startswith(statement_starts):
            state["armed"] = False
            raise OperationalError(statement, parameters,
                                   Exception("server closed the connection unexpectedly"))

    event.listen(engine, "before_cursor_execute", before)
    return lambda: event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("where", ["mid-transaction", "at-commit", "database-down"])
def test_database_unavailable_during_a_webhook_answers_5xx_and_writes_nothing(
        client, stripe_api, ltiaas_api, paid, database_url, where):
    registration_id, token, session_id = paid
    completed_event = stripe_api.event("checkout.session.completed", session_id)
    before = snapshot(client)
    app = client.application
    if where == "database-down":
        down_url = ("postgresql+psycopg://postgres@127.0.0.1:9/paygate_down" if database_url.startswith("postgresql")
                    else "sqlite:////nonexistent-directory/paygate.sqlite")
        down = create_app({**BASE_CONFIG, "database_url": down_url})
        response = deliver(down.test_client(), stripe_api, completed_event)
    else:
        with app.app_context():
            engine = db.engine
        if where == "mid-transaction":  # after the event row is inserted, before the state changes
            undo = _fail_once(engine, "UPDATE REGISTRATIONS")
        else:
            def fail_commit(conn):
                event.remove(engine, "commit", fail_commit)
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            event.listen(engine, "commit", fail_commit)
            undo = lambda: None  # noqa: E731  (removed when it fires)
        try:
            response = deliver(client, stripe_api, completed_event)
        finally:
            undo()
    assert response.status_code == 500
    assert response.get_json()["error"] == "Internal Server Error"
    assert snapshot(client) == before  # no event row, no state change, no timeline entry
    assert ltiaas_api.complete_calls == []
    assert status(client, token)["state"] == "pending"

    # Stripe delivers the same event again once the database is back.
    again = deliver(client, stripe_api, completed_event)
    assert again.status_code == 200 and again.get_json()["result"] == "paid"
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    with app.app_context():
        assert db.session.get(StripeEvent, completed_event["id"]).deliveries == 1


# ---------------------------------------------------------------------------------------------
# The webhook is answered promptly even when LTIaaS hangs

class HangingLtiaas:
    """A real LTIaaS stand-in over HTTP whose first Complete call hangs (requests' timeouts apply)."""

    def __init__(self, registration_id: str, api_key: str):
        self.registrations = {registration_id}
        self.calls: list[str] = []
        self.release = threading.Event()
        self.register_when_released = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the caller gave up long ago
                    pass

            def do_GET(self):
                rid = self.path.rsplit("/", 1)[1]
                if self.headers.get("Authorization") != f"Bearer {api_key}" or rid not in outer.registrations:
                    return self._send(404, {"status": 404, "error": "Not Found", "details": {}})
                self._send(200, {"url": "https://canvas.instructure.com", "familyCode": "canvas",
                                 "version": "cloud", "supportedScopes": [], "supportedMessages": []})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rid = self.path.split("/")[-2]
                outer.calls.append(rid)
                if len(outer.calls) == 1:
                    outer.release.wait(30)  # hangs far beyond the client's read timeout
                    if not outer.register_when_released:
                        return self._send(503, {"status": 503, "error": "Unavailable", "details": {}})
                if rid not in outer.registrations:
                    return self._send(404, {"status": 404, "error": "Not Found",
                                            "details": {"message": "REGISTRATION_NOT_FOUND"}})
                outer.registrations.discard(rid)
                self._send(200, {"platformId": "PLATFORM1", "html": CLOSE_HTML})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("hung_call_took_effect", [True, False], ids=["hung-call-registered", "hung-call-lost"])
def test_the_webhook_is_answered_promptly_when_ltiaas_hangs(database_url, stripe_api, mocked,
                                                            hung_call_took_effect):
    hanging = HangingLtiaas("hangs-on-complete", BASE_CONFIG["ltiaas_api_key"])
    mocked.add_passthru(hanging.url)
    try:
        app = make_app(database_url, ltiaas_url=hanging.url, ltiaas_timeout_seconds=1.0)
        client = app.test_client()
        page = client.get("/pre-approval?registrationId=hangs-on-complete")
        assert page.status_code == 200, page.text
        token = load(client).flow_token
        client.get(f"/flow/{token}/pay")
        session_id = stripe_api.only_session()["id"]
        stripe_api.pay(session_id)

        started = time.monotonic()
        response = deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
        elapsed = time.monotonic() - started
        print(f"\nwebhook answered in {elapsed:.2f} s while LTIaaS hung (read timeout 1.0 s)")
        assert response.status_code == 200
        assert elapsed < 3.0  # read timeout 1 s, plus the work around it
        assert hanging.calls == ["hangs-on-complete"]
        reg = load(client)
        assert reg.state == "paid" and reg.attempt_uncertain is True and reg.next_attempt_at is not None
        assert "did not answer in time" in reg.last_error["message"]
        assert status(client, token)["message"].startswith(FINISHING)

        # Later the hung call ends at LTIaaS, having registered the platform or not.
        hanging.register_when_released = hung_call_took_effect
        hanging.release.set()
        time.sleep(0.2)
        with app.app_context():
            counts = worker.run_once(now=reg.next_attempt_at)
        assert counts["attempted"] == 1 and len(hanging.calls) == 2
        reg = load(client)
        frame = status(client, token)
        if hung_call_took_effect:
            assert reg.state == "needs_attention" and reg.attention == "completion_uncertain"
            assert SAFE in frame["message"]
        else:
            assert reg.state == "completed" and frame["phase"] == "done"
        with app.app_context():
            db.engine.dispose()
    finally:
        hanging.close()


def test_every_ltiaas_call_is_bounded_by_default():
    from paygate.core.config import Settings
    settings = Settings(_env_file=None)
    assert 0 < settings.ltiaas_timeout_seconds <= 5
    assert settings.stale_after_seconds > settings.ltiaas_timeout_seconds + 3.05


def test_the_webhook_is_answered_within_a_second_while_ltiaas_hangs_and_completes_once_after(
        database_url, stripe_api, mocked):
    """Acknowledge first (DESIGN.md invariant 9), measured over real HTTP: LTIaaS takes 3 s to complete,
    the webhook's answer does not wait for it, and the registration completes once afterwards."""
    import requests

    from .live import free_port, serving
    hanging = HangingLtiaas("slow-complete", BASE_CONFIG["ltiaas_api_key"])
    mocked.add_passthru(hanging.url)
    port = free_port()
    mocked.add_passthru(f"http://127.0.0.1:{port}")
    try:
        app = make_app(database_url, ltiaas_url=hanging.url, ltiaas_timeout_seconds=5.0)
        client = app.test_client()
        assert client.get("/pre-approval?registrationId=slow-complete").status_code == 200
        token = load(client).flow_token
        client.get(f"/flow/{token}/pay")
        session_id = stripe_api.only_session()["id"]
        stripe_api.pay(session_id)
        threading.Timer(3.0, hanging.release.set).start()  # LTIaaS answers after 3 s
        body, headers = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
        with serving(app, port):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)  # the server is up and warm
            started = time.monotonic()
            response = requests.post(f"http://127.0.0.1:{port}/webhooks/stripe", data=body, headers=headers,
                                     timeout=10)
            answered = time.monotonic() - started
            assert response.status_code == 200 and response.json()["result"] == "paid"
            while load(client).state != "completed" and time.monotonic() - started < 10:
                time.sleep(0.05)
            completed = time.monotonic() - started
        print(f"\nwebhook answered in {answered:.2f} s; completed {completed:.2f} s after it was sent "
              "(LTIaaS took 3 s)")
        assert answered < 1.0
        assert load(client).state == "completed" and hanging.calls == ["slow-complete"]
        with app.app_context():
            db.engine.dispose()
    finally:
        hanging.release.set()
        hanging.close()
