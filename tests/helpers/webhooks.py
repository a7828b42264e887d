"""Stripe's webhooks delivered to the service, signed by the Stripe fake."""

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration


def deliver(client, stripe_api, event, **sign):
    body, headers = stripe_api.signed(event, **sign)
    return client.post("/webhooks/stripe", data=body, headers=headers)


def send(client, stripe_api, kind, obj, **kwargs):
    """Deliver an event about `obj`; it must be accepted. Returns its result."""
    response = deliver(client, stripe_api, stripe_api.object_event(kind, obj, **kwargs))
    assert response.status_code == 200, response.text
    return response.get_json()["result"]


def registration(client) -> Registration:
    """The only registration, with its timeline and Checkout Sessions loaded."""
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        _ = reg.timeline, reg.checkout_sessions  # load before the context ends
        return reg
