"""Prices and their products, from the State's catalogue (the local run's: the configured one-time Price plus a
few fixed ones to try other plans with)."""

import copy

from paygate.standins.stripe import core, state


def find(st, price_id, param: str | None = None) -> dict:
    """A copy of the price (unexpanded, private fields included); unknown: 404, or 400 naming `param`."""
    price = st.prices.get(price_id) if isinstance(price_id, str) else None
    if price is None or price["id"] != price_id:  # a test may rename a Price to make it vanish
        raise core.missing("price", str(price_id), param or "id", 400 if param else 404)
    return copy.deepcopy(price)


def usable(st, price_id, param: str, recurring: bool | None = None) -> dict:
    """A price a new purchase may use: active, and recurring or one-time if asked."""
    price = find(st, price_id, param)
    if not price["active"]:
        raise core.StripeFail(
            400, "The price specified is inactive. This field only accepts active prices.", "price_inactive", param
        )
    if recurring is not None and (price["type"] == "recurring") != recurring:
        wanted, got = ("recurring", "one_time") if recurring else ("one_time", "recurring")
        raise core.StripeFail(
            400,
            f"The price specified is set to `type={got}` but this field only accepts prices with `type={wanted}`.",
            "parameter_invalid",
            param,
        )
    return price


def amount(price: dict, currency: str) -> int:
    """The unit amount in one of the price's currencies (a tiered price: what one unit costs)."""
    return total(price, 1, currency)


def total(price: dict, quantity: int, currency: str) -> int:
    """What `quantity` units cost in one of the price's currencies, before discounts and tax, as Stripe bills
    it: per unit, or by its tiers (volume: every unit at the tier the quantity falls in; graduated: each tier's
    part at that tier's rate), a tier's flat amount added once."""
    tiers = price.get("_tiers")
    if not tiers:
        return price["_options"][currency] * quantity
    if price["tiers_mode"] == "volume":
        tier = next(t for t in tiers if t["up_to"] is None or quantity <= t["up_to"])
        return (tier["unit_amount"] or 0) * quantity + (tier["flat_amount"] or 0)
    cost, below = 0, 0
    for tier in tiers:
        top = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
        if top > below:
            cost += (tier["unit_amount"] or 0) * (top - below) + (tier["flat_amount"] or 0)
        below = top
        if below >= quantity:
            break
    return cost


def currencies(price: dict) -> list[str]:
    return list(price["_options"])


def public(st, price: dict, expand=()) -> dict:
    """The price's JSON; `product` and `currency_options` only when expanded, as in Stripe."""
    body = copy.deepcopy({k: v for k, v in price.items() if not k.startswith("_")})
    if "product" in expand and price["product"] in st.products:
        body["product"] = copy.deepcopy(st.products[price["product"]])
    if "tiers" in expand and price.get("_tiers"):
        body["tiers"] = [
            {
                "flat_amount": t["flat_amount"],
                "flat_amount_decimal": None if t["flat_amount"] is None else str(t["flat_amount"]),
                "unit_amount": t["unit_amount"],
                "unit_amount_decimal": None if t["unit_amount"] is None else str(t["unit_amount"]),
                "up_to": t["up_to"],
            }
            for t in price["_tiers"]
        ]
    if "currency_options" in expand:
        body["currency_options"] = {
            currency: {
                "custom_unit_amount": None,
                "tax_behavior": "unspecified",
                "unit_amount": unit,
                "unit_amount_decimal": str(unit),
            }
            for currency, unit in price["_options"].items()
        }
    return body


def product(st, price: dict) -> dict:
    return st.products.get(price["product"]) or state.make_product(price["product"], price["product"], None)


def product_name(st, price: dict) -> str:
    return product(st, price)["name"]


def change(
    st,
    price_id: str,
    *,
    interval: str | None = None,
    currency_options: dict | None = None,
    active: bool = True,
    unit_amount: int | None = None,
) -> dict:
    """Make a Price of the catalogue one-time or recurring ("year", "month"), sold in other currencies too
    ({"eur": 4500}), archived (active=False), or for another unit amount. Returns it, expanded."""
    price = st.prices[price_id]
    unit = price["unit_amount"] if unit_amount is None else unit_amount
    options = {k.lower(): v for k, v in (currency_options or {}).items() if k.lower() != price["currency"]}
    price.update(
        active=active,
        type="recurring" if interval else "one_time",
        recurring=state.recurring(interval),
        unit_amount=unit,
        unit_amount_decimal=str(unit),
        _options={price["currency"]: unit, **options},
    )
    return public(st, price, {"product", "currency_options"})


def register(bp, st) -> None:
    """GET /v1/prices/{id}."""
    route = core.api_routes(bp, st)

    @route("/prices/<price_id>", params=core.RETRIEVE)
    def retrieve_price(params, price_id):
        return public(st, find(st, price_id), core.expansions(params))
