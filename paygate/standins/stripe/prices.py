"""Prices and their products: the configured one-time Price plus a few fixed ones to try other plans with."""
import copy

from paygate.standins.stripe import core

DESCRIPTION = "Registers the tool in your LMS for one institution."
PRODUCTS = {pid: {"id": pid, "object": "product", "active": True, "created": 1700000000, "description": DESCRIPTION,
                  "livemode": False, "metadata": {}, "name": name, "type": "service", "default_price": None}
            for pid, name in (("prod_local", "Tool registration"), ("prod_local_yearly", "Tool licence (yearly)"),
                              ("prod_local_monthly", "Tool licence (monthly)"))}


def _price(product: str, unit_amount: int = 4900, interval: str | None = None, active: bool = True,
           **currency_options: int) -> dict:
    return {"object": "price", "active": active, "billing_scheme": "per_unit", "created": 1700000000,
            "currency": "usd", "livemode": False, "lookup_key": None, "metadata": {}, "nickname": None,
            "product": product, "tax_behavior": "unspecified", "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount), "type": "recurring" if interval else "one_time",
            "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None,
                          "trial_period_days": None} if interval else None,
            "_options": {"usd": unit_amount, **currency_options}}


DEFAULT = _price("prod_local")  # what the configured STRIPE_PRICE_ID is, unless it names a fixed price
FIXED = {"price_local_yearly": _price("prod_local_yearly", interval="year"),
         "price_local_monthly": _price("prod_local_monthly", 900, interval="month"),
         "price_local_multi": _price("prod_local", eur=4500, gbp=3900),
         "price_local_archived": _price("prod_local", active=False)}


def find(st, price_id, param: str | None = None) -> dict:
    """The price (unexpanded, private fields included); unknown: 404, or 400 naming `param`."""
    spec = FIXED.get(price_id) or (DEFAULT if price_id == st.settings.stripe_price_id else None)
    if spec is None:
        raise core.missing("price", str(price_id), param or "id", 400 if param else 404)
    return {"id": price_id, **spec}


def usable(st, price_id, param: str, recurring: bool | None = None) -> dict:
    """A price a new purchase may use: active, and recurring or one-time if asked."""
    price = find(st, price_id, param)
    if not price["active"]:
        raise core.StripeFail(400, "The price specified is inactive. This field only accepts active prices.",
                              "price_inactive", param)
    if recurring is not None and (price["type"] == "recurring") != recurring:
        wanted, got = ("recurring", "one_time") if recurring else ("one_time", "recurring")
        raise core.StripeFail(400, f"The price specified is set to `type={got}` but this field only accepts prices "
                                   f"with `type={wanted}`.", "parameter_invalid", param)
    return price


def amount(price: dict, currency: str) -> int:
    """The unit amount in one of the price's currencies."""
    return price["_options"][currency]


def currencies(price: dict) -> list[str]:
    return list(price["_options"])


def public(price: dict, expand=()) -> dict:
    """The price's JSON; `product` and `currency_options` only when expanded, as in Stripe."""
    body = copy.deepcopy({k: v for k, v in price.items() if not k.startswith("_")})
    if "product" in expand:
        body["product"] = dict(PRODUCTS[price["product"]])
    if "currency_options" in expand:
        body["currency_options"] = {
            currency: {"custom_unit_amount": None, "tax_behavior": "unspecified", "unit_amount": unit,
                       "unit_amount_decimal": str(unit)} for currency, unit in price["_options"].items()}
    return body


def product_name(price: dict) -> str:
    return PRODUCTS[price["product"]]["name"]


def register(bp, st) -> None:
    """GET /v1/prices/{id}."""
    route = core.api_routes(bp, st)

    @route("/prices/<price_id>")
    def retrieve(params, price_id):
        return public(find(st, price_id), core.expansions(params))
