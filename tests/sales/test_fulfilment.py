"""Fulfilment (paygate/sales/fulfilment.py): from "Stripe says paid" to "LTIaaS says completed", whichever
of the success return, the webhook, the worker and reconciliation gets there first, and everything that
fails in between. One test (or one parametrized test) per fault of the issue "No payment is ever lost";
each runs on SQLite and on PostgreSQL and asserts the end state, the number of Complete calls, what the
frame says and what the timeline says. The worker and reconciliation are driven directly, with a clock
moved forward where a retry must become due.
"""

import json
import time
from datetime import timedelta

import pytest
import requests
import responses
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration, StripeEvent
from paygate.ops import worker
from paygate.sales.reconcile import reconcile
from tests.fakes import CLOSE_HTML
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.fulfilment import (
    FINISHING,
    NEXT_STEP,
    SAFE,
    Killed,
    load,
    no_refund,
    run_worker,
    snapshot,
    states,
)
from tests.helpers.licences import buy
from tests.helpers.licences import load as load_pk
from tests.helpers.webhooks import deliver, registration


@pytest.fixture
def ltiaas_error_bodies(mocked, ltiaas_api):
    """LTIaaS's own error body for the next failing Complete calls (the fake sends a generic one)."""
    bodies: list[dict] = []
    route = next(
        r
        for r in mocked.registered()
        if isinstance(r, responses.CallbackResponse)
        and r.method == "POST"
        and "complete" in getattr(r.url, "pattern", str(r.url))
    )
    original = route.callback

    def callback(request):
        status_code, headers, body = original(request)
        if status_code >= 400 and bodies:
            body = json.dumps(bodies.pop(0))
        return status_code, headers, body

    route.callback = callback
    return bodies


# ---------------------------------------------------------------------------------------------
# LTIaaS fails on Complete, transiently

TRANSIENT = [
    pytest.param(500, True, id="500"),
    pytest.param(502, True, id="502"),
    pytest.param(503, False, id="503"),
    pytest.param(504, True, id="504"),
    pytest.param(429, False, id="429"),
    pytest.param(requests.ReadTimeout("Read timed out. (read timeout=2.0)"), True, id="timeout"),
    pytest.param(
        requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"),
        True,
        id="reset",
    ),
    pytest.param(
        requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"),
        False,
        id="refused",
    ),
    pytest.param(requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), True, id="broken-body"),
]


@pytest.mark.parametrize("failure, uncertain", TRANSIENT)
def test_transient_complete_failures_are_retried_with_backoff_until_success(
    client, stripe_api, ltiaas_api, paid, failure, uncertain
):
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
    assert states(reg) == ["pending", "paid", "completing", "paid", "completing", "paid", "completing", "completed"]
    retries = [e for e in reg.timeline if e.to_state == "paid"][1:]
    assert all("retrying in" in e.message for e in retries)
    assert [e.cause for e in reg.timeline if e.kind == "state"][-2:] == ["worker", "worker"]
    assert no_refund(stripe_api)


@pytest.mark.parametrize(
    "failure, attention", [(503, "completion_expired"), (requests.ReadTimeout("timed out"), "completion_uncertain")]
)
def test_transient_failures_stop_when_the_lms_token_runs_out(client, stripe_api, ltiaas_api, paid, failure, attention):
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


@pytest.mark.parametrize(
    "status_code, body",
    [
        (404, {"status": 404, "error": "Not Found", "details": {"message": "REGISTRATION_NOT_FOUND"}}),
        (
            400,
            {
                "status": 400,
                "error": "Bad Request",
                "details": {
                    "message": "The LMS refused the registration",
                    "externalError": True,
                    "lmsResponse": {"error": "invalid_registration_token"},
                },
            },
        ),
        (410, {"status": 410, "error": "Gone", "details": {"message": "REGISTRATION_ABANDONED"}}),
    ],
    ids=["unknown-id", "lms-external-error", "abandoned"],
)
def test_permanent_refusal_needs_an_operator_and_keeps_the_payment(
    client, stripe_api, ltiaas_api, ltiaas_error_bodies, paid, status_code, body
):
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
    client, stripe_api, ltiaas_api, paid, monkeypatch, reached_ltiaas
):
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


