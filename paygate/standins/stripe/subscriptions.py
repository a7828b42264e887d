"""Subscriptions: one recurring price × a quantity, billed every interval by charge or by invoice, with their
discounts and tax, quantity changes and their prorations, and their lifecycle."""

import copy
from datetime import UTC, datetime

from paygate.standins.stripe import billing, core, events, invoice_items, invoices, prices

PRORATIONS = ("create_prorations", "none", "always_invoice")
CREATE = core.known(
    "customer",
    "items[][price]",
    "items[][quantity]",
    "collection_method",
    "days_until_due",
    "currency",
    "metadata[*]",
    "automatic_tax[enabled]",
    "discounts[][promotion_code]",
    "discounts[][coupon]",
    "expand[]",
)
UPDATE = core.known(
    "items[][id]",
    "items[][price]",
    "items[][quantity]",
    "proration_behavior",
    "metadata[*]",
    "cancel_at_period_end",
    "expand[]",
)
LISTED_BY = ("customer", "status")


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
    *,
    automatic_tax: bool = False,
    discounts: list | None = None,
    first_invoice=None,
) -> dict:
    """A new subscription and its first invoice (paid by card, or by a bank debit still `processing`; with nothing
    due, paid as it is finalised), taxed if `automatic_tax`, discounted by `discounts` ((promotion code or None,
    coupon) pairs that billing.requested accepted; redeemed here); `first_invoice(invoice)` may change what that
    draft bills (Checkout's discount and tax)."""
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
        automatic_tax={
            "disabled_reason": None,
            "enabled": automatic_tax,
            "liability": {"account": None, "type": "self"} if automatic_tax else None,
        },
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
        discounts=[],
        ended_at=None,
        latest_invoice=None,
        metadata=meta or {},
        pause_collection=None,
        start_date=ts,
        status="active" if by_invoice else "incomplete",
        trial_end=None,
        trial_start=None,
        _discounts=[],
        _price=price,
    )
    for promo, coupon in discounts or ():
        sub["_discounts"].append(billing.apply(st, promo, coupon, customer["id"], subscription=sub["id"]))
    sub["discounts"] = [d["id"] for d in sub["_discounts"]]
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


def _invoice(st, sub: dict, reason: str) -> dict:
    """A draft invoice of the subscription, with its tax and the discounts still running; it becomes the
    subscription's latest invoice. A `once` coupon's discount stays on the subscription until the next invoice,
    which it leaves without discounting."""
    start = _item(sub)["current_period_start"]
    if any(d.get("_billed") for d in sub.get("_discounts", [])):
        sub["_discounts"] = [d for d in sub["_discounts"] if not d.get("_billed")]
        sub["discounts"] = [d["id"] for d in sub["_discounts"]]
    running = [d for d in sub.get("_discounts", []) if d["end"] is None or d["end"] > start]
    for discount in running:
        if (billing.coupon_of(st, discount) or {}).get("duration") == "once":
            discount["_billed"] = True
    invoice = invoices.create(
        st,
        core.get(st, "customer", sub["customer"]),
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        currency=sub["currency"],
        subscription=sub,
        billing_reason=reason,
        auto_advance=True,
        automatic_tax=sub.get("automatic_tax", {}).get("enabled", False),
        discounts=running,
    )
    sub["latest_invoice"] = invoice["id"]
    return invoice


def _bill(st, sub: dict, reason: str) -> dict:
    """A draft invoice for the item's current period (quantity × price, by its tiers) and the prorations pending."""
    item = _item(sub)
    invoice = _invoice(st, sub, reason)
    period = {"start": item["current_period_start"], "end": item["current_period_end"]}
    invoice.update(period_start=period["start"], period_end=period["end"])
    amount = billing.amount(sub["_price"], item["quantity"], sub["currency"], "items[0][price]")
    billing.add_line(
        st,
        invoice,
        {
            "amount": amount,
            "quantity": item["quantity"],
            "pricing": billing.pricing(sub["_price"], amount, item["quantity"]),
            "period": period,
            "description": f"{item['quantity']} × {prices.product_name(st, sub['_price'])}",
        },
        {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
        },
    )
    for pending in invoice_items.pending(st, sub["customer"], sub["currency"], sub["id"]):
        invoice_items.attach(st, invoice, pending)
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


def period_ends(st, sub: dict) -> None:
    """The clock reaches the period's end: a subscription set to cancel_at_period_end ends (deleted), any other
    renews and is paid."""
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise core.state_error(f"Subscription {sub['id']} is already {sub['status']}.")
    if not sub["cancel_at_period_end"]:
        renew(st, sub)
        return
    ends = _item(sub)["current_period_end"]
    sub.update(status="canceled", ended_at=ends, canceled_at=sub["canceled_at"] or ends)
    sub["cancellation_details"]["reason"] = "cancellation_requested"
    events.emit(st, "customer.subscription.deleted", sub)


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
    count = billing.quantity(items[0].get("quantity", 1), "items[0][quantity]")
    meta = core.metadata(params.get("metadata"))
    taxed = billing.wants_tax(params, customer.get("address"))
    wanted = billing.requested(st, params, currency)  # all refusals come before anything is made or redeemed
    return start(st, customer, price, count, currency, meta, method, days, automatic_tax=taxed, discounts=wanted)


