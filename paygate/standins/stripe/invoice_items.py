"""Invoice items: what a customer is to be billed (a price × quantity, or a subscription's proration), on a draft
invoice or pending until the next one."""

from paygate.standins.stripe import billing, core, prices

# `price` is refused below with Stripe's hint to use pricing[price]
CREATE = core.known(
    "customer", "invoice", "pricing[price]", "price", "quantity", "currency", "description", "metadata[*]", "expand[]"
)


def make(
    st,
    customer: str,
    price: dict,
    quantity: int,
    currency: str,
    *,
    amount: int | None = None,
    description: str | None = None,
    meta: dict | None = None,
    subscription: dict | None = None,
    period: dict | None = None,
) -> dict:
    """A pending invoice item billing `quantity` × `price` (or `amount`, a proration's share of it); a
    subscription's prorations name it and its item in `parent`."""
    ts = core.now()
    total = billing.amount(price, quantity, currency, "pricing[price]") if amount is None else amount
    parent = subscription and {
        "type": "subscription_details",
        "subscription_details": {
            "subscription": subscription["id"],
            "subscription_item": subscription["items"]["data"][0]["id"],
        },
    }
    return core.create(
        st,
        "invoiceitem",
        "ii_",
        amount=total,
        currency=currency,
        customer=customer,
        date=ts,
        description=description or prices.product_name(st, price),
        discountable=True,
        discounts=[],
        invoice=None,
        metadata=meta or {},
        net_amount=total,
        parent=parent,
        period=period or {"start": ts, "end": ts},
        pricing=billing.pricing(price, total, quantity),
        proration=subscription is not None,
        proration_details={"credited_items": None, "discount_amounts": []} if subscription else None,
        quantity=quantity,
        quantity_decimal=str(quantity),
        tax_rates=[],
        test_clock=None,
    )


def attach(st, invoice: dict, item: dict) -> None:
    """Bill an invoice item on a draft invoice."""
    item["invoice"] = invoice["id"]
    subscription = (item["parent"] or {}).get("subscription_details") or {}
    billing.add_line(
        st,
        invoice,
        item,
        {
            "type": "invoice_item_details",
            "subscription_item_details": None,
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": item["proration"],
                "proration_details": {"credited_items": None},
                "subscription": subscription.get("subscription"),
            },
        },
    )


def pending(st, customer: str, currency: str, subscription: str | None = None) -> list[dict]:
    """The customer's items on no invoice yet, oldest first: a subscription's (its prorations), or those of none."""
    return core.newest(
        st,
        "invoiceitem",
        lambda i: (
            i["customer"] == customer
            and i["invoice"] is None
            and i["currency"] == currency
            and ((i["parent"] or {}).get("subscription_details") or {}).get("subscription") == subscription
        ),
    )[::-1]


def _create(st, params: dict) -> dict:
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
    count = billing.quantity(params.get("quantity", 1), "quantity")
    invoice = core.get(st, "invoice", params["invoice"], "invoice") if params.get("invoice") else None
    if invoice and (invoice["status"] != "draft" or invoice["customer"] != customer["id"]):
        raise core.StripeFail(
            400,
            f"You can only add invoice items to draft invoices of customer {customer['id']}.",
            "invoice_not_editable",
            "invoice",
        )
    currency = invoice["currency"] if invoice else params.get("currency") or price["currency"]
    billing.amount(price, count, currency, "pricing[price]")  # refused before anything is made
    item = make(
        st,
        customer["id"],
        price,
        count,
        currency,
        description=params.get("description"),
        meta=core.metadata(params.get("metadata")),
    )
    if invoice:
        attach(st, invoice, item)
    return item


def register(bp, st) -> None:
    """POST /v1/invoiceitems, GET /v1/invoiceitems/{id}."""
    route = core.api_routes(bp, st)
    core.add_retrieve(st, route, "/invoiceitems/<object_id>", "invoiceitem", core.RETRIEVE)

    @route("/invoiceitems", "POST", params=CREATE)
    def invoiceitem_create(params):
        return core.render(st, _create(st, params))
