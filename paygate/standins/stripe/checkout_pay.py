"""Paying a Checkout Session: the payer's details, the payment (none when nothing is due), the subscription, the
paid invoice of `invoice_creation`, the promotion code counted; and a delayed payment settling."""

from paygate.standins.stripe import (
    charges,
    checkout_terms,
    core,
    customers,
    events,
    invoices,
    prices,
    promotions,
    subscriptions,
    tax,
)

TAX_ID_TYPES = ("eu_vat", "gb_vat", "us_ein", "unknown")  # what the page offers (Stripe knows many more)
NEEDS_LOCATION = "Enter your country and postal code: tax is calculated from them."


class Refused(ValueError):
    """What the payer entered cannot be paid with; the page shows the sentence, nothing changes."""


def _address(record: dict, address: dict | None) -> dict | None:
    """The billing address Checkout asks for (country and postal code) when it taxes or collects a tax ID."""
    if not (record["automatic_tax"]["enabled"] or record.get("tax_id_collection")):
        return None
    given = {k: " ".join(str(v).split()) or None for k, v in (address or {}).items()}
    country = (given.get("country") or "").upper() or None
    if record["automatic_tax"]["enabled"] and not tax.locatable({**given, "country": country}):
        raise Refused(NEEDS_LOCATION)
    keys = ("city", "line1", "line2", "postal_code", "state")
    return {"country": country, **{k: given.get(k) for k in keys}} if country else None


def _tax_ids(record: dict, tax_id) -> list[dict]:
    """The payer's tax ID ({type, value}; a bare value is an EU VAT number), when the session collects one."""
    if not record.get("tax_id_collection") or not tax_id:
        return []
    kind, value = (tax_id.get("type"), tax_id.get("value")) if isinstance(tax_id, dict) else ("eu_vat", tax_id)
    value = "".join(str(value or "").split()).upper()
    if not value:
        return []
    if kind not in TAX_ID_TYPES or len(value) > 64:
        raise Refused("This tax ID is invalid.")
    return [{"type": kind, "value": value}]


def pay(
    st,
    record: dict,
    email: str,
    currency: str,
    delayed: bool,
    name: str | None = None,
    fields: dict | None = None,
    address: dict | None = None,
    tax_id=None,
) -> None:
    """The admin pays: a PaymentIntent (payment mode: a guest, unless the session asked for a customer or an
    invoice), or a customer, a subscription and its first invoice; nothing to pay when the total is 0. `fields`
    (key -> value) fill the custom fields; `address` (country, postal_code) places the payer for tax. What cannot
    be paid with raises Refused, nothing changed."""
    location = _address(record, address)
    tax_ids = _tax_ids(record, tax_id)
    # A test that changes what was bought (the quantities) gets the amounts billed for it; one that changes only an
    # amount or a line's price keeps its change, as a session Stripe answered with.
    changed = [item["quantity"] for item in record["_line_items"]] != [q for _, q in record["_chosen"]]
    try:  # amounts follow the quantities, the currency chosen and, taxed, the address; otherwise they stay
        if changed or currency != record["currency"] or record["automatic_tax"]["enabled"]:
            checkout_terms.recompute(st, record, currency, address=location)
    except core.StripeFail:  # the code's amount is in another currency than the one chosen
        checkout_terms.recompute(st, record)
        raise Refused(checkout_terms.INVALID_CODE) from None
    problem = checkout_terms.fill_fields(record["custom_fields"], fields or {})
    if problem:
        raise Refused(problem)
    invoiced = (record.get("invoice_creation") or {}).get("enabled")
    guest = record["mode"] == "payment" and record.get("customer_creation") != "always" and not invoiced
    if record.get("customer"):  # the session was made for a Customer: it pays, none is created
        customer = core.get(st, "customer", record["customer"])
        customer["address"] = location or customer.get("address")
    else:
        customer = None if guest else customers.create(st, email, name or None)
        if customer is not None:
            customer["address"] = location
    free = record["amount_total"] == 0
    outcome = "processing" if delayed and not free else "succeeded"
    pi = None
    if record["mode"] == "payment" and not free:
        names = ", ".join(prices.product_name(st, p) for p, _ in record["_chosen"])
        pi = charges.create_payment(
            st,
            record["amount_total"],
            currency,
            customer and customer["id"],
            email,
            record["_pi_metadata"],
            names,
            outcome,
        )
        pi["_session"] = record["id"]
        record["payment_intent"] = pi["id"]
    elif record["mode"] == "subscription":
        price, quantity = record["_chosen"][0]
        sub = subscriptions.start(
            st,
            customer,
            price,
            quantity,
            currency,
            record["_sub_metadata"],
            outcome=outcome,
            first_invoice=lambda invoice: _discount_and_tax(st, record, invoice),
        )
        invoice = core.get(st, "invoice", sub["latest_invoice"])
        paid_by = [p["payment"]["payment_intent"] for p in invoice["_payments"]]
        pi = core.get(st, "payment_intent", paid_by[-1]) if paid_by else None
        record.update(subscription=sub["id"], invoice=invoice["id"])
    record.update(
        status="complete",
        payment_status="no_payment_required" if free else "unpaid" if delayed else "paid",
        customer=customer and customer["id"],
        _pi=pi and pi["id"],
        customer_details={
            "address": location,
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": name or None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": tax_ids,
        },
    )
    if record["_promo"]:
        promotions.redeem(st, promotions.find(st, record["_promo"]))
    if invoiced and record["payment_status"] != "unpaid":  # the completed session names its invoice
        _invoice(st, record, customer, pi)
    events.emit(st, "checkout.session.completed", record)


