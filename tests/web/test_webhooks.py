"""Stripe webhooks: signatures on the raw body, repeats, late and out-of-order events."""
import json
import time

import pytest
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import StripeEvent
from tests.helpers.flow import status
from tests.helpers.webhooks import deliver, registration


def test_completed_webhook_completes_the_registration(client, stripe_api, ltiaas_api, checkout):
    registration_id, token, session_id = checkout
    stripe_api.pay(session_id)
    response = deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    assert response.status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    reg = registration(client)
    assert reg.state == "completed"
    assert any(e.cause.startswith("webhook evt_") and e.to_state == "paid" for e in reg.timeline)


@pytest.mark.parametrize("forgery", ["unsigned", "wrong secret", "stale", "tampered"])
def test_bad_signatures_are_refused_and_change_nothing(client, stripe_api, ltiaas_api, checkout, forgery):
    _, token, session_id = checkout
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    if forgery == "unsigned":
        response = client.post("/webhooks/stripe", data=json.dumps(event), content_type="application/json")
    elif forgery == "wrong secret":
        response = deliver(client, stripe_api, event, secret="whsec_someone_else")
    elif forgery == "stale":
        response = deliver(client, stripe_api, event, timestamp=int(time.time()) - 301)
    else:
        body, headers = stripe_api.signed(event)
        response = client.post("/webhooks/stripe", data=body.replace(b"checkout.session", b"checkout.sessioN"),
                               headers=headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid signature"}
    assert ltiaas_api.complete_calls == []
    assert status(client, token)["state"] == "pending"
    with client.application.app_context():
        assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_same_event_many_times_is_recorded_once(client, stripe_api, ltiaas_api, checkout):
    registration_id, _, session_id = checkout
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    for _ in range(5):
        assert deliver(client, stripe_api, event).status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]
    with client.application.app_context():
        row = db.session.get(StripeEvent, event["id"])
        assert row.deliveries == 5 and row.outcome == "paid"
        assert json.loads(row.payload)["id"] == event["id"]
    assert [e.to_state for e in registration(client).timeline if e.kind == "state"] == [
        "pending", "paid", "completing", "completed"]


def test_webhook_and_return_in_either_order_complete_once(client, stripe_api, ltiaas_api, checkout):
    registration_id, token, session_id = checkout
    stripe_api.pay(session_id)
    assert client.get(f"/flow/{token}/paid?session_id={session_id}").status_code == 200
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    assert ltiaas_api.complete_calls == [registration_id]


def test_expired_after_completed_is_ignored(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.pay(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    late = stripe_api.event("checkout.session.expired", session_id)
    late["data"]["object"]["status"] = "expired"
    assert deliver(client, stripe_api, late).status_code == 200
    reg = registration(client)
    assert reg.state == "completed"
    assert reg.checkout_sessions[0].status == "complete"
    assert any("Late 'expired'" in e.message for e in reg.timeline)
    assert status(client, token)["phase"] == "done"


def test_async_failure_after_success_is_ignored(client, stripe_api, ltiaas_api, checkout):
    _, _, session_id = checkout
    stripe_api.pay(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_succeeded", session_id))
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_failed", session_id))
    reg = registration(client)
    assert reg.state == "completed" and reg.checkout_sessions[0].failed_at is None


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


def test_async_failure_lets_the_admin_pay_again(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.pay(session_id, payment_status="unpaid")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_failed", session_id))
    frame = status(client, token)
    assert frame["phase"] == "pay" and "did not go through" in frame["message"]
    new_url = client.get(f"/flow/{token}/pay").headers["Location"]
    assert session_id not in new_url and len(stripe_api.sessions) == 2


def test_expired_session_tells_the_frame_and_a_new_one_can_be_opened(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.expire(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.expired", session_id))
    frame = status(client, token)
    assert frame["phase"] == "pay" and "expired" in frame["message"]
    assert session_id not in client.get(f"/flow/{token}/pay").headers["Location"]
    keys = [c[1] for c in stripe_api.calls if c[0] == "create"]
    assert len(set(keys)) == 2


def test_mismatched_amount_is_flagged_not_fulfilled(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.sessions[session_id]["amount_total"] = 100
    stripe_api.pay(session_id)
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    assert ltiaas_api.complete_calls == []
    reg = registration(client)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert "payment is recorded and safe" in status(client, token)["message"]


def test_events_of_other_integrations_are_acknowledged_and_ignored(client, stripe_api):
    event = {"id": "evt_other", "object": "event", "type": "invoice.paid",
             "data": {"object": {"id": "in_other", "object": "invoice"}}}
    response = deliver(client, stripe_api, event)
    assert response.status_code == 200 and response.get_json()["result"] == "foreign invoice"
    unknown = {"id": "evt_unknown", "object": "event", "type": "customer.tax_id.created", "data": {"object": {}}}
    response = deliver(client, stripe_api, unknown)
    assert response.status_code == 200 and response.get_json()["result"] == "ignored"
    assert [c for c in stripe_api.calls if c[0] != "price"] == []  # nobody at Stripe was asked about them


def test_stripe_unreachable_during_webhook_asks_for_a_retry(client, stripe_api, ltiaas_api, checkout, mocked):
    _, token, session_id = checkout
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    stripe_api.sessions.pop(session_id)  # Stripe answers 404 for a moment: nothing is decided
    response = deliver(client, stripe_api, event)
    assert response.status_code == 503
    with client.application.app_context():
        assert db.session.get(StripeEvent, event["id"]) is None
    assert status(client, token)["state"] == "pending"
