"""The Stripe stand-in's subscriptions: quantity, discounts and tax on their invoices, quantity changes by the API,
the dashboard and the tests' fake, and the parameters these endpoints refuse."""

import time

import pytest
import responses
import stripe

from paygate.standins.stripe import subscriptions
from tests.fakes import Stripe
from tests.helpers.apps import BASE_CONFIG
from tests.standins.test_standins import DASHBOARD, act, state

DAY = 86400


def subscription(sc, quantity=100, code="promo_local_seats15", country="FR", **extra):
    buyer = sc.v1.customers.create(params={"email": "ap@school.example", "address": {"country": country}})
    params = {
        "customer": buyer.id,
        "items": [{"price": "price_local_seats_yearly", "quantity": quantity}],
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "metadata": {"registration_id": "reg-1"},
        "automatic_tax": {"enabled": True},
        **extra,
    }
    if code:
        params["discounts"] = [{"promotion_code": code}]
    return sc.v1.subscriptions.create(params=params)


def renew(sub_id: str) -> dict:
    """The next period starts; its invoice waits, open."""
    with state().lock:
        return subscriptions.renew(state(), state().stores["subscription"][sub_id], None)


def updates() -> list[dict]:
    return [e["data"] for e in state().events if e["type"] == "customer.subscription.updated"]


def test_first_invoice_bills_quantity_less_the_discount_plus_tax(sc):
    sub = subscription(sc)
    got = sc.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice.payments"]})
    (item,) = got["items"].data
    assert item.id.startswith("si_") and (item.quantity, item.price.id) == (100, "price_local_seats_yearly")
    assert abs(item.current_period_end - (time.time() + 365 * DAY)) < 2 * DAY
    assert got.automatic_tax.enabled is True
    invoice = got.latest_invoice
    # 100 × 3.00 = 300.00; 15 % off = 45.00; 20 % French tax on 255.00 = 51.00
    assert (invoice.status, invoice.subtotal, invoice.total_discount_amounts[0].amount) == ("draft", 30000, 4500)
    assert (invoice.total_taxes[0].amount, invoice.total_taxes[0].taxable_amount, invoice.total) == (5100, 25500, 30600)
    assert invoice.discounts == sub.discounts and invoice.payments.data == []
    assert invoice.lines.data[0].quantity == 100
    assert invoice.lines.data[0].pricing.price_details.price == "price_local_seats_yearly"
    final = sc.v1.invoices.finalize_invoice(invoice.id)
    assert (final.status, final.amount_due) == ("open", 30600)
    # a coupon for once: the first invoice only, then it leaves the subscription
    assert sc.v1.subscriptions.retrieve(sub.id).discounts == sub.discounts
    renewal = renew(sub.id)
    assert (renewal["subtotal"], renewal["total_discount_amounts"], renewal["total"]) == (30000, [], 36000)
    assert sc.v1.subscriptions.retrieve(sub.id).discounts == []


def test_a_free_code_on_a_charged_subscription_activates_it_without_a_payment(sc):
    sub = subscription(sc, quantity=10, code="promo_local_free", collection_method="charge_automatically")
    sub = sc.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice.payments"]})
    invoice = sub.latest_invoice
    assert (sub.status, invoice.status, invoice.amount_due, invoice.payments.data) == ("active", "paid", 0, [])


def test_subscription_refusals_make_nothing(sc):
    with pytest.raises(stripe.InvalidRequestError) as err:
        subscription(sc, country="US")  # no postal code: tax cannot place the customer
    assert err.value.code == "customer_tax_location_invalid"
    with pytest.raises(stripe.InvalidRequestError) as err:
        subscription(sc, code="promo_local_spring")
    assert err.value.param == "discounts[0][promotion_code]"
    assert state().stores["subscription"] == {} and state().stores["invoice"] == {}