def settle(st, record: dict, succeeded: bool) -> None:
    """A pending bank transfer arrives or fails; the session's async event follows its invoice's events."""
    pi = core.get(st, "payment_intent", record["_pi"])
    charges.settle(st, pi, succeeded)
    invoices.payment_settled(st, pi)
    if succeeded:
        record["payment_status"] = "paid"
    events.emit(st, f"checkout.session.async_payment_{'succeeded' if succeeded else 'failed'}", record)
    if succeeded and (record.get("invoice_creation") or {}).get("enabled") and not record["invoice"]:
        _invoice(st, record, core.get(st, "customer", record["customer"]), pi)


# --- the invoice ----------------------------------------------------------------------------------------------


def _tax_entry(amount: int, base: int, address: dict | None) -> dict:
    """A line's tax as Stripe shows it on an invoice, tax exclusive, at the stand-in's rate for the address."""
    country = ((address or {}).get("country") or "").lower() or "default"
    return {
        "amount": amount,
        "tax_behavior": "exclusive",
        "taxability_reason": "standard_rated" if tax.rate(address) else "not_collecting",
        "taxable_amount": base,
        "type": "tax_rate_details",
        "tax_rate_details": {"tax_rate": f"txr_local_{country}"},
    }


def _discount(record: dict, customer: dict, invoice: dict) -> dict | None:
    """The Discount the session's promotion code made (the shape Stripe gives invoices' `discounts`)."""
    if not record["_promo"]:
        return None
    return {
        "id": "di_" + core.rand(24),
        "object": "discount",
        "checkout_session": record["id"],
        "customer": customer["id"],
        "customer_account": None,
        "end": None,
        "invoice": invoice["id"],
        "invoice_item": None,
        "promotion_code": record["_promo"],
        "source": {"coupon": record["discounts"][0]["coupon"], "type": "coupon"},
        "start": core.now(),
        "subscription": ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription"),
        "subscription_item": None,
    }