def change_quantity(st, sub: dict, quantity: int, proration_behavior: str = "create_prorations", **fields) -> None:
    """A new quantity for the subscription's item (and `fields`, e.g. metadata), as the API or the dashboard
    changes it; customer.subscription.updated with the old items in previous_attributes, if anything changed.

    Prorations, kept simple: for the rest of the current period, one invoice item credits the old quantity's
    price and one charges the new one's (each the full period's amount × the share of it left, rounded); they wait
    for the next invoice (create_prorations), are billed at once on an invoice of their own (always_invoice:
    charged, or finalised for send_invoice), or are not made (none)."""
    if proration_behavior not in PRORATIONS:
        raise core.StripeFail(
            400,
            f"Invalid proration_behavior: must be one of {', '.join(PRORATIONS)}",
            "parameter_invalid_string",
            "proration_behavior",
        )
    old = _item(sub)["quantity"]
    changes = {k: v for k, v in fields.items() if sub.get(k) != v}
    if quantity != old:
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise core.state_error("A canceled subscription can only update its cancellation_details and metadata.")
        billing.amount(sub["_price"], quantity, sub["currency"], "items[0][quantity]")
        if proration_behavior != "none":
            _prorate(st, sub, old, quantity)
        changes["items"] = copy.deepcopy(sub["items"])
        changes["items"]["data"][0]["quantity"] = quantity
    if changes:
        events.change(st, sub, "customer.subscription.updated", **changes)
    if quantity != old and proration_behavior == "always_invoice":
        invoice = _invoice(st, sub, "subscription_update")
        for pending in invoice_items.pending(st, sub["customer"], sub["currency"], sub["id"]):
            invoice_items.attach(st, invoice, pending)
        if sub["collection_method"] == "charge_automatically":
            invoices.pay(st, invoice)
        else:
            invoices.finalize(st, invoice)


def _prorate(st, sub: dict, old: int, new: int) -> None:
    item, ts = _item(sub), core.now()
    start, end = item["current_period_start"], item["current_period_end"]
    left = min(max(end - ts, 0), end - start) / (end - start) if end > start else 0.0
    price, currency = sub["_price"], sub["currency"]
    since = datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y")
    for count, sign, words in ((old, -1, "Unused time on"), (new, 1, "Remaining time on")):
        full = billing.amount(price, count, currency, "items[0][quantity]")
        invoice_items.make(
            st,
            sub["customer"],
            price,
            count,
            currency,
            amount=sign * round(full * left),
            description=f"{words} {count} × {prices.product_name(st, price)} after {since}",
            subscription=sub,
            period={"start": ts, "end": end},
        )


def _update(st, sub: dict, params: dict) -> None:
    """POST /v1/subscriptions/{id}: the item's quantity (items[0][id], items[0][quantity]), proration_behavior,
    cancel_at_period_end (it then ends at its period's end: `period_ends`), metadata (merged; a key set to "" is
    removed, metadata="" removes all)."""
    quantity = _item(sub)["quantity"]
    for i, entry in enumerate(core.as_list(params, "items")):
        if not isinstance(entry, dict) or not entry.get("id"):
            raise core.StripeFail(
                400,
                f"The local stand-in changes the subscription's one item, named by items[{i}][id].",
                "parameter_missing",
                f"items[{i}][id]",
            )
        if entry["id"] != _item(sub)["id"]:
            raise core.missing("subscription_item", str(entry["id"]), f"items[{i}][id]", 400)
        if entry.get("price") not in (None, sub["_price"]["id"]):
            raise core.StripeFail(
                400,
                "The local stand-in does not change a subscription's price.",
                "parameter_invalid",
                f"items[{i}][price]",
            )
        if "quantity" in entry:
            quantity = billing.quantity(entry["quantity"], f"items[{i}][quantity]")
    fields = {}
    if "cancel_at_period_end" in params:
        ending = core.to_bool(params["cancel_at_period_end"], "cancel_at_period_end")
        if sub["status"] in ("canceled", "incomplete_expired") and ending != sub["cancel_at_period_end"]:
            raise core.state_error("A canceled subscription can only update its cancellation_details and metadata.")
        fields.update(
            cancel_at_period_end=ending,
            cancel_at=_item(sub)["current_period_end"] if ending else None,
            canceled_at=(sub["canceled_at"] or core.now()) if ending else None,
        )
    if "metadata" in params:
        added = core.metadata(params["metadata"])
        merged = {k: v for k, v in {**sub["metadata"], **added}.items() if v != ""} if params["metadata"] else {}
        fields["metadata"] = merged
    change_quantity(st, sub, quantity, params.get("proration_behavior") or "create_prorations", **fields)


def register(bp, st) -> None:
    """Subscriptions under /v1."""
    route = core.api_routes(bp, st)
    core.add_retrieve(st, route, "/subscriptions/<object_id>", "subscription", core.RETRIEVE)
    core.add_list(st, route, "/subscriptions", "subscription", LISTED_BY, core.known(*core.LIST, *LISTED_BY))

    @route("/subscriptions", "POST", params=CREATE)
    def subscription_create(params):
        return core.render(st, _create(st, params), core.expansions(params))

    @route("/subscriptions/<object_id>", "POST", params=UPDATE)
    def subscription_update(params, object_id):
        sub = core.get(st, "subscription", object_id)
        _update(st, sub, params)
        return core.render(st, sub, core.expansions(params))

    @route("/subscriptions/<object_id>", "DELETE", params=core.RETRIEVE)
    def subscription_cancel(params, object_id):
        sub = core.get(st, "subscription", object_id)
        cancel(st, sub)
        return core.render(st, sub, core.expansions(params))
