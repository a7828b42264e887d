"""A webhook signed for a time more than Stripe's tolerance (300 s) away from now is refused, whether
in the past (Stripe's own check) or in the future (ours): 400 JSON, nothing recorded, nothing done.
A clock a little ahead is no reason to lose an event."""

import time

import pytest
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import StripeEvent
from tests.helpers.flow import status
from tests.helpers.webhooks import deliver


def events(client) -> int:
    with client.application.app_context():
        return db.session.scalar(select(func.count()).select_from(StripeEvent))


@pytest.mark.parametrize("ahead", [301, 3600, 10 * 365 * 86400])
def test_a_signature_dated_in_the_future_is_refused_and_changes_nothing(
    client, stripe_api, ltiaas_api, checkout, ahead
):
    _, token, session_id = checkout
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    response = deliver(client, stripe_api, event, timestamp=int(time.time()) + ahead)
    assert response.status_code == 400 and response.get_json() == {"error": "invalid signature"}
    assert ltiaas_api.complete_calls == [] and status(client, token)["state"] == "pending" and events(client) == 0


def test_a_signature_a_little_ahead_is_accepted(client, stripe_api, ltiaas_api, checkout):
    registration_id, token, session_id = checkout
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    response = deliver(client, stripe_api, event, timestamp=int(time.time()) + 120)
    assert response.status_code == 200 and events(client) == 1
    assert ltiaas_api.complete_calls == [registration_id] and status(client, token)["state"] == "completed"