def test_quantity_change_by_the_api_with_prorations(sc):
    sub = subscription(sc, code=None)
    sc.v1.invoices.finalize_invoice(sub.latest_invoice)
    item_id = sub["items"].data[0].id
    changed = sc.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item_id, "quantity": 120}], "proration_behavior": "create_prorations"}
    )
    assert changed["items"].data[0].quantity == 120 and changed.latest_invoice == sub.latest_invoice
    (update,) = updates()
    assert update["object"]["items"]["data"][0]["quantity"] == 120
    assert update["previous_attributes"]["items"]["data"][0]["quantity"] == 100
    pending = [i for i in state().stores["invoiceitem"].values() if i["invoice"] is None]
    assert [(i["quantity"], i["proration"], i["amount"] < 0) for i in pending] == [
        (100, True, True),
        (120, True, False),
    ]
    assert sum(i["amount"] for i in pending) == pytest.approx(6000, abs=2)  # 20 more seats, the whole year left
    renewal = renew(sub.id)
    assert len(renewal["lines"]["data"]) == 3 and renewal["lines"]["data"][0]["quantity"] == 120

    now = sc.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item_id, "quantity": 150}], "proration_behavior": "always_invoice"}
    )
    invoice = sc.v1.invoices.retrieve(now.latest_invoice)
    assert (invoice.billing_reason, invoice.status, len(invoice.lines.data)) == ("subscription_update", "open", 2)
    assert invoice.lines.data[0].parent.invoice_item_details.proration is True
    sc.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item_id, "quantity": 160}], "proration_behavior": "none"}
    )
    assert len(updates()) == 3 and len(state().stores["invoiceitem"]) == 4
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.subscriptions.update(sub.id, params={"items": [{"id": "si_unknown", "quantity": 2}]})
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "resource_missing", "items[0][id]")
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.subscriptions.update(
            sub.id, params={"items": [{"id": item_id, "quantity": 2}], "proration_behavior": "x"}
        )
    assert err.value.param == "proration_behavior"
    assert sc.v1.subscriptions.retrieve(sub.id)["items"].data[0].quantity == 160


def test_quantity_change_in_the_dashboard(sc, web):
    sub = subscription(sc, code=None)
    assert 'id="sub-quantity-' + sub.id in web.get(DASHBOARD).text
    act(web, "subscription", sub.id, "quantity", quantity="150", proration_behavior="none")
    (update,) = updates()
    assert update["object"]["items"]["data"][0]["quantity"] == 150
    assert update["previous_attributes"]["items"]["data"][0]["quantity"] == 100
    assert "refused" in act(web, "subscription", sub.id, "quantity", quantity="many").headers["Location"]
    assert sc.v1.subscriptions.retrieve(sub.id)["items"].data[0].quantity == 150


def test_quantity_change_by_the_fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = Stripe(rsps, BASE_CONFIG)
        fake.set_price(recurring="year")
        api = stripe.StripeClient(api_key=BASE_CONFIG["stripe_secret_key"], max_network_retries=0).v1
        buyer = api.customers.create(params={"email": "ap@school.example"})
        sub = api.subscriptions.create(
            params={
                "customer": buyer.id,
                "items": [{"price": "price_registration", "quantity": 3}],
                "collection_method": "send_invoice",
                "days_until_due": 30,
            }
        )
        changed = fake.change_quantity(sub.id, 5)
        assert changed["items"]["data"][0]["quantity"] == 5
        (event,) = [e for e in fake.state.events if e["type"] == "customer.subscription.updated"]
        assert event["data"]["previous_attributes"]["items"]["data"][0]["quantity"] == 3


@pytest.mark.parametrize(
    ("call", "params", "name"),
    [
        ("customers.create", {"email": "a@b.example", "address": {"planet": "Mars"}}, "address[planet]"),
        (
            "invoices.create",
            {"customer": "cus_x", "discounts": [{"promotion_code": "p", "bogus": "1"}]},
            "discounts[0][bogus]",
        ),
        ("invoice_items.create", {"customer": "cus_x", "bogus": "1"}, "bogus"),
        ("subscriptions.create", {"customer": "cus_x", "items": [{"price": "p", "prize": "1"}]}, "items[0][prize]"),
        ("subscriptions.list", {"customer": "cus_x", "bogus": "1"}, "bogus"),
        ("invoices.list", {"bogus": "1"}, "bogus"),
    ],
)
def test_unknown_parameters_are_refused(sc, call, params, name):
    group, method = call.split(".")
    with pytest.raises(stripe.InvalidRequestError) as err:
        getattr(getattr(sc.v1, group), method)(params=params)
    error = err.value.json_body["error"]
    assert (err.value.http_status, error["code"], error["param"]) == (400, "parameter_unknown", name)
    assert error["message"] == f"Received unknown parameter: {name}"


def test_unknown_parameters_on_updates_and_actions(sc):
    sub = subscription(sc, code=None)
    for call, args in (
        (sc.v1.subscriptions.update, (sub.id, {"foo": "1"})),
        (sc.v1.invoices.finalize_invoice, (sub.latest_invoice, {"foo": "1"})),
        (sc.v1.subscriptions.cancel, (sub.id, {"foo": "1"})),
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call(args[0], params=args[1])
        assert (err.value.code, err.value.param) == ("parameter_unknown", "foo")
