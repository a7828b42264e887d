"""Invoices and invoice items: drafts, lines, finalising, sending, paying, voiding, writing off."""

import copy

from paygate.standins.stripe import charges, core, customers, events, prices

DEFAULT_DAYS_UNTIL_DUE = 30  # Stripe's default payment terms (Billing st)
RETRY_DAYS = 3  # when a failed automatic payment is tried again
PAYABLE = ("open", "uncollectible")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")


def create(
    st,
    customer: dict,
    *,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    currency: str = "usd",
    meta: dict | None = None,
    fields: list | None = None,
    subscription: dict | None = None,
    billing_reason: str = "manual",
    auto_advance: bool = False,
    description: str | None = None,
    due_date: int | None = None,
) -> dict:
    """A draft invoice; a subscription's names it in `parent.subscription_details`."""
    parent = subscription and {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"subscription": subscription["id"], "metadata": dict(subscription["metadata"])},
    }
    ts = core.now()
    invoice = core.create(
        st,
        "invoice",
        "in_",
        account_country="US",
        account_name="Local Stripe stand-in",
        amount_due=0,
        amount_overpaid=0,
        amount_paid=0,
        amount_remaining=0,
        amount_shipping=0,
        attempt_count=0,
        attempted=False,
        auto_advance=auto_advance,
        billing_reason=billing_reason,
        collection_method=collection_method,
        currency=currency,
        customer=customer["id"],
        customer_email=customer["email"],
        customer_name=customer["name"],
        description=description,
        due_date=due_date,
        effective_at=None,
        hosted_invoice_url=None,
        invoice_pdf=None,
        metadata=meta or {},
        next_payment_attempt=None,
        number=None,
        paid_out_of_band=False,
        parent=parent,
        period_end=ts,
        period_start=ts,
        status="draft",
        subtotal=0,
        total=0,
        webhooks_delivered_at=None,
        status_transitions={"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
        custom_fields=customer["invoice_settings"]["custom_fields"] if fields is None else fields,
        _days_until_due=days_until_due,
        _payments=[],
        _sent=0,
    )
    invoice["lines"] = core.list_of([], f"/v1/invoices/{invoice['id']}/lines")
    return invoice


def add_line(invoice: dict, price: dict, quantity: int, period: dict, parent: dict, description: str) -> None:
    """A line billing `quantity` × `price` in the invoice's currency; the totals follow."""
    unit = unit_amount(price, invoice["currency"])
    invoice["lines"]["data"].append(
        {
            "id": "il_" + core.rand(24),
            "object": "line_item",
            "amount": unit * quantity,
            "currency": invoice["currency"],
            "description": description,
            "discountable": True,
            "discounts": [],
            "invoice": invoice["id"],
            "livemode": False,
            "metadata": {},
            "parent": parent,
            "period": period,
            "quantity": quantity,
            "taxes": [],
            "pricing": {
                "type": "price_details",
                "unit_amount_decimal": str(unit),
                "price_details": {"price": price["id"], "product": price["product"]},
            },
        }
    )
    total = sum(line["amount"] for line in invoice["lines"]["data"])
    invoice.update(subtotal=total, total=total, amount_due=total, amount_remaining=total)


def unit_amount(price: dict, currency: str) -> int:
    if currency not in prices.currencies(price):
        raise core.StripeFail(
            400, f"The price {price['id']} has no amount in {currency}.", "parameter_invalid", "pricing[price]"
        )
    return prices.amount(price, currency)


def _subscription_of(st, invoice: dict) -> dict | None:
    details = (invoice["parent"] or {}).get("subscription_details") or {}
    return st.stores["subscription"].get(details.get("subscription"))


def finalize(st, invoice: dict) -> None:
    """Draft → open: numbered, due, payable at its hosted URL; an invoice of nothing is paid at once."""
    if invoice["status"] != "draft":
        raise core.state_error("This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    ts = core.now()
    url = f"{st.settings.public_url.rstrip('/')}/_local/stripe/dashboard#{invoice['id']}"
    if st.invoice_url:
        url = st.invoice_url.format(id=invoice["id"])
    if st.invoice_prefix:  # numbered account-wide
        st.invoice_seq += 1
        number = f"{st.invoice_prefix}-{st.invoice_seq:04d}"
    else:
        number = customers.next_invoice_number(core.get(st, "customer", invoice["customer"]))
    invoice.update(
        status="open",
        number=number,
        effective_at=ts,
        hosted_invoice_url=url,
        invoice_pdf=url,
        amount_remaining=invoice["amount_due"],
    )
    invoice["status_transitions"]["finalized_at"] = ts
    if invoice["collection_method"] == "send_invoice" and invoice["due_date"] is None:
        invoice["due_date"] = ts + (invoice["_days_until_due"] or DEFAULT_DAYS_UNTIL_DUE) * core.DAY
    events.emit(st, "invoice.finalized", invoice)
    if invoice["amount_due"] == 0:
        mark_paid(st, invoice)


def send(st, invoice: dict) -> None:
    """E-mail an open invoice to the customer (remembered, nothing else changes); invoice.sent."""
    if invoice["collection_method"] != "send_invoice":
        raise core.state_error("You can only manually send an invoice if its collection method is 'send_invoice'.")
    if invoice["status"] != "open":
        raise core.state_error(f"You can only send an open invoice; this one is {invoice['status']}.")
    invoice["_sent"] += 1
    events.emit(st, "invoice.sent", invoice)


def pay(st, invoice: dict, out_of_band: bool = False, outcome: str = "succeeded") -> None:
    """Collect what is due: outside Stripe, or by card (a PaymentIntent, charge and invoice payment)."""
    if invoice["status"] == "draft":  # Stripe finalises a draft before it tries to collect it
        finalize(st, invoice)
    if invoice["status"] == "paid":
        raise core.state_error("Invoice is already paid.")
    if invoice["status"] not in PAYABLE:
        raise core.state_error(f"You cannot pay an invoice with status {invoice['status']}.")
    if out_of_band:
        invoice["paid_out_of_band"] = True
        mark_paid(st, invoice)
        return
    customer = core.get(st, "customer", invoice["customer"])
    pi = charges.create_payment(
        st,
        invoice["amount_remaining"],
        invoice["currency"],
        customer["id"],
        customer["email"],
        {},
        f"Invoice {invoice['number']}",
        outcome,
        invoice["id"],
    )
    invoice["_payments"].append(
        {
            "id": "inpay_" + core.rand(24),
            "object": "invoice_payment",
            "amount_paid": None,
            "amount_requested": pi["amount"],
            "created": pi["created"],
            "currency": pi["currency"],
            "invoice": invoice["id"],
            "is_default": not invoice["_payments"],
            "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
            "status": "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }
    )
    invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
    payment_settled(st, pi)


def payment_settled(st, pi: dict) -> None:
    """An invoice's PaymentIntent has an outcome: the invoice is paid, or its payment failed."""
    invoice = st.stores["invoice"].get(pi.get("_invoice"))
    if invoice is None:
        return
    if pi["status"] == "succeeded":
        mark_paid(st, invoice, pi)
    elif pi["status"] == "requires_payment_method":
        if invoice["collection_method"] == "charge_automatically":
            invoice["next_payment_attempt"] = core.now() + RETRY_DAYS * core.DAY
        events.emit(st, "invoice.payment_failed", invoice)


def mark_paid(st, invoice: dict, pi: dict | None = None) -> None:
    """Paid in full (by `pi`, or outside Stripe); invoice.paid, and a subscription it was holding back is active."""
    ts = core.now()
    invoice.update(
        status="paid",
        amount_paid=invoice["amount_paid"] + invoice["amount_remaining"],
        amount_remaining=0,
        next_payment_attempt=None,
    )
    invoice["status_transitions"]["paid_at"] = ts
    for payment in invoice["_payments"]:
        if pi and payment["payment"]["payment_intent"] == pi["id"]:
            payment.update(status="paid", amount_paid=pi["amount"])
            payment["status_transitions"]["paid_at"] = ts
    events.emit(st, "invoice.paid", invoice)
    subscription = _subscription_of(st, invoice)
    if (
        subscription
        and subscription["latest_invoice"] == invoice["id"]
        and subscription["status"] in ("incomplete", "past_due", "unpaid")
    ):
        events.change(st, subscription, "customer.subscription.updated", status="active")


def _close(st, invoice: dict, status: str, allowed: tuple, event: str, stamp: str) -> None:
    if invoice["status"] not in allowed:
        raise core.state_error(
            f"You can only do this to an invoice that is {' or '.join(allowed)}; this one is {invoice['status']}."
        )
    invoice["status"] = status
    invoice["status_transitions"][stamp] = core.now()
    events.emit(st, event, invoice)


def void(st, invoice: dict, drafts_too: bool = False) -> None:
    """Cancel an open or uncollectible invoice (or, from the dashboard, a draft); invoice.voided."""
    _close(st, invoice, "void", ("draft", *PAYABLE) if drafts_too else PAYABLE, "invoice.voided", "voided_at")


def mark_uncollectible(st, invoice: dict) -> None:
    """Write off an open invoice (it stays payable); invoice.marked_uncollectible."""
    _close(st, invoice, "uncollectible", ("open",), "invoice.marked_uncollectible", "marked_uncollectible_at")


def overdue(st, invoice: dict, days: int = 1) -> None:
    """Pretend `days` have passed since an open invoice fell due; invoice.overdue."""
    if invoice["status"] != "open":
        raise core.state_error(f"Only an open invoice can be overdue; this one is {invoice['status']}.")
    invoice["due_date"] = core.now() - days * core.DAY
    events.emit(st, "invoice.overdue", invoice)


def _include_payments(body: dict, invoice: dict, expand: set) -> None:
    if "payments" in expand:
        body["payments"] = core.list_of(copy.deepcopy(invoice["_payments"]), f"/v1/invoices/{invoice['id']}/payments")


core.INCLUDES["invoice"] = ("payments", _include_payments)


def _create_item(st, params: dict) -> dict:
    customer = core.get(st, "customer", core.required(params, "customer"), "customer")
    if "price" in params:  # gone since API 2025-03-31: a common mistake, refused as Stripe does
        raise core.StripeFail(
            400, "Received unknown parameter: price. Did you mean pricing[price]?", "parameter_unknown", "price"
        )
    pricing = params.get("pricing") or {}
    price_id = pricing.get("price") if isinstance(pricing, dict) else None
    if not price_id:
        raise core.StripeFail(400, "Missing required param: pricing[price].", "parameter_missing", "pricing[price]")
    price = prices.usable(st, price_id, "pricing[price]")
    quantity = core.to_int(params.get("quantity", 1), "quantity")
    invoice = core.get(st, "invoice", params["invoice"], "invoice") if params.get("invoice") else None
    if invoice and (invoice["status"] != "draft" or invoice["customer"] != customer["id"]):
        raise core.StripeFail(
            400,
            f"You can only add invoice items to draft invoices of customer {customer['id']}.",
            "invoice_not_editable",
            "invoice",
        )
    currency = invoice["currency"] if invoice else params.get("currency") or price["currency"]
    unit = unit_amount(price, currency)
    ts = core.now()
    item = core.create(
        st,
        "invoiceitem",
        "ii_",
        amount=unit * quantity,
        currency=currency,
        customer=customer["id"],
        date=ts,
        description=params.get("description") or prices.product_name(st, price),
        discountable=True,
        discounts=[],
        invoice=invoice and invoice["id"],
        metadata=core.metadata(params.get("metadata")),
        parent=None,
        period={"start": ts, "end": ts},
        proration=False,
        quantity=quantity,
        tax_rates=[],
        test_clock=None,
        pricing={
            "type": "price_details",
            "unit_amount_decimal": str(unit),
            "price_details": {"price": price["id"], "product": price["product"]},
        },
        _price=price,
    )
    if invoice:
        attach(invoice, item)
    return item


def attach(invoice: dict, item: dict) -> None:
    """Bill an invoice item on the invoice."""
    item["invoice"] = invoice["id"]
    add_line(
        invoice,
        item["_price"],
        item["quantity"],
        item["period"],
        {
            "type": "invoice_item_details",
            "subscription_item_details": None,
            "invoice_item_details": {"invoice_item": item["id"], "proration": False, "subscription": None},
        },
        item["description"],
    )


def _create_invoice(st, params: dict) -> dict:
    customer = core.get(st, "customer", core.required(params, "customer"), "customer")
    method = params.get("collection_method") or "charge_automatically"
    if method not in COLLECTION_METHODS:
        raise core.StripeFail(
            400,
            f"Invalid collection_method: must be one of {', '.join(COLLECTION_METHODS)}",
            "parameter_invalid_string",
            "collection_method",
        )
    days = core.to_int(params["days_until_due"], "days_until_due") if params.get("days_until_due") else None
    due = core.to_int(params["due_date"], "due_date") if params.get("due_date") else None
    if method != "send_invoice" and (days or due):
        raise core.StripeFail(
            400,
            "days_until_due and due_date apply only to collection_method=send_invoice.",
            "parameter_invalid",
            "days_until_due" if days else "due_date",
        )
    behaviour = params.get("pending_invoice_items_behavior") or "exclude"
    invoice = create(
        st,
        customer,
        collection_method=method,
        days_until_due=days,
        due_date=due,
        currency=params.get("currency") or "usd",
        meta=core.metadata(params.get("metadata")),
        fields=core.custom_fields(params.get("custom_fields")),
        auto_advance=core.to_bool(params.get("auto_advance"), "auto_advance"),
        description=params.get("description"),
    )
    if behaviour == "include":
        for item in core.newest(
            st,
            "invoiceitem",
            lambda i: i["customer"] == customer["id"] and i["invoice"] is None and i["currency"] == invoice["currency"],
        )[::-1]:
            attach(invoice, item)
    return invoice


def register(bp, st) -> None:
    """Invoices and invoice items under /v1."""
    route = core.api_routes(bp, st)
    core.add_retrieve(st, route, "/invoices/<object_id>", "invoice")
    core.add_list(st, route, "/invoices", "invoice", ("customer", "status", "subscription"))
    core.add_retrieve(st, route, "/invoiceitems/<object_id>", "invoiceitem")

    @route("/invoices", "POST")
    def invoice_create(params):
        return core.render(st, _create_invoice(st, params), core.expansions(params))

    @route("/invoiceitems", "POST")
    def invoiceitem_create(params):
        return core.render(st, _create_item(st, params))

    def out_of_band(params):
        return {"out_of_band": core.to_bool(params.get("paid_out_of_band"), "paid_out_of_band")}

    for name, action, options in (
        ("finalize", finalize, None),
        ("send", send, None),
        ("pay", pay, out_of_band),
        ("void", void, None),
        ("mark_uncollectible", mark_uncollectible, None),
    ):
        route(f"/invoices/<object_id>/{name}", "POST")(_action_view(st, name, action, options))


def _action_view(st, name: str, action, options=None):
    """POST /v1/invoices/{id}/{name}: `action` on the invoice, with keyword `options(params)`."""

    def view(params, object_id):
        invoice = core.get(st, "invoice", object_id)
        action(st, invoice, **(options(params) if options else {}))
        return core.render(st, invoice, core.expansions(params))

    view.__name__ = f"invoice_{name}"
    return view