def _discount_and_tax(st, record: dict, invoice: dict) -> None:
    """Bill on the invoice what the session's line items came to: each line's discount and tax, and the totals;
    an invoice of nothing is paid as soon as it is finalised."""
    customer = core.get(st, "customer", invoice["customer"])
    discount = _discount(record, customer, invoice)
    address = record["_address"]
    off, taxes = 0, {}
    for line, item in zip(invoice["lines"]["data"], record["_line_items"], strict=False):
        line["discount_amounts"] = [{"amount": item["amount_discount"], "discount": discount["id"]}] if discount else []
        base = item["amount_subtotal"] - item["amount_discount"]
        taxed = record["automatic_tax"]["enabled"]
        line["taxes"] = [_tax_entry(item["amount_tax"], base, address)] if taxed else []
        off += item["amount_discount"]
        for entry in line["taxes"]:
            summed = taxes.setdefault(
                entry["tax_rate_details"]["tax_rate"], {**entry, "amount": 0, "taxable_amount": 0}
            )
            summed["amount"] += entry["amount"]
            summed["taxable_amount"] += entry["taxable_amount"]
    subtotal = sum(line["amount"] for line in invoice["lines"]["data"])
    total = subtotal - off + sum(t["amount"] for t in taxes.values())
    invoice.update(
        automatic_tax=checkout_terms.automatic_tax(record["automatic_tax"]["enabled"], "complete"),
        customer_address=address,
        discounts=[discount["id"]] if discount else [],
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal,
        total_discount_amounts=[{"amount": off, "discount": discount["id"]}] if discount else [],
        total_taxes=list(taxes.values()),
        total_excluding_tax=subtotal - off,
        total=total,
        amount_due=total,
        amount_remaining=total,
        _discounts=[discount] if discount else [],
    )


def _invoice(st, record: dict, customer: dict, pi: dict | None) -> None:
    """The paid invoice of a payment-mode session with `invoice_creation`: its lines, totals and metadata, finalised
    and paid by the session's payment (or with nothing due); invoice.finalized, invoice.paid."""
    data = record["invoice_creation"]["invoice_data"]
    invoice = invoices.create(
        st,
        customer,
        currency=record["currency"],
        meta=dict(data["metadata"]),
        fields=data["custom_fields"],
        description=data["description"],
    )
    invoice["footer"] = data["footer"]
    ts = core.now()
    for price, quantity in record["_chosen"]:
        amount = prices.total(price, quantity, record["currency"])
        invoice["lines"]["data"].append(
            {
                "id": "il_" + core.rand(24),
                "object": "line_item",
                "amount": amount,
                "currency": record["currency"],
                "description": prices.product_name(st, price),
                "discount_amounts": [],
                "discountable": True,
                "discounts": [],
                "invoice": invoice["id"],
                "livemode": False,
                "metadata": {},
                "parent": {
                    "type": "invoice_item_details",
                    "invoice_item_details": {"invoice_item": None, "proration": False, "subscription": None},
                    "subscription_item_details": None,
                },
                "period": {"start": ts, "end": ts},
                "pretax_credit_amounts": [],
                "pricing": {
                    "type": "price_details",
                    "unit_amount_decimal": str(amount // quantity if amount % quantity == 0 else amount / quantity),
                    "price_details": {"price": price["id"], "product": price["product"]},
                },
                "quantity": quantity,
                "subtotal": amount,
                "taxes": [],
            }
        )
    _discount_and_tax(st, record, invoice)
    if pi is not None:
        invoice["_payments"].append(
            {
                "id": "inpay_" + core.rand(24),
                "object": "invoice_payment",
                "amount_paid": pi["amount"],
                "amount_requested": pi["amount"],
                "created": pi["created"],
                "currency": pi["currency"],
                "invoice": invoice["id"],
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                "status": "paid",
                "status_transitions": {"canceled_at": None, "paid_at": ts},
            }
        )
        invoice.update(attempted=True, attempt_count=1)
    invoices.finalize(st, invoice)  # numbered, its hosted URL; an invoice of nothing is paid here
    if invoice["invoice_pdf"] == invoice["hosted_invoice_url"]:  # no PDF of its own: the one Checkout's page serves
        invoice["invoice_pdf"] = (
            f"{st.settings.public_url.rstrip('/')}/_local/stripe/checkout/{record['id']}/invoice.pdf"
        )
    if invoice["status"] != "paid":
        invoices.mark_paid(st, invoice, pi)
    record["invoice"] = invoice["id"]
