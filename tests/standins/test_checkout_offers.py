"""Checkout on the Stripe stand-in for several offers: seats and tiers, promotion codes, automatic tax, custom
fields, a paid invoice; seen as a user of Stripe sees them (the real `stripe` library, the hosted page)."""

import json

import pytest
import stripe

from paygate.standins.stripe.state import State, make_price
from tests.standins.test_standins import create_session, pay, state

SEATS, TIERED = "price_local_seats_yearly", "price_local_tiered"
ORGANISATION = {
    "key": "organisation",
    "label": {"type": "custom", "custom": "School or organisation"},
    "type": "text",
    "optional": False,
    "text": {"maximum_length": 200},
}


def session_of(sc, session_id):
    return sc.v1.checkout.sessions.retrieve(
        session_id, params={"expand": ["line_items", "discounts.promotion_code"]}
    ).to_dict()


def amounts(session: dict) -> tuple:
    details = session["total_details"]
    return session["amount_subtotal"], details["amount_discount"], details["amount_tax"], session["amount_total"]


def subscribe(sc, price=SEATS, quantity=120, **overrides):
    return create_session(
        sc,
        mode="subscription",
        line_items=[{"price": price, "quantity": quantity}],
        subscription_data={"metadata": {"registration_id": "reg-1"}},
        **overrides,
    )


def page_text(web, session_id) -> str:
    return web.get(f"/_local/stripe/checkout/{session_id}").get_data(as_text=True)


def error_of(exc: pytest.ExceptionInfo) -> tuple:
    error = exc.value.json_body["error"]
    return exc.value.http_status, error.get("code"), error.get("param"), error["message"]


# --- seats and tiers ------------------------------------------------------------------------------------------


def test_seats_bill_quantity_times_the_unit_price_on_the_session_and_the_subscription(sc, web):
    session = session_of(sc, subscribe(sc).id)
    item = session["line_items"]["data"][0]
    assert amounts(session) == (36000, 0, 0, 36000)
    assert (item["quantity"], item["amount_subtotal"], item["amount_total"]) == (120, 36000, 36000)
    assert item["price"]["metadata"] == {"seats": "10-5000", "seat_unit": "student"}
    html = page_text(web, session["id"])
    assert 'id="quantity">120<' in html and 'id="subtotal">360.00 USD<' in html and 'id="amount">360.00 USD' in html
    assert pay(web, session["id"]).status_code == 303
    paid = sc.v1.checkout.sessions.retrieve(session["id"], params={"expand": ["subscription", "invoice"]})
    assert (paid.payment_status, paid.subscription.status, paid.subscription["items"].data[0].quantity) == (
        "paid",
        "active",
        120,
    )
    assert paid.invoice.amount_paid == 36000


def test_a_graduated_price_bills_each_tier_and_a_volume_price_one_tier(sc):
    graduated = session_of(sc, create_session(sc, line_items=[{"price": TIERED, "quantity": 60}]).id)
    assert amounts(graduated) == (10 * 2000 + 40 * 1500 + 10 * 1000, 0, 0, 90000)
    state().prices["price_volume"] = make_price(
        "price_volume",
        "prod_local_tiered",
        tiers_mode="volume",
        tiers=[
            {"up_to": 50, "unit_amount": 1500, "flat_amount": None},
            {"up_to": None, "unit_amount": 1000, "flat_amount": 500},
        ],
    )
    volume = session_of(sc, create_session(sc, line_items=[{"price": "price_volume", "quantity": 60}]).id)
    assert amounts(volume) == (60 * 1000 + 500, 0, 0, 60500)
    assert volume["line_items"]["data"][0]["quantity"] == 60
    tiers = sc.v1.prices.retrieve("price_volume", params={"expand": ["tiers"]}).tiers
    assert [(t.up_to, t.unit_amount) for t in tiers] == [(50, 1500), (None, 1000)]


@pytest.mark.parametrize("quantity", [0, 1000000])
def test_a_quantity_out_of_range_is_refused(sc, quantity):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        create_session(sc, line_items=[{"price": SEATS, "quantity": quantity}], mode="subscription")
    assert error_of(exc)[:3] == (400, "parameter_invalid_integer", "line_items[0][quantity]")


