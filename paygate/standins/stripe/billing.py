"""What an invoice bills: its lines (quantity × price, by tiers), the discounts promotion codes and coupons give,
the stand-in's tax, and the totals Stripe derives from them (subtotal, total_discount_amounts, total_taxes, total,
amount_due)."""

from decimal import Decimal

from paygate.standins.stripe import core, prices, promotions, tax


def amount(price: dict, quantity: int, currency: str, param: str) -> int:
    """What `quantity` units of `price` cost in `currency` (per unit or by its tiers); a 400 naming `param` when the
    price has no amount in that currency."""
    if currency not in prices.currencies(price):
        raise core.StripeFail(400, f"The price {price['id']} has no amount in {currency}.", "parameter_invalid", param)
    return prices.total(price, quantity, currency)


def quantity(value, param: str) -> int:
    """A quantity parameter: a whole number, not negative."""
    number = core.to_int(value, param)
    if number < 0:
        raise core.StripeFail(400, "This value must be greater than or equal to 0.", "parameter_invalid_integer", param)
    return number


def pricing(price: dict, total: int, count: int) -> dict:
    """A line's or an invoice item's `pricing`: the price, and what one unit came to (a tiered price's average)."""
    unit = Decimal(total) / count if count else Decimal(0)
    return {
        "type": "price_details",
        "unit_amount_decimal": format(unit.quantize(Decimal("1e-12")).normalize(), "f"),
        "price_details": {"price": price["id"], "product": price["product"]},
    }


