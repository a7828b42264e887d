"""The Stripe stand-in's invoices: quantity and tiers, promotion codes, the stand-in's tax, and the totals Stripe
derives from them, driven by the real `stripe` library."""

from urllib.parse import urlsplit

import pytest
import stripe

from tests.standins.test_standins import state


def customer(sc, **address):
    params = {"email": "ap@school.example", "name": "School"}
    if address:
        params["address"] = address
    return sc.v1.customers.create(params=params)


def draft(sc, customer_id, **extra):
    params = {
        "customer": customer_id,
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "auto_advance": False,
        "pending_invoice_items_behavior": "exclude",
        "metadata": {"registration_id": "reg-1"},
        **extra,
    }
    return sc.v1.invoices.create(params=params)


def bill(sc, invoice, price="price_local_yearly", quantity=None):
    params = {"customer": invoice.customer, "invoice": invoice.id, "pricing": {"price": price}}
    if quantity is not None:
        params["quantity"] = quantity
    return sc.v1.invoice_items.create(params=params)


def invoice_count() -> int:
    return len(state().stores["invoice"])


def test_customer_keeps_its_address(sc):
    made = customer(sc, country="es", postal_code="28001")
    assert made.address.to_dict() == {
        "city": None,
        "country": "ES",
        "line1": None,
        "line2": None,
        "postal_code": "28001",
        "state": None,
    }
    assert sc.v1.customers.retrieve(made.id).address.country == "ES"
    assert customer(sc).address is None


def test_invoice_bills_quantity_and_tiers(sc):
    invoice = draft(sc, customer(sc).id)
    # graduated: the first 10 teachers at 20.00, the next 5 at 15.00
    item = bill(sc, invoice, "price_local_tiered", 15)
    assert (item.amount, item.quantity, item.pricing.price_details.price) == (27500, 15, "price_local_tiered")
    bill(sc, invoice, "price_local_yearly", 2)
    got = sc.v1.invoices.retrieve(invoice.id)
    assert [(line.quantity, line.amount, line.pricing.price_details.price) for line in got.lines.data] == [
        (15, 27500, "price_local_tiered"),
        (2, 9800, "price_local_yearly"),
    ]
    assert (got.subtotal, got.total, got.amount_due, got.total_taxes, got.total_discount_amounts) == (
        37300,
        37300,
        37300,
        [],
        [],
    )
    final = sc.v1.invoices.finalize_invoice(invoice.id)
    assert (final.amount_due, final.amount_remaining) == (37300, 37300)


@pytest.mark.parametrize(
    ("code", "off"),
    [("promo_local_school20", 980), ("promo_local_partner10", 1000)],
)
def test_promotion_code_on_an_invoice(sc, code, off):
    invoice = draft(sc, customer(sc).id, discounts=[{"promotion_code": code}])
    assert len(invoice.discounts) == 1 and invoice.discounts[0].startswith("di_")
    bill(sc, invoice)
    got = sc.v1.invoices.retrieve(invoice.id)
    assert got.subtotal == 4900 and got.total == 4900 - off
    assert [d.to_dict() for d in got.total_discount_amounts] == [{"amount": off, "discount": invoice.discounts[0]}]
    assert got.lines.data[0].discount_amounts[0].amount == off
    assert state().promotion_codes[code]["times_redeemed"] == 1
    final = sc.v1.invoices.finalize_invoice(invoice.id)
    assert (final.status, final.amount_due) == ("open", 4900 - off)


def test_a_product_restricted_code_discounts_only_its_lines(sc):
    invoice = draft(sc, customer(sc).id, discounts=[{"promotion_code": "promo_local_seats15"}])
    bill(sc, invoice, "price_local_seats_yearly", 10)  # 3000, 15 % off
    bill(sc, invoice)  # 4900, another product
    got = sc.v1.invoices.retrieve(invoice.id)
    assert (got.subtotal, got.total_discount_amounts[0].amount, got.total) == (7900, 450, 7450)
    assert [len(line.discount_amounts) for line in got.lines.data] == [1, 0]


