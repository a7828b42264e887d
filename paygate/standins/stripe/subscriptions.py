"""Subscriptions: one recurring price, billed every interval by charge or by invoice, and their lifecycle."""

from paygate.standins.stripe import core, events, invoices, prices


def start(
    st,
    customer: dict,
    price: dict,
    quantity: int = 1,
    currency: str | None = None,
    meta: dict | None = None,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    outcome: str = "succeeded",
    first_invoice=None,
) -> dict:
    """A new subscription and its first invoice (paid by card, or by a bank debit still `processing`; with nothing
    due, paid as it is finalised); `first_invoice(invoice)` may change what that draft bills (Checkout's discount
    and tax)."""
    # As in Stripe: billed by invoice, it is active at once and its first invoice waits, a draft, for the caller
    # to finalise; charged automatically, it is incomplete until that invoice is paid (Checkout's
    # customer.subscription.created says incomplete, then customer.subscription.updated says active).
    ts = core.now()
    by_invoice = collection_method == "send_invoice"
    sub = core.create(
        st,
        "subscription",
        "sub_",
        application=None,
        billing_cycle_anchor=ts,
        cancel_at=None,
        cancel_at_period_end=False,
        canceled_at=None,
        collection_method=collection_method,
        cancellation_details={"comment": None, "feedback": None, "reason": None},
        currency=currency or price["currency"],
        customer=customer["id"],
        days_until_due=(days_until_due or invoices.DEFAULT_DAYS_UNTIL_DUE) if by_invoice else None,
        default_payment_method=None,
        description=None,
        ended_at=None,
        latest_invoice=None,
        metadata=meta or {},
        pause_collection=None,
        start_date=ts,
        status="active" if by_invoice else "incomplete",
        trial_end=None,
        trial_start=None,
        _price=price,
    )
    item = {
        "id": "si_" + core.rand(24),
        "object": "subscription_item",
        "created": ts,
        "current_period_start": ts,
        "current_period_end": core.add_interval(ts, price["recurring"]["interval"]),
        "discounts": [],
        "metadata": {},
        "price": prices.public(st, price),
        "quantity": quantity,
        "subscription": sub["id"],
        "tax_rates": [],
    }
    sub["items"] = core.list_of([item], f"/v1/subscription_items?subscription={sub['id']}")
    invoice = _bill(st, sub, "subscription_create")
    if first_invoice:
        first_invoice(invoice)
    events.emit(st, "customer.subscription.created", sub)
    if not by_invoice and invoice["amount_due"] == 0:
        invoices.finalize(st, invoice)
    elif not by_invoice:
        invoices.pay(st, invoice, outcome=outcome)
    return sub


def _item(sub: dict) -> dict:
    return sub["items"]["data"][0]


def _bill(st, sub: dict, reason: str) -> dict:
    """A draft invoice for the item's current period; it becomes the subscription's latest invoice."""
    item = _item(sub)
    invoice = invoices.create(
        st,
        core.get(st, "customer", sub["customer"]),
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        currency=sub["currency"],
        subscription=sub,
        billing_reason=reason,
        auto_advance=True,
    )
    period = {"start": item["current_period_start"], "end": item["current_period_end"]}
    invoice.update(period_start=period["start"], period_end=period["end"])
    invoices.add_line(
        invoice,
        sub["_price"],
        item["quantity"],
        period,
        {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
        },
        f"{item['quantity']} × {prices.product_name(st, sub['_price'])}",
    )
    sub["latest_invoice"] = invoice["id"]
    return invoice


def renew(st, sub: dict, outcome: str | None = "succeeded") -> dict:
    """The next period starts and is billed: paid by card, or the payment fails (then past_due), or (outcome None)
    its invoice is open and waits to be paid."""
    item = _item(sub)
    item["current_period_start"] = item["current_period_end"]
    item["current_period_end"] = core.add_interval(item["current_period_start"], sub["_price"]["recurring"]["interval"])
    invoice = _bill(st, sub, "subscription_cycle")
    if outcome is None:
        invoices.finalize(st, invoice)
    else:
        invoices.pay(st, invoice, outcome=outcome)
    if outcome == "failed":
        events.change(st, sub, "customer.subscription.updated", status="past_due")
    return invoice


def set_status(st, sub: dict, status: str, collect: bool = True) -> None:
    """past_due or unpaid (as Stripe's retries decide), canceled, or active again (by paying what is open, or by
    fiat with collect=False)."""
    if status == "canceled":
        cancel(st, sub)
    elif status == sub["status"] != "active":
        raise core.state_error(f"Subscription {sub['id']} is {status} already.")
    elif status != "active" or not collect:
        events.change(st, sub, "customer.subscription.updated", status=status)
    else:
        latest = st.stores["invoice"].get(sub["latest_invoice"])
        if latest and latest["status"] in invoices.PAYABLE:
            invoices.pay(st, latest)
        else:
            renew(st, sub)
        if sub["status"] != "active":
            events.change(st, sub, "customer.subscription.updated", status="active", canceled_at=None, ended_at=None)


def cancel(st, sub: dict) -> None:
    """Cancel now; customer.subscription.deleted."""
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise core.state_error(f"Subscription {sub['id']} is already {sub['status']}.")
    ts = core.now()
    sub.update(status="canceled", canceled_at=ts, ended_at=ts)
    sub["cancellation_details"]["reason"] = "cancellation_requested"
    events.emit(st, "customer.subscription.deleted", sub)


def _create(st, params: dict) -> dict:
    customer = core.get(st, "customer", core.required(params, "customer"), "customer")
    items = core.as_list(params, "items")
    if len(items) != 1 or not isinstance(items[0], dict) or not items[0].get("price"):
        raise core.StripeFail(
            400,
            "The local stand-in subscribes to exactly one price: items[0][price].",
            "parameter_missing",
            "items[0][price]",
        )
    price = prices.usable(st, items[0]["price"], "items[0][price]", recurring=True)
    method = params.get("collection_method") or "charge_automatically"
    if method not in invoices.COLLECTION_METHODS:
        raise core.StripeFail(400, "Invalid collection_method", "parameter_invalid_string", "collection_method")
    days = core.to_int(params["days_until_due"], "days_until_due") if params.get("days_until_due") else None
    currency = params.get("currency") or price["currency"]
    if currency not in prices.currencies(price):
        raise core.StripeFail(400, f"The price has no amount in {currency}.", "parameter_invalid", "currency")
    return start(
        st,
        customer,
        price,
        core.to_int(items[0].get("quantity", 1), "items[0][quantity]"),
        currency,
        core.metadata(params.get("metadata")),
        method,
        days,
    )


def register(bp, st) -> None:
    """Subscriptions under /v1."""
    route = core.api_routes(bp, st)
    core.add_retrieve(st, route, "/subscriptions/<object_id>", "subscription")
    core.add_list(st, route, "/subscriptions", "subscription", ("customer", "status"))

    @route("/subscriptions", "POST")
    def subscription_create(params):
        return core.render(st, _create(st, params), core.expansions(params))

    @route("/subscriptions/<object_id>", "DELETE")
    def subscription_cancel(params, object_id):
        sub = core.get(st, "subscription", object_id)
        cancel(st, sub)
        return core.render(st, sub, core.expansions(params))
