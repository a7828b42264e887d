"""The Stripe fake's billing endpoints, checked with the real stripe-python client (wire format)."""

import threading
import time
from datetime import UTC, datetime

import pytest
import responses
import stripe

from tests.fakes import Stripe
from tests.helpers.apps import BASE_CONFIG

DAY = 86400


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Stripe(rsps, BASE_CONFIG), rsps


@pytest.fixture
def api():
    return stripe.StripeClient(api_key=BASE_CONFIG["stripe_secret_key"], max_network_retries=0).v1


def checkout(api, mode="payment", key="k-session", **extra):
    params = {
        "mode": mode,
        "ui_mode": "hosted_page",
        "line_items": [{"price": "price_registration", "quantity": 1}],
        "success_url": "http://paygate.test/ok",
        "expires_at": int(time.time()) + 3600,
        "client_reference_id": "ref-1",
        "metadata": {"registration_pk": "1"},
        **extra,
    }
    return api.checkout.sessions.create(params=params, options={"idempotency_key": key})


def test_price_expansions_and_set_price(fake, api):
    stripe_api, _ = fake
    plain = api.prices.retrieve("price_registration").to_dict()
    assert plain["product"] == "prod_tool" and "currency_options" not in plain and plain["recurring"] is None
    stripe_api.set_price(recurring="year", currency_options={"eur": 4500})
    price = api.prices.retrieve("price_registration", params={"expand": ["product", "currency_options"]}).to_dict()
    assert price["type"] == "recurring" and price["recurring"]["interval"] == "year"
    assert price["product"]["name"] == "Tool registration" and price["product"]["description"]
    assert {c: o["unit_amount"] for c, o in price["currency_options"].items()} == {"usd": 4900, "eur": 4500}
    stripe_api.set_price(active=False, amount=5900)
    price = api.prices.retrieve("price_registration").to_dict()
    assert (price["active"], price["unit_amount"], price["type"]) == (False, 5900, "one_time")


def test_subscription_checkout_in_another_currency(fake, api):
    stripe_api, _ = fake
    stripe_api.set_price(recurring="year", currency_options={"eur": 4500})
    with pytest.raises(stripe.InvalidRequestError):  # a recurring price needs subscription mode
        checkout(api, key="k-wrong-mode")
    session = checkout(api, mode="subscription", subscription_data={"metadata": {"registration_pk": "7"}})
    stripe_api.pay(session.id, currency="eur")
    session = api.checkout.sessions.retrieve(session.id).to_dict()
    assert session["payment_intent"] is None and (session["currency"], session["amount_total"]) == ("eur", 4500)
    assert session["subscription"].startswith("sub_") and session["invoice"].startswith("in_")
    assert session["customer"].startswith("cus_")

    sub = api.subscriptions.retrieve(session["subscription"], params={"expand": ["latest_invoice.payments"]}).to_dict()
    assert sub["status"] == "active" and sub["metadata"] == {"registration_pk": "7"}
    assert "current_period_end" not in sub
    item = sub["items"]["data"][0]
    assert abs(item["current_period_end"] - (time.time() + 365 * DAY)) < 60
    assert item["price"]["id"] == "price_registration"
    invoice = sub["latest_invoice"]
    assert invoice["id"] == session["invoice"] and invoice["status"] == "paid" and invoice["amount_paid"] == 4500
    assert invoice["parent"]["subscription_details"] == {
        "subscription": sub["id"],
        "metadata": {"registration_pk": "7"},
    }
    (payment,) = invoice["payments"]["data"]
    assert payment["object"] == "invoice_payment" and payment["payment"]["type"] == "payment_intent"
    pi = api.payment_intents.retrieve(
        payment["payment"]["payment_intent"], params={"expand": ["latest_charge"]}
    ).to_dict()
    assert pi["status"] == "succeeded" and pi["latest_charge"]["amount"] == 4500
    assert pi["latest_charge"]["currency"] == "eur"
    assert "payments" not in api.invoices.retrieve(invoice["id"]).to_dict()
    assert api.invoices.retrieve(invoice["id"], params={"expand": ["payments"]}).payments.data[0].id == payment["id"]
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        api.invoices.retrieve(invoice["id"], params={"expand": ["payment_intent"]})

    renewed = stripe_api.renew_subscription(sub["id"])
    assert renewed["latest_invoice"] != invoice["id"]
    end = datetime.fromtimestamp(item["current_period_end"], UTC)  # one calendar year on, as Stripe bills
    assert renewed["items"]["data"][0]["current_period_end"] == end.replace(year=end.year + 1).timestamp()
    assert stripe_api.set_subscription_status(sub["id"], "past_due")["status"] == "past_due"
    event = stripe_api.object_event(
        "customer.subscription.updated",
        stripe_api.set_subscription_status(sub["id"], "unpaid"),
        previous_attributes={"status": "past_due"},
    )
    body, headers = stripe_api.signed(event)
    parsed = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], BASE_CONFIG["stripe_webhook_secret"])
    assert parsed.data.object.status == "unpaid" and parsed.type == "customer.subscription.updated"