def add_line(st, invoice: dict, item: dict, parent: dict) -> dict:
    """A line of a draft invoice billing `item` (an invoice item, or what a subscription item bills: amount,
    quantity, pricing, period, description); the totals follow."""
    line = {
        "id": "il_" + core.rand(24),
        "object": "line_item",
        "amount": item["amount"],
        "currency": invoice["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": dict(item.get("metadata") or {}),
        "parent": parent,
        "period": dict(item["period"]),
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "subtotal": item["amount"],
        "taxes": [],
    }
    invoice["lines"]["data"].append(line)
    recompute(st, invoice)
    return line


# --- discounts ------------------------------------------------------------------------------------------------


def requested(st, params: dict, currency: str) -> list[tuple[dict | None, dict]]:
    """The (promotion code or None, coupon) pairs a create call's `discounts` asks for, each usable in `currency`;
    a 400 as Stripe words it otherwise, before anything is made."""
    value = params.get("discounts")
    if value in (None, ""):  # "" asks for none, as in Stripe
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise core.StripeFail(400, "Invalid array", "parameter_invalid", "discounts")
    if len(value) > 1:  # Stripe takes up to 20; the stand-in's totals know how to apply one
        raise core.StripeFail(400, "The local stand-in applies at most one discount.", "parameter_invalid", "discounts")
    found = []
    for i, entry in enumerate(value):
        if entry.get("promotion_code"):
            param = f"discounts[{i}][promotion_code]"
            promo = promotions.find(st, entry["promotion_code"], param)
            coupon = promotions.coupon_of(st, promo)
            restricted = ((coupon.get("applies_to") or {}).get("products") or [None])[0]
            # promotions.discount refuses an inactive, expired or used-up code, or one in another currency, as
            # Stripe words it; what it takes off is worked out per line once there are lines.
            promotions.discount(st, promo, restricted, 0, currency, param)
        elif entry.get("coupon"):
            param = f"discounts[{i}][coupon]"
            promo, coupon = None, st.coupons.get(entry["coupon"])
            if coupon is None:
                raise core.missing("coupon", str(entry["coupon"]), param, 400)
            if not coupon["valid"]:
                raise core.StripeFail(400, f"Coupon {coupon['id']} is no longer valid.", "coupon_expired", param)
            if coupon["amount_off"] is not None and coupon["currency"] != currency:
                raise core.StripeFail(400, f"The coupon {coupon['id']} is for {coupon['currency']}.", None, param)
        else:
            raise core.StripeFail(
                400,
                f"Missing required param: discounts[{i}][promotion_code].",
                "parameter_missing",
                f"discounts[{i}][promotion_code]",
            )
        found.append((promo, coupon))
    return found


def apply(st, promo: dict | None, coupon: dict, customer: str, **where) -> dict:
    """A Discount (on an `invoice` or a `subscription`) from a code or coupon that `requested` accepted; the code
    counts as redeemed. A repeating coupon's discount ends after its months."""
    if promo is not None:
        promotions.redeem(st, promo)
    else:
        coupon["times_redeemed"] += 1
    start = core.now()
    months = coupon["duration_in_months"] if coupon["duration"] == "repeating" else None
    return {
        "id": "di_" + core.rand(24),
        "object": "discount",
        "checkout_session": None,
        "customer": customer,
        "customer_account": None,
        "end": core.add_interval(start, "month", months) if months else None,
        "invoice": where.get("invoice"),
        "invoice_item": None,
        "promotion_code": promo and promo["id"],
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "start": start,
        "subscription": where.get("subscription"),
        "subscription_item": None,
    }


def coupon_of(st, discount: dict) -> dict | None:
    return st.coupons.get(discount["source"]["coupon"])


def _shares(coupon: dict, lines: list[dict], currency: str) -> list[tuple[dict, int]]:
    """What the coupon takes off each line it applies to: a percentage of each (a credit line gets a negative
    share), or an amount spread over the lines in proportion, the last taking the rounding."""
    products = (coupon.get("applies_to") or {}).get("products")
    eligible = [
        line
        for line in lines
        if line["discountable"] and (not products or line["pricing"]["price_details"]["product"] in products)
    ]
    if coupon["percent_off"] is not None:
        return [(line, round(line["amount"] * coupon["percent_off"] / 100)) for line in eligible]
    positive = [line for line in eligible if line["amount"] > 0]
    base = sum(line["amount"] for line in positive)
    left = min(base, coupon["amount_off"]) if coupon["currency"] == currency else 0
    shares = []
    for i, line in enumerate(positive):
        share = left if i == len(positive) - 1 else left * line["amount"] // base
        shares.append((line, share))
        left -= share
    return shares


# --- totals ---------------------------------------------------------------------------------------------------


def recompute(st, invoice: dict) -> None:
    """A draft's discounts per line, then tax per line on what is left (automatic tax), and the totals."""
    lines = invoice["lines"]["data"]
    for line in lines:
        line.update(discount_amounts=[], pretax_credit_amounts=[], taxes=[])
    discounts = invoice.get("_discounts") or []  # an invoice a local run saved before discounts existed has none
    for discount in discounts:
        coupon = coupon_of(st, discount)
        for line, share in _shares(coupon, lines, invoice["currency"]) if coupon else ():
            if share:
                line["discount_amounts"].append({"amount": share, "discount": discount["id"]})
                line["pretax_credit_amounts"].append(
                    {
                        "amount": share,
                        "credit_balance_transaction": None,
                        "discount": discount["id"],
                        "type": "discount",
                    }
                )
    if (invoice.get("automatic_tax") or {}).get("enabled"):
        for line in lines:
            base = line["amount"] - sum(d["amount"] for d in line["discount_amounts"])
            line["taxes"] = [tax.line_tax(base, invoice.get("customer_address"))]
    off = {d["id"]: 0 for d in discounts}
    taxes: dict[str, dict] = {}
    for line in lines:
        for share in line["discount_amounts"]:
            off[share["discount"]] += share["amount"]
        for entry in line["taxes"]:
            rate = entry["tax_rate_details"]["tax_rate"]
            summed = taxes.setdefault(rate, {**entry, "amount": 0, "taxable_amount": 0})
            summed["amount"] += entry["amount"]
            summed["taxable_amount"] += entry["taxable_amount"]
    subtotal = sum(line["amount"] for line in lines)
    discounted = subtotal - sum(off.values())
    total = discounted + sum(entry["amount"] for entry in taxes.values())
    due = max(total, 0)  # a credit (a proration down) is not carried to the customer's balance here
    invoice.update(
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal,
        total_discount_amounts=[{"amount": amount_off, "discount": d} for d, amount_off in off.items()],
        total_pretax_credit_amounts=[
            {"amount": amount_off, "credit_balance_transaction": None, "discount": d, "type": "discount"}
            for d, amount_off in off.items()
        ],
        total_taxes=list(taxes.values()),
        total_excluding_tax=discounted,
        total=total,
        amount_due=due,
        amount_remaining=due - invoice["amount_paid"],
    )


def automatic_tax(enabled: bool) -> dict:
    """An invoice's or subscription's `automatic_tax`, computed by the stand-in's tax when enabled."""
    return {
        "disabled_reason": None,
        "enabled": enabled,
        "liability": {"account": None, "type": "self"} if enabled else None,
        "provider": "stripe" if enabled else None,
        "status": "complete" if enabled else None,
    }


def wants_tax(params: dict, address: dict | None) -> bool:
    """`automatic_tax[enabled]` of a create call; enabled, the customer's address must be one tax can place."""
    value = params.get("automatic_tax") or {}
    if not isinstance(value, dict):
        raise core.StripeFail(400, "Invalid object", "parameter_invalid", "automatic_tax")
    enabled = core.to_bool(value.get("enabled"), "automatic_tax[enabled]")
    if enabled:
        tax.check_location(address)
    return enabled
