"""Coupons and the promotion codes that point at them (API 2026-10-28: `promotion_code.promotion.coupon`), as the
stand-in's catalogue holds them: what a code takes off a purchase, and whether it may be used at all."""

import copy

from paygate.standins.stripe import core

DAY = 24 * 3600


def make_coupon(coupon_id: str, *, percent_off=None, amount_off=None, currency=None, products=None, **extra) -> dict:
    return {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": amount_off,
        "applies_to": {"products": list(products)} if products else None,
        "created": 1700000000,
        "currency": currency,
        "duration": "once",
        "duration_in_months": None,
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "name": extra.pop("name", coupon_id),
        "percent_off": percent_off,
        "redeem_by": None,
        "times_redeemed": 0,
        "valid": True,
        **extra,
    }


def make_code(code_id: str, code: str, coupon: str, *, active=True, expires_at=None, max_redemptions=None) -> dict:
    return {
        "id": code_id,
        "object": "promotion_code",
        "active": active,
        "code": code,
        "created": 1700000000,
        "customer": None,
        "expires_at": expires_at,
        "livemode": False,
        "max_redemptions": max_redemptions,
        "metadata": {},
        "promotion": {"type": "coupon", "coupon": coupon},
        "restrictions": {
            "currency_options": {},
            "first_time_transaction": False,
            "minimum_amount": None,
            "minimum_amount_currency": None,
        },
        "times_redeemed": 0,
    }


def local_promotions() -> tuple[dict, dict]:
    """(coupons, promotion codes) of the local run: 20 % off, 100 % off (a pilot school pays nothing), 10 USD off,
    15 % off the per-seat licence only, and one that expired."""
    coupons = {
        c["id"]: c
        for c in (
            make_coupon("co_local_school20", percent_off=20, name="20 % off"),
            make_coupon("co_local_free", percent_off=100, name="100 % off"),
            make_coupon("co_local_partner10", amount_off=1000, currency="usd", name="10.00 USD off"),
            make_coupon("co_local_seats15", percent_off=15, products=["prod_local_seats"], name="15 % off seats"),
            make_coupon("co_local_spring", percent_off=10, name="10 % off (spring)"),
        )
    }
    codes = {
        p["id"]: p
        for p in (
            make_code("promo_local_school20", "SCHOOL20", "co_local_school20"),
            make_code("promo_local_free", "PILOT100", "co_local_free"),
            make_code("promo_local_partner10", "PARTNER10", "co_local_partner10"),
            make_code("promo_local_seats15", "SEATS15", "co_local_seats15"),
            make_code("promo_local_spring", "SPRING2025", "co_local_spring", active=False, expires_at=1743465600),
        )
    }
    return coupons, codes


def find(st, promo_id, param: str | None = None) -> dict:
    promo = st.promotion_codes.get(promo_id) if isinstance(promo_id, str) else None
    if promo is None:
        raise core.missing("promotion_code", str(promo_id), param or "id", 400 if param else 404)
    return promo


def coupon_of(st, promo: dict) -> dict:
    return st.coupons[promo["promotion"]["coupon"]]


def usable(promo: dict, coupon: dict) -> bool:
    """Active, not expired, not used up, its coupon still valid (what Stripe checks before applying a code)."""
    if not promo["active"] or not coupon["valid"]:
        return False
    if promo["expires_at"] and promo["expires_at"] <= core.now():
        return False
    return not (promo["max_redemptions"] and promo["times_redeemed"] >= promo["max_redemptions"])


def discount(st, promo: dict, product: str, subtotal: int, currency: str, param: str) -> int:
    """What the code takes off `subtotal` (minor units of `currency`) of a purchase of `product`; a 400 as
    Stripe words it when the code cannot be used for it."""
    coupon = coupon_of(st, promo)
    if not usable(promo, coupon):
        raise core.StripeFail(400, f"This promotion code is inactive: {promo['code']}", "coupon_expired", param)
    products = (coupon.get("applies_to") or {}).get("products")
    if products and product not in products:
        raise core.StripeFail(
            400, f"The promotion code {promo['code']} cannot be applied to this price.", "parameter_invalid", param
        )
    if coupon["percent_off"] is not None:
        return min(subtotal, round(subtotal * coupon["percent_off"] / 100))
    if coupon["currency"] != currency:
        raise core.StripeFail(
            400, f"The promotion code {promo['code']} is for {coupon['currency']}.", "parameter_invalid", param
        )
    return min(subtotal, coupon["amount_off"])


def redeem(st, promo: dict) -> None:
    """A purchase with the code went through: it counts toward its max_redemptions."""
    promo["times_redeemed"] += 1
    st.coupons[promo["promotion"]["coupon"]]["times_redeemed"] += 1


def public(st, promo: dict, expand=()) -> dict:
    body = copy.deepcopy(promo)
    if "promotion.coupon" in expand:
        body["promotion"]["coupon"] = copy.deepcopy(coupon_of(st, promo))
    return body


def _expand(params: dict, prefix: str = "") -> set:
    """The code's expansions (`promotion.coupon`; under `prefix` in a list), refusing others as Stripe does."""
    wanted = set()
    for path in core.expansions(params):
        inner = path[len(prefix) :] if path.startswith(prefix) else None
        if inner not in ("promotion.coupon", "customer"):
            raise core.StripeFail(400, f"This property cannot be expanded ({path}).", None, "expand")
        wanted.add(inner)
    return wanted


def listed(st, params: dict) -> dict:
    """GET /v1/promotion_codes: filtered by `code` (case-insensitive, as Stripe matches it), `active`, `coupon`."""
    found = list(st.promotion_codes.values())[::-1]  # the newest first
    if params.get("code"):
        found = [p for p in found if p["code"].casefold() == params["code"].strip().casefold()]
    if params.get("active") not in (None, ""):
        active = core.to_bool(params["active"], "active")
        found = [p for p in found if p["active"] == active]
    if params.get("coupon"):
        found = [p for p in found if p["promotion"]["coupon"] == params["coupon"]]
    limit = core.to_int(params.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise core.StripeFail(400, "This value must be between 1 and 100.", "parameter_invalid_integer", "limit")
    if params.get("starting_after"):
        ids = [p["id"] for p in found]
        if params["starting_after"] not in ids:
            raise core.missing("promotion_code", params["starting_after"], "starting_after", 400)
        found = found[ids.index(params["starting_after"]) + 1 :]
    expand = _expand(params, "data.")
    return {
        **core.list_of([public(st, p, expand) for p in found[:limit]], "/v1/promotion_codes"),
        "has_more": len(found) > limit,
    }


def register(bp, st) -> None:
    """GET /v1/promotion_codes and /v1/promotion_codes/{id}."""
    route = core.api_routes(bp, st)

    @route("/promotion_codes", op="list_promotion_codes", params=core.known(*core.LIST, "code", "active", "coupon"))
    def promotion_code_list(params):
        return listed(st, params)

    @route("/promotion_codes/<promo_id>", op="retrieve_promotion_code", params=core.RETRIEVE)
    def promotion_code_get(params, promo_id):
        return public(st, find(st, promo_id), _expand(params))