def test_a_100_percent_code_is_paid_at_finalize(sc, net):
    invoice = draft(sc, customer(sc).id, discounts=[{"promotion_code": "promo_local_free"}])
    bill(sc, invoice)
    final = sc.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": False})
    assert (final.status, final.total, final.amount_due, final.amount_paid, final.amount_remaining) == (
        "paid",
        0,
        0,
        0,
        0,
    )
    assert final.status_transitions.paid_at
    assert sc.v1.invoices.send_invoice(invoice.id).status == "paid"  # Stripe sends a paid invoice too
    assert [e["type"] for e in state().events] == ["invoice.finalized", "invoice.paid", "invoice.sent"]
    assert sc.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]}).payments.data == []


@pytest.mark.parametrize(
    ("code", "param", "error"),
    [
        ("promo_local_spring", "discounts[0][promotion_code]", "coupon_expired"),  # inactive and expired
        ("promo_nope", "discounts[0][promotion_code]", "resource_missing"),
    ],
)
def test_an_unusable_or_unknown_code_is_refused_and_nothing_made(sc, code, param, error):
    buyer = customer(sc)
    with pytest.raises(stripe.InvalidRequestError) as err:
        draft(sc, buyer.id, discounts=[{"promotion_code": code}])
    assert (err.value.http_status, err.value.code, err.value.param) == (400, error, param)
    assert invoice_count() == 0


def test_a_used_up_code_is_refused(sc):
    buyer = customer(sc)
    state().promotion_codes["promo_local_school20"].update(max_redemptions=1)
    draft(sc, buyer.id, discounts=[{"promotion_code": "promo_local_school20"}])
    with pytest.raises(stripe.InvalidRequestError) as err:
        draft(sc, buyer.id, discounts=[{"promotion_code": "promo_local_school20"}])
    assert (err.value.http_status, err.value.param) == (400, "discounts[0][promotion_code]")
    assert invoice_count() == 1 and state().promotion_codes["promo_local_school20"]["times_redeemed"] == 1


@pytest.mark.parametrize("address", [{}, {"country": "US"}])  # none, or a US one without a postal code
def test_automatic_tax_needs_a_locatable_customer(sc, address):
    buyer = customer(sc, **address)
    with pytest.raises(stripe.InvalidRequestError) as err:
        draft(sc, buyer.id, automatic_tax={"enabled": True}, discounts=[{"promotion_code": "promo_local_school20"}])
    assert (err.value.http_status, err.value.code) == (400, "customer_tax_location_invalid")
    assert invoice_count() == 0 and state().promotion_codes["promo_local_school20"]["times_redeemed"] == 0


def test_tax_on_the_discounted_amount_in_total_taxes_and_total(sc, web):
    buyer = customer(sc, country="ES", postal_code="28001")
    invoice = draft(
        sc, buyer.id, automatic_tax={"enabled": True}, discounts=[{"promotion_code": "promo_local_school20"}]
    )
    assert invoice.automatic_tax.enabled is True and invoice.automatic_tax.status == "complete"
    bill(sc, invoice)
    final = sc.v1.invoices.finalize_invoice(invoice.id)
    # 49.00 - 20 % = 39.20; 21 % Spanish tax on it = 8.23
    (taxed,) = final.total_taxes
    assert taxed.to_dict() == {
        "amount": 823,
        "tax_behavior": "exclusive",
        "taxability_reason": "standard_rated",
        "taxable_amount": 3920,
        "type": "tax_rate_details",
        "tax_rate_details": {"tax_rate": "txr_local_es"},
    }
    assert (final.subtotal, final.total_excluding_tax, final.total, final.amount_due) == (4900, 3920, 4743, 4743)
    assert final.lines.data[0].taxes[0].amount == 823 and final.customer_address.country == "ES"
    got = sc.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert (got.total, got.payments.data, got.discounts) == (4743, [], invoice.discounts)
    page = web.get(urlsplit(final.invoice_pdf).path)
    assert page.status_code == 200 and final.number in page.text and "47.43 USD" in page.text
    paid = sc.v1.invoices.pay(invoice.id, params={"expand": ["payments"]})
    assert (paid.amount_paid, paid.payments.data[0].amount_requested) == (4743, 4743)


def test_a_draft_has_no_pdf(sc, web):
    invoice = draft(sc, customer(sc).id)
    assert web.get(f"/_local/stripe/invoices/{invoice.id}/pdf").status_code == 404
