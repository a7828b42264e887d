"""A signed webhook is a hint, never a proof: the object Stripe gives back when asked is applied to a licence or a
registration only when it belongs there (the ids this service stored for it, or the reference Stripe's own object
carries), whatever the event's snapshot says. Otherwise the event is acknowledged as foreign and nothing changes."""

import re

import pytest
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import Registration, StripeEvent
from paygate.core.telemetry import webhook_outcome
from paygate.gateways import payments
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import deliver

# Helpers


def send(client, stripe_api, kind, obj):
    """A signed event about `obj` (a snapshot); returns its result, which must be a 2xx."""
    response = deliver(client, stripe_api, stripe_api.object_event(kind, obj))
    assert response.status_code == 200, response.text
    assert response.get_json()["received"] is True
    return response.get_json()["result"]


def reference(app, registration_id) -> dict:
    """The reference this service puts in Stripe metadata for a registration."""
    with app.app_context():
        pk = db.session.scalars(select(Registration.id).where(Registration.registration_id == registration_id)).one()
    return {"registration_pk": str(pk), "registration_id": registration_id}


def seen(app, registration_id) -> dict:
    """What an operator or the school can see of a registration: its state, access, licence and history."""
    with app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        licence = reg.licence
        return {
            "state": reg.state,
            "platform_active": reg.platform_active,
            "access_wanted": reg.access_wanted,
            "attention": reg.attention,
            "refund_id": reg.refund_id,
            "timeline": len(reg.timeline),
            "licence": licence
            and {
                k: getattr(licence, k)
                for k in (
                    "kind",
                    "status",
                    "subscription_status",
                    "customer_id",
                    "subscription_id",
                    "invoice_id",
                    "invoice_number",
                    "amount_due",
                    "amount_remaining",
                    "first_paid_at",
                    "period_end",
                    "due_at",
                    "dispute_open",
                )
            },
            "payments": licence
            and [
                (p.payment_intent_id, p.amount_refunded, p.refund_id, p.refund_status, p.dispute_id, p.dispute_status)
                for p in licence.payments
            ],
            "sessions": [(s.session_id, s.status, s.failed_at) for s in reg.checkout_sessions],
        }


def invoiced(client, ltiaas_api):
    """A registration paid by invoice (the frame's form). Returns its registration id."""
    registration_id, token, page = open_frame(client, ltiaas_api)
    form = re.search(
        r'<form method="post" action="/flow/' + re.escape(token) + r'/invoice".*?</form>', page.text, re.S
    ).group(0)
    form_id = re.search(r'name="form_id" value="([^"]+)"', form).group(1)
    answer = client.post(
        f"/flow/{token}/invoice",
        data={"billing_email": "finance@school.example", "organisation": "Springfield Elementary", "form_id": form_id},
    )
    assert answer.status_code == 303, answer.text
    assert status(client, token)["phase"] == "done"
    return registration_id