# --- promotion codes ------------------------------------------------------------------------------------------


def test_a_percent_code_given_by_the_caller_discounts_and_counts_once_paid(sc, web):
    session = session_of(sc, create_session(sc, discounts=[{"promotion_code": "promo_local_school20"}]).id)
    assert amounts(session) == (4900, 980, 0, 3920)
    assert session["discounts"][0]["coupon"] == "co_local_school20"
    assert session["discounts"][0]["promotion_code"]["code"] == "SCHOOL20"
    assert session["line_items"]["data"][0]["amount_discount"] == 980
    assert sc.v1.promotion_codes.retrieve("promo_local_school20").times_redeemed == 0
    assert pay(web, session["id"]).status_code == 303
    assert sc.v1.payment_intents.retrieve(session_of(sc, session["id"])["payment_intent"]).amount == 3920
    assert sc.v1.promotion_codes.retrieve("promo_local_school20").times_redeemed == 1


def test_an_amount_code_typed_on_the_page_is_applied(sc, web):
    session = create_session(sc, allow_promotion_codes=True)
    assert 'id="promotion-code"' in page_text(web, session.id) and 'id="apply-code"' in page_text(web, session.id)
    applied = pay(web, session.id, promotion_code="partner10", apply="1")
    assert applied.status_code == 200 and 'id="discount">-10.00 USD<' in applied.get_data(as_text=True)
    assert amounts(session_of(sc, session.id)) == (4900, 1000, 0, 3900)
    assert pay(web, session.id).status_code == 303
    assert session_of(sc, session.id)["payment_status"] == "paid"


def test_a_100_percent_code_completes_without_a_payment(sc, web):
    session = create_session(sc, allow_promotion_codes=True)
    assert pay(web, session.id, promotion_code="PILOT100", apply="1").status_code == 200
    assert 'id="pay" name="method" value="card">Complete order<' in page_text(web, session.id)
    assert pay(web, session.id).status_code == 303
    done = session_of(sc, session.id)
    assert (done["status"], done["payment_status"], done["payment_intent"], done["amount_total"]) == (
        "complete",
        "no_payment_required",
        None,
        0,
    )
    assert state().stores["payment_intent"] == {}
    assert "checkout.session.completed" in [e["type"] for e in state().events]


def test_a_100_percent_code_on_a_subscription_makes_it_active_with_a_paid_invoice_of_nothing(sc, web):
    session = subscribe(sc, discounts=[{"promotion_code": "promo_local_free"}])
    assert pay(web, session.id).status_code == 303
    done = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription", "invoice"]})
    assert (done.payment_status, done.subscription.status, done.customer is not None) == (
        "no_payment_required",
        "active",
        True,
    )
    assert (done.invoice.status, done.invoice.amount_paid, done.invoice.total) == ("paid", 0, 0)
    assert done.invoice.total_discount_amounts[0].amount == 36000
    assert state().stores["payment_intent"] == {}


@pytest.mark.parametrize("promo", ["promo_local_spring", "promo_local_inactive"])
def test_an_expired_or_inactive_code_is_refused_by_the_api_and_on_the_page(sc, web, promo):
    state().promotion_codes["promo_local_inactive"] = {
        **state().promotion_codes["promo_local_school20"],
        "id": "promo_local_inactive",
        "code": "OFF20",
        "active": False,
    }
    with pytest.raises(stripe.InvalidRequestError) as exc:
        create_session(sc, discounts=[{"promotion_code": promo}])
    assert error_of(exc)[:3] == (400, "coupon_expired", "discounts[0][promotion_code]")
    session = create_session(sc, allow_promotion_codes=True)
    refused = pay(web, session.id, promotion_code=state().promotion_codes[promo]["code"], apply="1")
    assert refused.status_code == 400 and "This code is invalid." in refused.get_data(as_text=True)
    assert amounts(session_of(sc, session.id)) == (4900, 0, 0, 4900)