def test_payment_refunds_by_charge_partial_and_already_refunded(fake, api):
    stripe_api, _ = fake
    session = checkout(api)
    pi_id = stripe_api.pay(session.id)["payment_intent"]
    charge_id = api.payment_intents.retrieve(pi_id).latest_charge
    part = api.refunds.create(params={"charge": charge_id, "amount": 900}, options={"idempotency_key": "r1"})
    assert (part.amount, part.charge, part.payment_intent, part.status) == (900, charge_id, pi_id, "succeeded")
    charge = api.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (900, False)
    rest = api.refunds.create(params={"payment_intent": pi_id}, options={"idempotency_key": "r2"})
    assert rest.amount == 4000 and api.charges.retrieve(charge_id).refunded is True
    assert api.refunds.retrieve(rest.id).status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        api.refunds.create(params={"charge": charge_id}, options={"idempotency_key": "r3"})
    assert caught.value.code == "charge_already_refunded"
    assert set(stripe_api.refunds) == {"r1", "r2"}  # a refusal is not kept under its key


def test_dashboard_refund_failed_refund_and_disputes(fake, api):
    stripe_api, _ = fake
    pi_id = stripe_api.pay(checkout(api).id)["payment_intent"]
    refund = stripe_api.refund_in_dashboard(pi_id, status="pending")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        api.refunds.create(params={"payment_intent": pi_id}, options={"idempotency_key": "r1"})
    assert caught.value.code == "charge_already_refunded"
    assert stripe_api.fail_refund(refund["id"])["status"] == "failed"
    assert api.charges.retrieve(refund["charge"]).amount_refunded == 0
    assert api.refunds.retrieve(refund["id"]).failure_reason

    dispute = stripe_api.open_dispute(pi_id)
    assert dispute["status"] == "needs_response" and dispute["evidence_details"]["due_by"] > time.time() + 6 * DAY
    assert api.charges.retrieve(dispute["charge"]).disputed is True
    listed = api.disputes.list(params={"payment_intent": pi_id})
    assert [d.id for d in listed.data] == [dispute["id"]]
    assert api.disputes.list(params={"payment_intent": "pi_other"}).data == []
    stripe_api.close_dispute(dispute["id"], "won")
    assert api.disputes.retrieve(dispute["id"]).status == "won"


