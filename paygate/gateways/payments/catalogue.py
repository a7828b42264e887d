"""What the vendor sells, as Stripe has it: Prices (with their product, tiers and metadata) and promotion codes.
Read by `Payments` (paygate/gateways/payments/client.py) through this mixin; a Price is read once and cached."""

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import stripe

from paygate.core import telemetry
from paygate.gateways.payments.objects import OPERATIONS, PriceNotSellable, from_epoch, id_of, raise_

log = logging.getLogger(__name__)

PRICE_TTL_SECONDS = 300
# Stripe's promotion codes: letters, digits and dashes; looked up only when they look like one.
_CODE = re.compile(r"^[A-Za-z0-9-]{1,100}$")


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # None: "inf"
    unit_amount: int
    flat_amount: int


@dataclass(frozen=True)
class Price:
    id: str
    unit_amount: int
    currency: str
    recurring: bool
    product_name: str | None = None
    interval: str | None = None  # day, week, month, year (recurring Prices)
    interval_count: int = 1
    active: bool = True
    # Other currencies the Price may be charged in: {"eur": 4500} (per-unit Prices only)
    currency_options: dict = field(default_factory=dict)
    product_description: str | None = None
    product_id: str | None = None
    metadata: dict = field(default_factory=dict)
    # A tiered Price (billing_scheme=tiered): "volume" or "graduated", and its tiers in order.
    tiers_mode: str | None = None
    tiers: tuple[Tier, ...] = ()

    @property
    def period(self) -> str | None:
        """How often it is charged, as registrations store it: "year", "3 month"; None if paid once."""
        if not self.recurring:
            return None
        return self.interval if self.interval_count == 1 else f"{self.interval_count} {self.interval}"

    def total(self, quantity: int, currency: str | None = None) -> int | None:
        """What `quantity` units cost before discounts and tax, as Stripe bills them (in `currency`, one of the
        Price's; None if it is not sold in it)."""
        currency = (currency or self.currency).lower()
        if self.tiers:
            return _tiered(self.tiers, self.tiers_mode, quantity) if currency == self.currency else None
        unit = self.unit_amount if currency == self.currency else self.currency_options.get(currency)
        return None if unit is None else unit * quantity

    def totals(self, quantity: int) -> dict:
        """The total for `quantity` in each currency the Price sells in: {"usd": 36000, "eur": 33000}."""
        out = {self.currency: self.total(quantity)}
        out.update({c: self.total(quantity, c) for c in self.currency_options})
        return {c: v for c, v in out.items() if v is not None}

    def amount_in(self, currency: str | None) -> int | None:
        """What one unit of this Price costs in `currency` (its own, or one of its currency options)."""
        return self.total(1, currency)


def _tiered(tiers, mode: str | None, quantity: int) -> int:
    if mode == "volume":
        tier = next((t for t in tiers if t.up_to is None or quantity <= t.up_to), tiers[-1])
        return tier.unit_amount * quantity + tier.flat_amount
    cost, below = 0, 0
    for tier in tiers:  # graduated: each tier's part at its own rate
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        if top > below:
            cost += tier.unit_amount * (top - below) + tier.flat_amount
            below = top
        if below >= quantity:
            break
    return cost


@dataclass(frozen=True)
class PromotionCode:
    id: str
    code: str
    active: bool
    expires_at: datetime | None
    max_redemptions: int | None
    times_redeemed: int
    minimum_amount: int | None
    minimum_amount_currency: str | None
    # The coupon behind it: percent or amount (in its currency) off, and the products it is limited to.
    percent_off: float | None
    amount_off: int | None
    currency: str | None
    products: tuple[str, ...]
    coupon_valid: bool
    customer: str | None = None  # a code only one Stripe customer may use: never a new school's

    def usable_for(self, price: Price, subtotal: int, currency: str, now: datetime) -> bool:
        """Whether Stripe would take this code for a purchase of `price` costing `subtotal` in `currency`."""
        if not self.active or not self.coupon_valid or self.customer is not None:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        if self.max_redemptions is not None and self.times_redeemed >= self.max_redemptions:
            return False
        if self.products and price.product_id not in self.products:
            return False
        if self.amount_off is not None and (self.currency or "").lower() != currency:
            return False
        return self.minimum_amount is None or (
            (self.minimum_amount_currency or "").lower() == currency and subtotal >= self.minimum_amount
        )

    def discount(self, subtotal: int) -> int:
        if self.percent_off is not None:
            return min(subtotal, round(subtotal * self.percent_off / 100))
        return min(subtotal, self.amount_off or 0)


def valid_code(value) -> bool:
    return isinstance(value, str) and _CODE.match(value) is not None