def test_a_late_answer_after_the_attempt_was_given_up_is_still_the_completion(
    client, stripe_api, ltiaas_api, paid, monkeypatch
):
    """An attempt that outlives the stale bound: its success wins over the retry's "unknown id"."""
    from paygate.gateways import ltiaas

    _registration_id, token, session_id = paid
    original = ltiaas.Ltiaas.complete_registration
    late = {}

    def slow(self, *args, **kwargs):
        if not late:  # the first attempt: meanwhile the worker gives it up and retries
            late["started"] = True
            reg = db.session.scalars(select(Registration)).one()
            later = reg.attempt_started_at + timedelta(
                seconds=client.application.config["SETTINGS"].stale_after_seconds + 1
            )
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
# Events late, repeated or out of order


def test_late_repeated_and_out_of_order_events_never_move_a_state_backwards(client, stripe_api, ltiaas_api, paid):
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
    assert [e.message for e in late_notes] == [
        "Stripe confirmed the payment again; already recorded, ignored.",
        "Late 'expired' for the session that paid; ignored.",
        "Late 'failed' for the session that paid; ignored.",
    ]
    assert [e.cause for e in late_notes] == [
        f"webhook {first['id']} (checkout.session.completed)",
        "webhook evt_late_expired (checkout.session.expired)",
        "webhook evt_late_failed (checkout.session.async_payment_failed)",
    ]
    with client.application.app_context():
        row = db.session.get(StripeEvent, first["id"])
        assert row.deliveries == 100 and row.registration_pk == reg.id and row.outcome == "already paid"
        assert db.session.get(StripeEvent, "evt_late_expired").deliveries == 2
        assert db.session.get(StripeEvent, succeeded["id"]).outcome == "paid"
    frame = status(client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML


# ---------------------------------------------------------------------------------------------
# A session that does not belong


@pytest.mark.parametrize(
    "tamper, problem",
    [
        ({"amount_total": 100}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"_line_items": [{"price": {"id": "price_someone_elses"}, "quantity": 1}]}, "price"),
        ({"client_reference_id": "another-registration"}, "client_reference_id"),
        ({"metadata": {"registration_pk": "999999", "registration_id": "x"}}, "metadata.registration_pk"),
    ],
)
@pytest.mark.parametrize("path", ["webhook", "reconcile"])
def test_a_session_that_does_not_match_what_was_sold_is_flagged_not_fulfilled(
    client, stripe_api, ltiaas_api, path, tamper, problem
):
    _registration_id, token, _ = open_frame(client, ltiaas_api)
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
    _registration_id, _token, _ = open_frame(client, ltiaas_api)
    reg = load(client)
    stripe_api.sessions["cs_test_stranger"] = {
        "id": "cs_test_stranger",
        "object": "checkout.session",
        "status": "open",
        "payment_status": "unpaid",
        "client_reference_id": "not-ours",
        "metadata": {"registration_pk": str(reg.id)},
        "amount_total": 4900,
        "currency": "usd",
        "payment_intent": None,
        "customer_details": None,
        "created": int(time.time()),
        "expires_at": int(time.time()) + 3600,
        "url": None,
        "_price": "price_registration",
    }
    stripe_api.pay("cs_test_stranger")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", "cs_test_stranger"))
    assert ltiaas_api.complete_calls == []
    reg = load(client)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert reg.timeline[-1].details["mismatch"] == ["client_reference_id"]


# ---------------------------------------------------------------------------------------------
# The success return and the webhook: Stripe is asked, the payment recorded, LTIaaS completed once