def test_a_code_for_another_product_is_refused(sc, web):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        create_session(sc, discounts=[{"promotion_code": "promo_local_seats15"}])
    assert error_of(exc)[:3] == (400, "parameter_invalid", "discounts[0][promotion_code]")
    session = create_session(sc, allow_promotion_codes=True)
    assert "This code is invalid." in pay(web, session.id, promotion_code="SEATS15", apply="1").get_data(as_text=True)
    assert session_of(sc, session.id)["discounts"] == []
    seats = session_of(sc, subscribe(sc, discounts=[{"promotion_code": "promo_local_seats15"}]).id)
    assert amounts(seats) == (36000, 5400, 0, 30600)


def test_codes_and_allow_promotion_codes_exclude_each_other(sc):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        create_session(sc, allow_promotion_codes=True, discounts=[{"promotion_code": "promo_local_school20"}])
    assert error_of(exc)[3] == "You may only specify one of these parameters: allow_promotion_codes, discounts."


def test_promotion_codes_are_listed_by_code_case_insensitively(sc):
    listed = sc.v1.promotion_codes.list(
        params={"code": "school20", "active": True, "limit": 1, "expand": ["data.promotion.coupon"]}
    )
    assert [(p.id, p.code, p.promotion.coupon.percent_off) for p in listed.data] == [
        ("promo_local_school20", "SCHOOL20", 20)
    ]
    assert sc.v1.promotion_codes.list(params={"code": "SPRING2025", "active": True}).data == []
    one = sc.v1.promotion_codes.retrieve("promo_local_partner10", params={"expand": ["promotion.coupon"]})
    assert (one.promotion.type, one.promotion.coupon.amount_off, one.promotion.coupon.currency) == (
        "coupon",
        1000,
        "usd",
    )
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.promotion_codes.retrieve("promo_nothing")


def test_codes_used_survive_a_restart(sc, web):
    session = create_session(sc, discounts=[{"promotion_code": "promo_local_school20"}])
    pay(web, session.id)
    saved = json.loads(json.dumps(state().dump()))
    again = State(state().settings)
    again.load(saved)
    assert again.promotion_codes["promo_local_school20"]["times_redeemed"] == 1
    assert again.coupons["co_local_school20"]["times_redeemed"] == 1


# --- tax, custom fields, invoice ------------------------------------------------------------------------------


def test_automatic_tax_needs_a_location_and_adds_the_tax(sc, web):
    session = create_session(
        sc, automatic_tax={"enabled": True}, discounts=[{"promotion_code": "promo_local_school20"}]
    )
    assert session_of(sc, session.id)["automatic_tax"]["status"] == "requires_location_inputs"
    html = page_text(web, session.id)
    assert 'id="country"' in html and 'id="postal-code"' in html
    refused = pay(web, session.id, country="US", postal_code="")
    assert refused.status_code == 400 and 'id="error"' in refused.get_data(as_text=True)
    assert session_of(sc, session.id)["status"] == "open"
    assert pay(web, session.id, country="FR", postal_code="75001").status_code == 303
    done = session_of(sc, session.id)
    assert amounts(done) == (4900, 980, 784, 4704)  # 20 % of 39.20
    assert done["automatic_tax"]["status"] == "complete"
    assert done["customer_details"]["address"]["country"] == "FR"
    assert done["line_items"]["data"][0]["amount_tax"] == 784


def test_the_payer_fills_in_the_custom_field_and_a_tax_id(sc, web):
    session = create_session(sc, custom_fields=[ORGANISATION], tax_id_collection={"enabled": True})
    html = page_text(web, session.id)
    assert '<label for="custom-organisation">School or organisation</label>' in html and 'id="tax-id"' in html
    assert pay(web, session.id, country="DE", postal_code="10115").status_code == 400  # the field is required
    assert (
        pay(
            web,
            session.id,
            name="Ada Admin",
            country="DE",
            postal_code="10115",
            tax_id="de 123456789",
            **{"custom-organisation": "Gymnasium Mitte"},
        ).status_code
        == 303
    )
    done = session_of(sc, session.id)
    assert done["custom_fields"][0]["text"]["value"] == "Gymnasium Mitte"
    assert done["custom_fields"][0]["label"] == {"custom": "School or organisation", "type": "custom"}
    details = done["customer_details"]
    assert (details["name"], details["tax_ids"]) == ("Ada Admin", [{"type": "eu_vat", "value": "DE123456789"}])


