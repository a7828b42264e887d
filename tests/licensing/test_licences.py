"""Licences (paygate/licensing/licences.py, access.py): access follows the money of subscriptions, through
webhooks asked back to Stripe, with LTIaaS told once per real change (refunds and disputes:
tests/licensing/test_refunds.py)."""

from datetime import timedelta

from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import Registration, StripeEvent
from tests.helpers.flow import open_frame
from tests.helpers.licences import buy, load
from tests.helpers.operators import add_operator, sign_in
from tests.helpers.webhooks import deliver, send

# Recurring Prices


def test_a_yearly_price_sells_a_subscription_and_completes_once(client, stripe_api, ltiaas_api, yearly):
    _, token, page = open_frame(client, ltiaas_api)
    assert "49.00 USD per year" in page.text
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    assert session["mode"] == "subscription"
    assert session["_sub_metadata"]["registration_id"] == session["client_reference_id"]
    assert "registration_pk" not in session["_pi_metadata"]
    stripe_api.pay(session["id"])
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session["id"]))
    assert len(ltiaas_api.complete_calls) == 1 and ltiaas_api.complete_bodies[0]["autoActivate"] is True
    with client.application.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    reg = load(client, pk)
    assert reg.state == "completed" and reg.platform_active is True
    licence = reg.licence
    assert (licence.kind, licence.status, licence.subscription_id) == (
        "subscription",
        "active",
        stripe_api.sessions[session["id"]]["subscription"],
    )
    assert licence.period_end > utcnow() + timedelta(days=360)
    assert len(licence.payments) == 1 and licence.payments[0].amount == 4900


def test_subscription_status_moves_access_once_per_real_change(client, stripe_api, ltiaas_api, yearly):
    pk, session = buy(client, stripe_api, ltiaas_api)
    platform_id, sub_id = load(client, pk).platform_id, session["subscription"]
    snapshot_active = stripe_api.subscriptions[sub_id] | {}
    for status_, expected in [
        ("past_due", []),
        ("unpaid", ["deactivate"]),
        ("unpaid", ["deactivate"]),
        ("active", ["deactivate", "activate"]),
        ("canceled", ["deactivate", "activate", "deactivate"]),
    ]:
        sub = stripe_api.set_subscription_status(sub_id, status_)
        send(client, stripe_api, "customer.subscription.updated", sub)
        assert ltiaas_api.calls_for(platform_id) == expected, status_
    # A late, out-of-order event still saying "active": Stripe is asked, and says canceled. No flap.
    assert send(client, stripe_api, "customer.subscription.updated", snapshot_active) == "no change"
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate", "deactivate"]
    reg = load(client, pk)
    assert reg.platform_active is False and reg.licence.status == "canceled" and reg.state == "completed"
    assert any("Access should be inactive: subscription canceled" in e.message for e in reg.timeline)


def test_a_renewal_paid_after_lapsing_gives_access_back(client, stripe_api, ltiaas_api, yearly):
    pk, session = buy(client, stripe_api, ltiaas_api)
    sub_id = session["subscription"]
    send(client, stripe_api, "customer.subscription.updated", stripe_api.set_subscription_status(sub_id, "unpaid"))
    sub = stripe_api.renew_subscription(sub_id)
    invoice = stripe_api.invoices[sub["latest_invoice"]]
    assert send(client, stripe_api, "invoice.paid", invoice).startswith("invoice paid")
    reg = load(client, pk)
    assert reg.platform_active is True and reg.licence.status == "active" and len(reg.licence.payments) == 2
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate", "activate"]


def test_the_same_event_many_times_is_one_change(client, stripe_api, ltiaas_api, yearly):
    pk, session = buy(client, stripe_api, ltiaas_api)
    event = stripe_api.object_event(
        "customer.subscription.deleted", stripe_api.set_subscription_status(session["subscription"], "canceled")
    )
    for _ in range(5):
        assert deliver(client, stripe_api, event).status_code == 200
    reg = load(client, pk)
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]
    with client.application.app_context():
        assert db.session.get(StripeEvent, event["id"]).deliveries == 5


# Foreign objects, missed webhooks, LTIaaS down