def test_success_return_confirms_with_stripe_and_completes_once(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"], email="it@school.example")
    page = client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert page.status_code == 200
    assert "payment was received" in page.text and "LMS window" in page.text
    assert ltiaas_api.complete_calls == [registration_id]
    frame = status(client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.state == "completed" and reg.platform_id
        assert reg.payer_email == "it@school.example" and reg.amount_paid == 4900
        assert reg.payment_intent_id.startswith("pi_")
        causes = [(e.to_state, e.cause) for e in reg.timeline if e.kind == "state"]
        assert causes == [
            ("pending", "pre-approval"),
            ("paid", "success return"),
            ("completing", "success return"),
            ("completed", "success return"),
        ]


def test_success_url_alone_proves_nothing(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()  # open, unpaid
    page = client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert page.status_code == 409
    assert ltiaas_api.complete_calls == []
    assert status(client, token)["state"] == "pending"
    assert client.get(f"/flow/{token}/paid?session_id=../../v1/charges").status_code == 400


def test_completion_body_comes_from_configuration(database_url, stripe_api, ltiaas_api):
    app = make_app(
        database_url,
        ltiaas_platform_name="Acme Quiz",
        ltiaas_messages='[{"type": "LtiResourceLinkRequest", "placements": ["course_navigation"]}]',
    )
    client = app.test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    stripe_api.pay(stripe_api.only_session()["id"])
    client.get(f"/flow/{token}/paid?session_id={stripe_api.only_session()['id']}")
    assert ltiaas_api.complete_bodies == [
        {
            "platformName": "Acme Quiz",
            "autoActivate": True,
            "messages": [{"type": "LtiResourceLinkRequest", "placements": ["course_navigation"]}],
        }
    ]


def test_unset_completion_settings_leave_ltiaas_defaults_but_the_licence_decides_activation(
    client, stripe_api, ltiaas_api
):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    stripe_api.pay(stripe_api.only_session()["id"])
    client.get(f"/flow/{token}/paid?session_id={stripe_api.only_session()['id']}")
    # autoActivate is never left to the portal's default: the paid licence says active.
    assert ltiaas_api.complete_bodies == [{"autoActivate": True}]


def test_webhook_and_return_in_either_order_complete_once(client, stripe_api, ltiaas_api, checkout):
    registration_id, token, session_id = checkout
    stripe_api.pay(session_id)
    assert client.get(f"/flow/{token}/paid?session_id={session_id}").status_code == 200
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]


def test_delayed_payment_waits_then_completes(client, stripe_api, ltiaas_api, checkout):
    registration_id, token, session_id = checkout
    stripe_api.pay(session_id, payment_status="unpaid")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    assert ltiaas_api.complete_calls == []
    frame = status(client, token)
    assert frame["phase"] == "wait" and "processed by your bank" in frame["message"]
    stripe_api.pay(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_succeeded", session_id))
    assert ltiaas_api.complete_calls == [registration_id]


def test_mismatched_amount_is_flagged_not_fulfilled(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.sessions[session_id]["amount_total"] = 100
    stripe_api.pay(session_id)
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    assert ltiaas_api.complete_calls == []
    reg = registration(client)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert "payment is recorded and safe" in status(client, token)["message"]


# ---------------------------------------------------------------------------------------------
# Prices as vendors configure them


def test_a_price_in_another_currency_is_accepted(client, stripe_api, ltiaas_api):
    stripe_api.set_price(currency_options={"eur": 4500})
    pk, _ = buy(client, stripe_api, ltiaas_api, currency="eur")
    reg = load_pk(client, pk)
    assert reg.state == "completed" and reg.attention is None
    assert (reg.amount_paid, reg.currency_paid) == (4500, "eur")


def test_a_wrong_amount_in_another_currency_is_still_a_mismatch(client, stripe_api, ltiaas_api):
    stripe_api.set_price(currency_options={"eur": 4500})
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"], currency="eur")
    session["amount_total"] = 100
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert status(client, token)["state"] == "needs_attention" and ltiaas_api.complete_calls == []
