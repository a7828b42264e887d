"""Seats changed at Stripe (the dashboard, the customer portal) reach the licence, and never its access; a seat
purchase delivered twenty times at once completes once (PostgreSQL)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, TimelineEntry
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import send
from tests.sales.test_offers import OFFERS, SEATS, add_offers


def test_a_quantity_changed_at_stripe_changes_the_licence_not_the_access(make, database_url, stripe_api, ltiaas_api):
    add_offers(stripe_api)
    client = make(database_url, stripe_price_id=OFFERS).test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert status(client, token)["phase"] == "done"
    told = list(ltiaas_api.platform_calls)
    sub_id = stripe_api.sessions[session["id"]]["subscription"]
    stripe_api.change_quantity(sub_id, 150)  # as a vendor does in the Stripe dashboard
    send(client, stripe_api, "customer.subscription.updated", stripe_api.subscriptions[sub_id])
    with client.application.app_context():
        licence = db.session.scalars(select(Licence)).one()
        assert licence.quantity == 150 and licence.status == "active"
        entries = db.session.scalars(select(TimelineEntry.message).where(TimelineEntry.kind == "licence")).all()
        assert any("150" in message for message in entries)
    assert ltiaas_api.platform_calls == told  # no change of access, no call


@pytest.mark.postgres
def test_twenty_simultaneous_deliveries_of_a_seat_purchase_complete_once(pg_url, stripe_api, ltiaas_api):
    add_offers(stripe_api)
    app = make_app(pg_url, stripe_price_id=OFFERS)
    client = app.test_client()
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay?offer={SEATS}&seats=120").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    ltiaas_api.complete_delay = 0.3  # widen the window in which a second caller could slip through
    barrier = threading.Barrier(20)

    def deliver(i):
        own = app.test_client()
        event = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
        barrier.wait()
        if i % 2:
            return own.get(f"/flow/{token}/paid?session_id={session_id}").status_code
        return own.post("/webhooks/stripe", data=event[0], headers=event[1]).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(deliver, range(20)))
    assert all(200 <= code < 300 for code in codes), codes
    assert ltiaas_api.complete_calls == [registration_id]
    with app.app_context():
        licence = db.session.scalars(select(Licence)).one()
        assert (licence.quantity, licence.amount) == (120, 36000)
        db.engine.dispose()


@pytest.mark.postgres
def test_a_double_click_on_a_seat_choice_opens_one_checkout_session(pg_url, stripe_api, ltiaas_api):
    add_offers(stripe_api)
    app = make_app(pg_url, stripe_price_id=OFFERS)
    _, token, _ = open_frame(app.test_client(), ltiaas_api)
    barrier = threading.Barrier(8)

    def click(_):
        own = app.test_client()
        barrier.wait()
        return own.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(click, range(8)))
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["Location"] for a in answers}) == 1
    (session,) = stripe_api.sessions.values()
    assert session["amount_subtotal"] == 36000
    with app.app_context():
        db.engine.dispose()