def test_objects_of_other_integrations_are_acknowledged_and_change_nothing(client, stripe_api, ltiaas_api, yearly):
    pk, _session = buy(client, stripe_api, ltiaas_api)
    calls = len(stripe_api.calls)
    other = {"id": "sub_other", "object": "subscription", "status": "canceled", "metadata": {"product": "x"}}
    assert send(client, stripe_api, "customer.subscription.deleted", other) == "foreign subscription"
    forged = dict(other, metadata={"registration_pk": str(pk), "registration_id": "not-the-one"})
    assert send(client, stripe_api, "customer.subscription.updated", forged) == "foreign subscription"
    assert (
        send(client, stripe_api, "charge.refunded", {"id": "ch_x", "object": "charge", "payment_intent": "pi_other"})
        == "foreign payment"
    )
    assert (
        send(
            client,
            stripe_api,
            "charge.dispute.created",
            {"id": "du_x", "object": "dispute", "payment_intent": "pi_other"},
        )
        == "foreign payment"
    )
    assert (
        send(client, stripe_api, "invoice.paid", {"id": "in_x", "object": "invoice", "parent": None})
        == "foreign invoice"
    )
    assert send(client, stripe_api, "customer.created", {"id": "cus_x", "object": "customer"}) == "ignored"
    assert len(stripe_api.calls) == calls  # nobody at Stripe was asked
    reg = load(client, pk)
    assert reg.platform_active is True and ltiaas_api.platform_calls == []


def test_ltiaas_down_during_a_change_converges_by_itself(app, client, stripe_api, ltiaas_api, yearly):
    from paygate.ops import worker

    pk, session = buy(client, stripe_api, ltiaas_api)
    ltiaas_api.activation_failures = [503, 503]
    send(
        client,
        stripe_api,
        "customer.subscription.updated",
        stripe_api.set_subscription_status(session["subscription"], "canceled"),
    )
    reg = load(client, pk)
    assert reg.platform_active is True and reg.access_wanted is False and reg.access_attempts == 1
    with app.app_context():
        worker.run_once(now=reg.access_next_at + timedelta(seconds=1))  # LTIaaS still down
        reg = db.session.get(Registration, pk)
        assert reg.access_attempts == 2 and reg.platform_active is True
        worker.run_once(now=reg.access_next_at + timedelta(seconds=1))  # LTIaaS is back
    reg = load(client, pk)
    assert reg.platform_active is False and reg.access_attempts == 0 and reg.access_error is None
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"] * 3


def test_ltiaas_down_for_long_reaches_an_operator_and_then_clears(app, client, stripe_api, ltiaas_api, yearly):
    from paygate.licensing.reconciler import ATTENTION_AFTER
    from paygate.ops import worker

    pk, session = buy(client, stripe_api, ltiaas_api)
    ltiaas_api.activation_failures = [503] * ATTENTION_AFTER
    send(
        client,
        stripe_api,
        "customer.subscription.updated",
        stripe_api.set_subscription_status(session["subscription"], "unpaid"),
    )
    with app.app_context():
        for _ in range(ATTENTION_AFTER):
            reg = db.session.get(Registration, pk)
            worker.run_once(now=reg.access_next_at + timedelta(seconds=1))
    reg = load(client, pk)
    assert reg.platform_active is False and reg.attention is None  # flagged on the way, cleared once told
    assert any(
        (e.details and e.details.get("attention") == "access_unsynced") or "an operator is told" in e.message
        for e in reg.timeline
    )


# What operators read of the licence


def test_the_api_carries_the_licence(app, client, stripe_api, ltiaas_api, yearly):
    pk, session = buy(client, stripe_api, ltiaas_api)
    add_operator(app)
    sign_in(client)
    body = client.get(f"/operator/api/registrations/{pk}").get_json()
    assert body["platform"]["active"] is True and body["platform"]["override"] is None
    assert body["licence"]["kind"] == "subscription" and body["licence"]["status"] == "active"
    assert body["licence"]["subscription_id"] == session["subscription"] and body["licence"]["period_end"]
    assert body["payment"]["refund_id"] is None
    send(
        client,
        stripe_api,
        "customer.subscription.updated",
        stripe_api.set_subscription_status(session["subscription"], "past_due"),
    )
    listed = client.get("/operator/api/registrations?licence=past_due").get_json()["items"]
    assert [i["id"] for i in listed] == [pk] and listed[0]["licence"]["status"] == "past_due"
    assert client.get("/operator/api/registrations?licence=lapsed").get_json()["items"] == []
    assert client.get("/operator/api/registrations?licence=nonsense").status_code == 400
    page = client.get("/operator/?access=active").text
    assert f'href="/operator/registrations/{pk}"' in page and "past due until" in page  # what the money says
