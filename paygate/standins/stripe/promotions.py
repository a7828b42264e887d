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