def test_invoice_by_email_with_idempotency(fake, api):
    stripe_api, rsps = fake
    stripe_api.set_price(recurring="year")
    customer = api.customers.create(
        params={
            "email": "billing@school.example",
            "name": "School",
            "metadata": {"registration_pk": "3"},
            "invoice_settings": {"custom_fields": [{"name": "PO number", "value": "PO-1"}]},
        },
        options={"idempotency_key": "c1"},
    )
    again = api.customers.create(
        params={
            "email": "billing@school.example",
            "name": "School",
            "metadata": {"registration_pk": "3"},
            "invoice_settings": {"custom_fields": [{"name": "PO number", "value": "PO-1"}]},
        },
        options={"idempotency_key": "c1"},
    )
    assert again.id == customer.id and rsps.calls[-1].response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        api.customers.create(params={"email": "other@school.example"}, options={"idempotency_key": "c1"})
    with pytest.raises(stripe.IdempotencyError):  # another endpoint, the same key
        api.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "c1"})
    assert api.customers.retrieve(customer.id).invoice_settings.custom_fields[0].value == "PO-1"

    invoice = api.invoices.create(
        params={
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "custom_fields": [{"name": "PO number", "value": "PO-2"}],
            "metadata": {"registration_pk": "3"},
        },
        options={"idempotency_key": "i1"},
    )
    assert (invoice.status, invoice.number, invoice.due_date, invoice.amount_due) == ("draft", None, None, 0)
    with pytest.raises(stripe.InvalidRequestError):  # a draft cannot be sent
        api.invoices.send_invoice(invoice.id, options={"idempotency_key": "s0"})
    item = api.invoice_items.create(
        params={"customer": customer.id, "invoice": invoice.id, "pricing": {"price": "price_registration"}},
        options={"idempotency_key": "ii1"},
    )
    assert (item.amount, item.invoice, item.pricing.price_details.price) == (4900, invoice.id, "price_registration")
    final = api.invoices.finalize_invoice(invoice.id, params={"auto_advance": False}, options={"idempotency_key": "f1"})
    assert final.status == "open" and final.number.startswith("INV-") and final.amount_due == 4900
    assert abs(final.due_date - (time.time() + 30 * DAY)) < 60
    assert final.hosted_invoice_url == f"https://invoice.stripe.test/i/{invoice.id}"
    assert final.custom_fields[0].value == "PO-2"
    api.invoices.send_invoice(invoice.id, options={"idempotency_key": "s1"})
    assert stripe_api.sent_invoices == [invoice.id]
    assert ("invoice_send", "s1") in stripe_api.calls and ("invoiceitem_create", "ii1") in stripe_api.calls

    assert stripe_api.make_overdue(invoice.id, days=2)["due_date"] < time.time() - DAY
    assert stripe_api.pay_invoice(invoice.id)["status"] == "paid"
    paid = api.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert paid.amount_remaining == 0 and paid.payments.data[0].payment.payment_intent.startswith("pi_")
    assert stripe_api.void_invoice(api.invoices.create(params={"customer": customer.id}).id)["status"] == "void"

    sub = api.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": "price_registration"}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"registration_pk": "3"},
        },
        options={"idempotency_key": "sub1"},
    )
    assert sub.status == "active" and sub.collection_method == "send_invoice"
    first = api.invoices.retrieve(sub.latest_invoice)
    assert first.status == "draft" and first.amount_due == 4900
    assert first.parent.subscription_details.subscription == sub.id
    assert first.parent.subscription_details.metadata.to_dict() == {"registration_pk": "3"}
    assert stripe_api.pay_invoice(first.id, out_of_band=True)["paid_out_of_band"] is True
    assert api.invoices.retrieve(first.id, params={"expand": ["payments"]}).payments.data == []
    assert (
        stripe_api.mark_uncollectible(stripe_api.renew_subscription(sub.id, paid=False)["latest_invoice"])["status"]
        == "uncollectible"
    )
    canceled = api.subscriptions.cancel(sub.id, options={"idempotency_key": "x1"})
    assert canceled.status == "canceled" and canceled.canceled_at
    assert ("subscription_cancel", "x1") in stripe_api.calls


def test_injected_failures_and_missing_objects(fake, api):
    stripe_api, _ = fake
    stripe_api.fail_next["customer_create"] = [503]
    with pytest.raises(stripe.APIError):
        api.customers.create(params={"email": "a@b.example"}, options={"idempotency_key": "c1"})
    with pytest.raises(stripe.APIError):  # the 5xx is kept under its key
        api.customers.create(params={"email": "a@b.example"}, options={"idempotency_key": "c1"})
    assert api.customers.create(params={"email": "a@b.example"}, options={"idempotency_key": "c2"}).id
    stripe_api.fail_next["retrieve_charge"] = [500]
    charge_id = api.payment_intents.retrieve(stripe_api.pay(checkout(api).id)["payment_intent"]).latest_charge
    with pytest.raises(stripe.APIError):
        api.charges.retrieve(charge_id)
    assert api.charges.retrieve(charge_id).id == charge_id
    for retrieve in (
        api.subscriptions.retrieve,
        api.invoices.retrieve,
        api.refunds.retrieve,
        api.disputes.retrieve,
        api.customers.retrieve,
        api.payment_intents.retrieve,
    ):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            retrieve("x_missing")
        assert caught.value.code == "resource_missing"


def test_helpers_are_safe_from_several_threads(fake, api):
    stripe_api, _ = fake
    pis = [stripe_api.pay(checkout(api, key=f"k{i}").id)["payment_intent"] for i in range(8)]
    errors = []

    def work(pi):
        try:
            stripe_api.refund_in_dashboard(pi, amount=100)
            stripe_api.open_dispute(pi)
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(pi,)) for pi in pis * 3]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(stripe_api.disputes) == 24
    assert all(
        stripe_api.charges[stripe_api.payment_intents[pi]["latest_charge"]]["amount_refunded"] == 300 for pi in pis
    )


def test_expiring_a_checkout_session(fake, api):
    stripe_api, _ = fake
    session = checkout(api)
    assert api.checkout.sessions.expire(session.id).status == "expired"
    assert stripe_api.sessions[session.id]["status"] == "expired"
    with pytest.raises(stripe.InvalidRequestError):  # only an open session can be expired
        api.checkout.sessions.expire(session.id)
