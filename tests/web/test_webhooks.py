"""Stripe webhooks (paygate/web/webhooks.py): signatures on the raw body, each event recorded once however
often it comes, events of other integrations acknowledged and ignored, Stripe unreachable meanwhile. What a
confirming event does: tests/sales/test_fulfilment.py; a closing one: tests/sales/test_checkout.py."""

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
        response = client.post(
            "/webhooks/stripe", data=body.replace(b"checkout.session", b"checkout.sessioN"), headers=headers
        )
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
        "pending",
        "paid",
        "completing",
        "completed",
    ]


def test_events_of_other_integrations_are_acknowledged_and_ignored(client, stripe_api):
    event = {
        "id": "evt_other",
        "object": "event",
        "type": "invoice.paid",
        "data": {"object": {"id": "in_other", "object": "invoice"}},
    }
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