def paid_by_card(client, stripe_api, ltiaas_api):
    """A registration paid by card through Checkout and completed. Returns (registration id, its session)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = next(s["id"] for s in stripe_api.sessions.values() if s["client_reference_id"] == registration_id)
    stripe_api.pay(session_id)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    assert status(client, token)["phase"] == "done"
    return registration_id, stripe_api.sessions[session_id]


def elsewhere_invoice(app, stripe_api, metadata=None, subscription=False):
    """An invoice (or a subscription billed by invoice) the vendor made at Stripe for something else, for a
    customer of its own: nothing of this service's. Returns the invoice's JSON (or the subscription's)."""
    with app.app_context():
        gateway = payments.gateway()
        customer = gateway.create_customer(
            email="other@shop.example",
            name="Another shop",
            po_number=None,
            metadata={},
            idempotency_key="elsewhere-customer",
        )
        if subscription:
            sub = gateway.create_invoiced_subscription(
                customer=customer,
                price_id="price_registration",
                days_until_due=30,
                metadata=metadata or {},
                idempotency_key="elsewhere-subscription",
            )
            return stripe_api.subscriptions[sub.id]
        invoice = gateway.create_invoice(
            customer=customer,
            days_until_due=30,
            po_number=None,
            metadata=metadata or {},
            idempotency_key="elsewhere-invoice",
        )
        gateway.add_invoice_item(
            customer=customer,
            invoice=invoice.id,
            price_id="price_registration",
            metadata={},
            idempotency_key="elsewhere-item",
        )
        gateway.finalize_invoice(invoice.id, idempotency_key="elsewhere-finalize")
    return stripe_api.invoices[invoice.id]


def events(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(StripeEvent))


@pytest.fixture
def make(database_url):
    apps = []

    def factory(**overrides):
        app = make_app(database_url, **{"invoice_days_until_due": 30, **overrides})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            db.engine.dispose()


# Invoices


@pytest.mark.parametrize("its_own_metadata", [False, True], ids=["snapshot-only", "metadata-edited-at-stripe"])
def test_a_void_invoice_of_someone_else_named_by_the_snapshot_changes_nothing(
    make, stripe_api, ltiaas_api, its_own_metadata
):
    app = make()
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    ref = reference(app, b)
    before = seen(app, b)
    assert before["platform_active"] is True and before["licence"]["status"] == "open"
    x = elsewhere_invoice(app, stripe_api, metadata=ref if its_own_metadata else None)
    voided = stripe_api.void_invoice(x["id"])
    forged = dict(voided, metadata=ref)  # the snapshot names B
    result = send(client, stripe_api, "invoice.voided", forged)
    assert webhook_outcome(result) == "foreign", result
    after = seen(app, b)
    assert after == before  # B's licence still names its own invoice, still open; its platform still active
    assert ltiaas_api.platform_calls == []


@pytest.mark.parametrize("its_own_metadata", [False, True], ids=["snapshot-only", "metadata-edited-at-stripe"])
def test_someone_elses_paid_invoice_never_makes_an_unpaid_registration_paid(
    make, stripe_api, ltiaas_api, its_own_metadata
):
    app = make(invoice_access="on_payment")
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    ref = reference(app, b)
    before = seen(app, b)
    assert before["platform_active"] is False and before["licence"]["first_paid_at"] is None
    x = elsewhere_invoice(app, stripe_api, metadata=ref if its_own_metadata else None)
    paid_x = stripe_api.pay_invoice(x["id"])
    forged = dict(paid_x, metadata=ref)
    result = send(client, stripe_api, "invoice.paid", forged)
    assert webhook_outcome(result) == "foreign", result
    after = seen(app, b)
    assert after == before  # not paid, no payment recorded, access still waiting for the payment
    assert ltiaas_api.platform_calls == []


def test_the_registrations_own_invoice_still_counts_when_paid(make, stripe_api, ltiaas_api):
    """The check lets B's own invoice through: paid, it gives B its access."""
    app = make(invoice_access="on_payment")
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    invoice_id = seen(app, b)["licence"]["invoice_id"]
    assert send(client, stripe_api, "invoice.paid", stripe_api.pay_invoice(invoice_id)).startswith("invoice paid")
    after = seen(app, b)
    assert after["platform_active"] is True and after["licence"]["status"] == "paid"


def test_an_invoice_stripe_does_not_know_is_foreign_not_retried(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    before = seen(app, b)
    result = send(
        client,
        stripe_api,
        "invoice.voided",
        {"id": "in_nowhere", "object": "invoice", "status": "void", "metadata": reference(app, b)},
    )
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before and ltiaas_api.platform_calls == []


# Subscriptions


@pytest.mark.parametrize("its_own_metadata", [False, True], ids=["snapshot-only", "metadata-edited-at-stripe"])
def test_someone_elses_cancelled_subscription_never_ends_a_registrations_access(
    make, stripe_api, ltiaas_api, its_own_metadata
):
    stripe_api.set_price(recurring="year")
    app = make()
    client = app.test_client()
    b, _ = paid_by_card(client, stripe_api, ltiaas_api)
    ref = reference(app, b)
    before = seen(app, b)
    assert before["platform_active"] is True and before["licence"]["status"] == "active"
    x = elsewhere_invoice(app, stripe_api, metadata=ref if its_own_metadata else None, subscription=True)
    cancelled = stripe_api.set_subscription_status(x["id"], "canceled")
    result = send(client, stripe_api, "customer.subscription.deleted", dict(cancelled, metadata=ref))
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before
    assert ltiaas_api.platform_calls == []


def test_someone_elses_subscription_never_attaches_to_an_invoiced_registration(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    b = invoiced(client, ltiaas_api)  # a one-off invoice: no subscription
    ref = reference(app, b)
    before = seen(app, b)
    stripe_api.set_price(recurring="year")  # the vendor's other business sells by the year
    x = elsewhere_invoice(app, stripe_api, metadata=ref, subscription=True)
    cancelled = stripe_api.set_subscription_status(x["id"], "canceled")
    result = send(client, stripe_api, "customer.subscription.deleted", dict(cancelled, metadata=ref))
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before and ltiaas_api.platform_calls == []


# Checkout Sessions


@pytest.fixture
def pending(make, stripe_api, ltiaas_api):
    """A registration with an open Checkout Session: (app, client, registration id, token, session id)."""
    app = make()
    client = app.test_client()
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    return app, client, registration_id, token, stripe_api.only_session()["id"]


def test_an_expired_event_for_a_session_stripe_says_is_open_changes_nothing(pending, stripe_api):
    app, client, registration_id, token, session_id = pending
    before, frame = seen(app, registration_id), status(client, token)
    forged = dict(stripe_api.sessions[session_id], status="expired")
    forged = {k: v for k, v in forged.items() if not k.startswith("_")}
    result = send(client, stripe_api, "checkout.session.expired", forged)
    assert webhook_outcome(result) == "no_change", result
    assert seen(app, registration_id) == before and status(client, token) == frame


def test_a_failed_event_for_a_session_stripe_says_is_open_changes_nothing(pending, stripe_api):
    app, client, registration_id, token, session_id = pending
    before, frame = seen(app, registration_id), status(client, token)
    result = send(
        client,
        stripe_api,
        "checkout.session.async_payment_failed",
        {"id": session_id, "object": "checkout.session", "status": "complete", "payment_status": "unpaid"},
    )
    assert webhook_outcome(result) == "no_change", result
    assert seen(app, registration_id) == before and status(client, token) == frame


def test_a_session_whose_object_at_stripe_belongs_elsewhere_is_foreign(pending, stripe_api):
    app, client, registration_id, token, session_id = pending
    before, frame = seen(app, registration_id), status(client, token)
    stripe_api.expire(session_id)
    stripe_api.sessions[session_id].update(
        client_reference_id="someone-else", metadata={"registration_pk": "999999", "registration_id": "someone-else"}
    )
    result = send(client, stripe_api, "checkout.session.expired", {"id": session_id, "object": "checkout.session"})
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, registration_id) == before and status(client, token) == frame


@pytest.mark.parametrize(
    "kind", ["checkout.session.completed", "checkout.session.async_payment_succeeded", "checkout.session.expired"]
)
def test_a_session_id_stripe_does_not_know_is_foreign_not_retried(pending, stripe_api, kind):
    app, client, registration_id, _, _ = pending
    before = seen(app, registration_id)
    response = deliver(
        client,
        stripe_api,
        stripe_api.object_event(
            kind,
            {
                "id": "cs_test_unknown_to_stripe",
                "object": "checkout.session",
                "status": "complete",
                "payment_status": "paid",
                "client_reference_id": registration_id,
                "metadata": reference(app, registration_id),
            },
        ),
    )
    assert response.status_code == 200, response.text  # Stripe's 404 is final: no retry for three days
    assert webhook_outcome(response.get_json()["result"]) == "foreign", response.get_json()
    assert seen(app, registration_id) == before
    assert events(app) == 1


# Refunds and disputes


def test_someone_elses_lost_dispute_never_ends_a_registrations_access(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    _, session_a = paid_by_card(client, stripe_api, ltiaas_api)
    b, session_b = paid_by_card(client, stripe_api, ltiaas_api)
    before = seen(app, b)
    dispute = stripe_api.open_dispute(session_a["payment_intent"])
    lost = stripe_api.close_dispute(dispute["id"], "lost")
    forged = dict(lost, payment_intent=session_b["payment_intent"])  # the snapshot names B's payment
    for kind in ("charge.dispute.created", "charge.dispute.closed"):
        result = send(client, stripe_api, kind, forged)
        assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before and seen(app, b)["platform_active"] is True
    with app.app_context():
        platform_b = db.session.scalars(select(Registration.platform_id).where(Registration.registration_id == b)).one()
    assert ltiaas_api.calls_for(platform_b) == []


def test_someone_elses_refund_is_never_written_on_a_registrations_payment(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    _, session_a = paid_by_card(client, stripe_api, ltiaas_api)
    b, session_b = paid_by_card(client, stripe_api, ltiaas_api)
    before = seen(app, b)
    refund = stripe_api.refund_in_dashboard(session_a["payment_intent"], status="pending")
    failed = stripe_api.fail_refund(refund["id"])
    forged = dict(failed, payment_intent=session_b["payment_intent"], charge=None)
    for kind in ("refund.created", "refund.failed"):
        result = send(client, stripe_api, kind, forged)
        assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before


def test_the_registrations_own_dispute_still_counts(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    b, session_b = paid_by_card(client, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session_b["payment_intent"])
    assert send(client, stripe_api, "charge.dispute.created", dispute) == "recorded"
    assert seen(app, b)["attention"] == "disputed"


@pytest.mark.parametrize("customer", ["ours", "another"])
def test_an_invoice_made_before_its_id_was_stored_counts_only_with_our_customer_and_reference(
    make, stripe_api, ltiaas_api, customer
):
    """A crash between Stripe making the invoice and this service storing its id: Stripe's own invoice, of the
    licence's customer and carrying the registration's reference, is the licence's; of another customer, not."""
    app = make(invoice_access="on_payment")
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    ref = reference(app, b)
    with app.app_context():
        licence = db.session.scalars(select(Registration).where(Registration.registration_id == b)).one().licence
        invoice_id, licence.invoice_id = licence.invoice_id, None
        db.session.commit()
    before = seen(app, b)
    if customer == "another":
        invoice_id = elsewhere_invoice(app, stripe_api, metadata=ref)["id"]
    result = send(client, stripe_api, "invoice.paid", stripe_api.pay_invoice(invoice_id))
    after = seen(app, b)
    if customer == "ours":
        assert result.startswith("invoice paid")
        assert after["licence"]["invoice_id"] == invoice_id and after["platform_active"] is True
    else:
        assert webhook_outcome(result) == "foreign", result
        assert after == before and ltiaas_api.platform_calls == []


def test_a_strangers_session_with_a_reference_past_any_number_is_foreign(make, stripe_api, ltiaas_api):
    """Stripe's own session of another integration, whose metadata holds no registration number of ours."""
    app = make()
    client = app.test_client()
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    ours = stripe_api.only_session()
    stripe_api.sessions["cs_test_stranger"] = {
        **ours,
        "id": "cs_test_stranger",
        "client_reference_id": None,
        "metadata": {"registration_pk": "99999999999999999999"},
    }
    stripe_api.pay("cs_test_stranger")
    before = seen(app, registration_id)
    result = send(
        client, stripe_api, "checkout.session.completed", {"id": "cs_test_stranger", "object": "checkout.session"}
    )
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, registration_id) == before


@pytest.mark.parametrize("payment_status", ["unpaid", "no_payment_required"])
def test_an_unpaid_session_naming_a_registration_only_in_part_never_blocks_its_payment(
    make, stripe_api, ltiaas_api, payment_status
):
    """A Payment Link opened with ?client_reference_id=<a registration id> (a delayed method, a free trial, a
    100 % coupon) is no session of ours: it must not hold the registration "processing" or in attention."""
    app = make()
    client = app.test_client()
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    ours = stripe_api.only_session()
    stripe_api.sessions["cs_test_half"] = {
        **ours,
        "id": "cs_test_half",
        "client_reference_id": registration_id,
        "metadata": {},
    }
    if payment_status == "unpaid":
        stripe_api.pay("cs_test_half", payment_status="unpaid")  # a delayed method: the money comes later
    else:  # a 100 % coupon or a free trial: Checkout completes with nothing to pay
        stripe_api.sessions["cs_test_half"].update(status="complete", payment_status=payment_status, amount_total=0)
    before, frame = seen(app, registration_id), status(client, token)
    result = send(
        client, stripe_api, "checkout.session.completed", {"id": "cs_test_half", "object": "checkout.session"}
    )
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, registration_id) == before and status(client, token) == frame
    assert client.get(f"/flow/{token}/pay").status_code == 303  # the admin can still pay


def test_a_subscription_never_attaches_to_a_one_time_invoice_even_for_our_customer(make, stripe_api, ltiaas_api):
    """An invoiced licence for a one-time Price never had a subscription: one made in the dashboard for the
    school's own customer, with our reference copied into it, is not taken for one made before its id was
    stored."""
    app = make()
    client = app.test_client()
    b = invoiced(client, ltiaas_api)
    ref, before = reference(app, b), seen(app, b)
    stripe_api.set_price(recurring="year")
    with app.app_context():
        sub = payments.gateway().create_invoiced_subscription(
            customer=before["licence"]["customer_id"],
            price_id="price_registration",
            days_until_due=30,
            metadata=ref,
            idempotency_key="dashboard-subscription",
        )
    result = send(client, stripe_api, "customer.subscription.updated", dict(stripe_api.subscriptions[sub.id]))
    assert webhook_outcome(result) == "foreign", result
    assert seen(app, b) == before and ltiaas_api.platform_calls == []