def test_invoice_creation_makes_a_paid_invoice_linked_to_the_session(sc, web):
    session = create_session(
        sc,
        line_items=[{"price": TIERED, "quantity": 12}],
        automatic_tax={"enabled": True},
        discounts=[{"promotion_code": "promo_local_partner10"}],
        invoice_creation={"enabled": True, "invoice_data": {"metadata": {"registration_id": "reg-1"}}},
    )
    assert session_of(sc, session.id)["invoice_creation"]["enabled"] is True
    assert pay(web, session.id, country="ES", postal_code="28001").status_code == 303
    done = session_of(sc, session.id)
    subtotal = 10 * 2000 + 2 * 1500
    assert amounts(done) == (subtotal, 1000, 4620, subtotal - 1000 + 4620)  # 21 % of 220.00
    invoice = sc.v1.invoices.retrieve(done["invoice"], params={"expand": ["payments"]})
    assert (invoice.status, invoice.collection_method, invoice.amount_paid, invoice.total) == (
        "paid",
        "charge_automatically",
        done["amount_total"],
        done["amount_total"],
    )
    line = invoice.lines.data[0]
    assert (line.quantity, line.pricing.price_details.price) == (12, TIERED)
    assert [d.amount for d in invoice.total_discount_amounts] == [1000]
    assert [t.amount for t in invoice.total_taxes] == [4620]
    assert invoice.metadata.to_dict() == {"registration_id": "reg-1"}
    assert invoice.payments.data[0].payment.payment_intent == done["payment_intent"]
    assert invoice.hosted_invoice_url
    pdf = web.get(invoice.invoice_pdf.removeprefix("http://svc.test"))
    assert pdf.status_code == 200 and invoice.number in pdf.get_data(as_text=True)


def test_invoice_creation_and_customer_creation_are_for_payment_mode_only(sc):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        subscribe(sc, invoice_creation={"enabled": True})
    assert error_of(exc)[3].startswith("You can only enable invoice creation when `mode` is set to `payment`.")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        subscribe(sc, customer_creation="always")
    assert error_of(exc)[3] == "`customer_creation` can only be used in `payment` mode."


# --- unknown parameters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"payment_method_types": ["card"]}, "payment_method_types"),
        ({"custom_fields": [{**ORGANISATION, "colour": "red"}]}, "custom_fields[0][colour]"),
        ({"automatic_tax": {"enabled": True, "rate": "5"}}, "automatic_tax[rate]"),
        ({"line_items": [{"price": "price_x", "quantity": 1, "seats": 3}]}, "line_items[0][seats]"),
    ],
)
def test_checkout_refuses_unknown_parameters(sc, overrides, name):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        create_session(sc, **overrides)
    assert error_of(exc) == (400, "parameter_unknown", name, f"Received unknown parameter: {name}")
    assert exc.value.json_body["error"]["type"] == "invalid_request_error"
    assert state().stores["checkout.session"] == {}


def test_the_service_s_full_request_is_accepted(sc):
    session = create_session(
        sc,
        locale="es",
        allowed_payment_method_types=["card"],
        customer_creation="always",
        allow_promotion_codes=True,
        automatic_tax={"enabled": True},
        tax_id_collection={"enabled": True},
        custom_fields=[ORGANISATION],
        invoice_creation={"enabled": True, "invoice_data": {"metadata": {"registration_id": "reg-1"}}},
        payment_intent_data={"metadata": {"registration_id": "reg-1"}},
    )
    assert (session.payment_method_types, session.allowed_payment_method_types) == (["card"], ["card"])
    listed = sc.v1.checkout.sessions.list(params={"limit": 1, "expand": ["data.line_items"]})
    assert listed.data[0].line_items.data[0].amount_total == 4900