def price_view(p: dict) -> Price:
    product = p.get("product") if isinstance(p.get("product"), dict) else {}
    recurring = p.get("recurring") or {}
    tiered = p.get("billing_scheme") == "tiered"
    options = {
        currency.lower(): option.get("unit_amount")
        for currency, option in (p.get("currency_options") or {}).items()
        if not tiered and isinstance(option, dict) and option.get("unit_amount") is not None
    }
    tiers = tuple(
        Tier(
            up_to=t.get("up_to") if isinstance(t.get("up_to"), int) else None,
            unit_amount=_whole(t.get("unit_amount"), t.get("unit_amount_decimal")),
            flat_amount=_whole(t.get("flat_amount"), t.get("flat_amount_decimal")),
        )
        for t in (p.get("tiers") or [])
        if isinstance(t, dict)
    )
    return Price(
        id=p["id"],
        unit_amount=p.get("unit_amount") or 0,
        currency=p["currency"].lower(),
        recurring=bool(recurring),
        product_name=product.get("name"),
        product_description=product.get("description"),
        product_id=id_of(p.get("product")),
        interval=recurring.get("interval"),
        interval_count=recurring.get("interval_count") or 1,
        active=p.get("active", True) is not False,
        currency_options=options,
        metadata={k: v for k, v in (p.get("metadata") or {}).items() if isinstance(v, str)},
        tiers_mode=p.get("tiers_mode") if tiered else None,
        tiers=tiers if tiered else (),
    )


def _whole(amount, decimal) -> int:
    """A tier's amount in minor units; a fraction of a cent (`*_decimal` only) is -1: no total we could show is
    what Stripe charges, so the offer is refused (paygate/sales/offers.py)."""
    if isinstance(amount, int):
        return amount
    if decimal in (None, ""):
        return 0
    try:
        value = Decimal(str(decimal))
    except InvalidOperation:
        return -1
    return int(value) if value == value.to_integral_value() else -1


def promotion_code_view(data: dict) -> PromotionCode:
    coupon = (data.get("promotion") or {}).get("coupon")
    coupon = coupon if isinstance(coupon, dict) else {}
    restrictions = data.get("restrictions") or {}
    return PromotionCode(
        id=data["id"],
        code=data.get("code") or "",
        active=bool(data.get("active")),
        expires_at=from_epoch(data.get("expires_at")),
        max_redemptions=data.get("max_redemptions"),
        times_redeemed=data.get("times_redeemed") or 0,
        minimum_amount=restrictions.get("minimum_amount"),
        minimum_amount_currency=restrictions.get("minimum_amount_currency"),
        percent_off=coupon.get("percent_off"),
        amount_off=coupon.get("amount_off"),
        currency=coupon.get("currency"),
        products=tuple((coupon.get("applies_to") or {}).get("products") or ()),
        coupon_valid=bool(coupon) and coupon.get("valid") is not False,
        customer=id_of(data.get("customer")),
    )


class Catalogue:
    """Reading Prices and promotion codes (mixed into `Payments`, which provides `_client` and `_call`)."""

    def _init_catalogue(self) -> None:
        self._prices: dict[str, tuple[float, Price]] = {}
        self._prices_lock = threading.Lock()

    def get_price(self, price_id: str) -> Price:
        """A Price sold here, with its product and tiers, cached for a few minutes."""
        with self._prices_lock:
            cached = self._prices.get(price_id)
        if cached and time.monotonic() - cached[0] < PRICE_TTL_SECONDS:
            return cached[1]
        try:
            with telemetry.outbound("stripe", OPERATIONS["read the price"]):
                p = self._client.v1.prices.retrieve(
                    price_id, params={"expand": ["product", "currency_options", "tiers"]}
                ).to_dict()
        except (stripe.InvalidRequestError, stripe.PermissionError) as exc:
            # Unknown, deleted, or out of the key's reach: no retry will help; the vendor must act.
            log.error(
                "Stripe refuses the price %s: check STRIPE_PRICE_ID (%s, http %s)",
                price_id,
                type(exc).__name__,
                exc.http_status,
            )
            raise PriceNotSellable(f"STRIPE_PRICE_ID names a price Stripe refuses: {price_id}") from None
        except stripe.StripeError as exc:
            self._call("read the price", raise_, exc)
        price = price_view(p)
        with self._prices_lock:
            self._prices[price_id] = (time.monotonic(), price)
        return price

    def cached_price(self, price_id: str) -> Price | None:
        """The Price as last read (however long ago), without asking Stripe; None if never read."""
        with self._prices_lock:
            cached = self._prices.get(price_id)
        return cached[1] if cached else None

    def find_promotion_code(self, code: str) -> PromotionCode | None:
        """The active promotion code the customer typed (Stripe compares codes without regard to case), or None."""
        if not valid_code(code):
            return None
        page = self._call(
            "look up the promotion code",
            self._client.v1.promotion_codes.list,
            params={"code": code, "active": True, "limit": 10, "expand": ["data.promotion.coupon"]},
        )
        found = [promotion_code_view(p.to_dict()) for p in page.data]
        return next((p for p in found if p.code.casefold() == code.casefold()), None)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
