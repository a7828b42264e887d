"""One payment delivered twenty times at once, on PostgreSQL: exactly one Complete call."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration, TimelineEntry
from tests.helpers.flow import open_frame, status

pytestmark = pytest.mark.postgres

DELIVERIES = 20


def _paid_registration(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    return registration_id, token, session_id


@pytest.mark.parametrize("round_", range(3))
def test_twenty_simultaneous_deliveries_complete_once(pg_app, stripe_api, ltiaas_api, round_):
    client = pg_app.test_client()
    registration_id, token, session_id = _paid_registration(client, stripe_api, ltiaas_api)
    ltiaas_api.complete_delay = 0.3  # widen the window in which a second caller could slip through
    repeated = stripe_api.event("checkout.session.completed", session_id)
    deliveries = []
    for i in range(DELIVERIES):
        if i % 3 == 0:
            deliveries.append(("return", None))
        elif i % 3 == 1:
            deliveries.append(("webhook", stripe_api.signed(repeated)))  # the same event, again and again
        else:
            kind = "checkout.session.completed" if i % 2 else "checkout.session.async_payment_succeeded"
            deliveries.append(("webhook", stripe_api.signed(stripe_api.event(kind, session_id))))
    barrier = threading.Barrier(DELIVERIES)

    def deliver(delivery):
        kind, signed = delivery
        own_client = pg_app.test_client()  # each thread: its own client, app context and DB session
        barrier.wait()
        if kind == "return":
            return own_client.get(f"/flow/{token}/paid?session_id={session_id}").status_code
        body, headers = signed
        return own_client.post("/webhooks/stripe", data=body, headers=headers).status_code

    with ThreadPoolExecutor(DELIVERIES) as pool:
        codes = list(pool.map(deliver, deliveries))

    assert all(200 <= code < 300 for code in codes), codes
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    with pg_app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.state == "completed" and reg.attempt_count == 1
        states = db.session.scalars(
            select(TimelineEntry.to_state).where(TimelineEntry.kind == "state").order_by(TimelineEntry.id)
        ).all()
        assert states == ["pending", "paid", "completing", "completed"]


def test_double_click_opens_one_checkout_session(pg_app, stripe_api, ltiaas_api):
    client = pg_app.test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    barrier = threading.Barrier(8)

    def click(_):
        own_client = pg_app.test_client()
        barrier.wait()
        return own_client.get(f"/flow/{token}/pay")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(click, range(8)))
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["Location"] for a in answers}) == 1
    assert len(stripe_api.sessions) == 1


def test_no_transaction_is_open_while_stripe_or_ltiaas_is_called(pg_app, stripe_api, ltiaas_api):
    """Invariant 3, measured: PostgreSQL shows no session idle in a transaction during any call."""
    from sqlalchemy import create_engine, text

    from tests.helpers.apps import PG_URL

    probe_engine = create_engine(PG_URL)
    seen = []

    def probe(call):
        with probe_engine.connect() as conn:
            seen.append(
                (
                    call,
                    conn.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                        )
                    ).scalar(),
                )
            )

    stripe_api.probe = ltiaas_api.probe = probe
    client = pg_app.test_client()
    _, token, session_id = _paid_registration(client, stripe_api, ltiaas_api)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    body, headers = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
    client.post("/webhooks/stripe", data=body, headers=headers)
    probe_engine.dispose()
    assert {call for call, _ in seen} >= {"get", "price", "create", "retrieve", "complete"}
    assert [entry for entry in seen if entry[1]] == []


# Access: exactly one LTIaaS call per real change of access, whatever arrives at once.


@pytest.mark.parametrize("round_", range(3))
def test_simultaneous_events_of_one_change_deactivate_once(pg_app, stripe_api, ltiaas_api, round_):
    from paygate.core.db import utcnow
    from paygate.licensing import reconciler

    stripe_api.set_price(recurring="year")
    client = pg_app.test_client()
    _, token, session_id = _paid_registration(client, stripe_api, ltiaas_api)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    with pg_app.app_context():
        platform_id = db.session.scalars(select(Registration.platform_id)).one()
    sub = stripe_api.set_subscription_status(stripe_api.sessions[session_id]["subscription"], "canceled")
    ltiaas_api.activation_delay = 0.2  # widen the window in which a second caller could slip through
    same = stripe_api.signed(stripe_api.object_event("customer.subscription.deleted", sub))
    signed = [
        same if i % 2 else stripe_api.signed(stripe_api.object_event("customer.subscription.updated", sub))
        for i in range(DELIVERIES - 2)
    ]
    barrier = threading.Barrier(DELIVERIES)

    def deliver(i):
        own = pg_app.test_client()
        barrier.wait()
        if i >= len(signed):  # the worker's reconciler, at the same moment
            with pg_app.app_context():
                reconciler.sync_pending(utcnow())
            return 200
        body, headers = signed[i]
        return own.post("/webhooks/stripe", data=body, headers=headers).status_code

    with ThreadPoolExecutor(DELIVERIES) as pool:
        codes = list(pool.map(deliver, range(DELIVERIES)))
    assert all(code == 200 for code in codes), codes
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]
    with pg_app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.platform_active is False and reg.access_claimed_at is None
        told = [e for e in reg.timeline if e.kind == "access" and e.message.startswith("LTIaaS deactivated")]
        assert len(told) == 1


def test_a_flip_and_back_while_ltiaas_is_told_ends_in_stripes_state(pg_app, stripe_api, ltiaas_api):
    """A change that arrives while LTIaaS is being told is sent after it, never lost."""
    stripe_api.set_price(recurring="year")
    client = pg_app.test_client()
    _, token, session_id = _paid_registration(client, stripe_api, ltiaas_api)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    sub_id = stripe_api.sessions[session_id]["subscription"]
    with pg_app.app_context():
        platform_id = db.session.scalars(select(Registration.platform_id)).one()
    ltiaas_api.activation_delay = 0.5
    unpaid = stripe_api.signed(
        stripe_api.object_event("customer.subscription.updated", stripe_api.set_subscription_status(sub_id, "unpaid"))
    )
    first = threading.Thread(
        target=lambda: pg_app.test_client().post("/webhooks/stripe", data=unpaid[0], headers=unpaid[1])
    )
    first.start()
    time.sleep(0.2)  # the deactivate call is in flight
    active = stripe_api.signed(
        stripe_api.object_event("customer.subscription.updated", stripe_api.set_subscription_status(sub_id, "active"))
    )
    assert client.post("/webhooks/stripe", data=active[0], headers=active[1]).status_code == 200
    first.join()
    from paygate.ops import worker

    with pg_app.app_context():
        worker.run_once()
        reg = db.session.scalars(select(Registration)).one()
        assert reg.access_wanted is True and reg.platform_active is True
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]


@pytest.mark.parametrize("round_", range(3))
def test_events_about_one_licence_at_once_queue_and_never_fail(pg_app, stripe_api, ltiaas_api, round_):
    """invoice.paid and customer.subscription.updated of one renewal touch the same licence and payment
    rows: they must queue on the licence's lock, not deadlock (a 5xx would leave Stripe retrying)."""
    stripe_api.set_price(recurring="year")
    client = pg_app.test_client()
    _, token, session_id = _paid_registration(client, stripe_api, ltiaas_api)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    sub_id = stripe_api.sessions[session_id]["subscription"]
    stripe_api.set_subscription_status(sub_id, "unpaid")
    sub = stripe_api.renew_subscription(sub_id)
    invoice = stripe_api.invoices[sub["latest_invoice"]]
    events = [
        stripe_api.signed(stripe_api.object_event(kind, obj))
        for kind, obj in [("invoice.paid", invoice), ("customer.subscription.updated", sub)] * 4
    ]
    barrier = threading.Barrier(len(events))

    def deliver(signed):
        own = pg_app.test_client()
        barrier.wait()
        return own.post("/webhooks/stripe", data=signed[0], headers=signed[1]).status_code

    with ThreadPoolExecutor(len(events)) as pool:
        codes = list(pool.map(deliver, events))
    assert codes == [200] * len(events)
    with pg_app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert len(reg.licence.payments) == 2 and reg.licence.status == "active"
        assert reg.platform_active is True
