"""Offers: what the admin can buy. STRIPE_PRICE_ID lists the Prices, in the order shown; a Price with metadata
`seats=MIN-MAX` is sold per seat (`seat_unit`: seat, student, teacher, user), any other once. Each Price is read
from Stripe once and cached with its product (paygate/gateways/payments/catalogue.py); one that cannot be sold
(unknown, archived, no amount, malformed seats) is named in an ERROR and not offered.

`choose` is the one place that turns what the admin sent (offer, seats) into a choice: the Price, a whole
number of seats within its range, and the total Stripe will charge before discounts and tax.
"""

import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass

from flask import current_app

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import N_
from paygate.core.languages import gettext as _
from paygate.core.models import Registration
from paygate.gateways import payments

log = logging.getLogger(__name__)

SEAT_UNITS = ("seat", "student", "teacher", "user")
STRIPE_MAX_QUANTITY = 999_999  # Checkout's line item quantity
_SEATS = re.compile(r"^\s*(\d{1,6})\s*-\s*(\d{1,6})\s*$")
_QUANTITY = re.compile(r"^[0-9]{1,7}$")  # ASCII digits only: int() would read "١٢" as 12
# An unsellable Price is not asked about again for this long (each ask is a Stripe call and an ERROR).
_REFUSED_TTL = 300.0
# Per gateway (an app's): {price_id: when refused}.
_refused: "weakref.WeakKeyDictionary[object, dict[str, float]]" = weakref.WeakKeyDictionary()
_refused_lock = threading.Lock()


class ChoiceRefused(Exception):
    """The admin's offer or number of seats cannot be sold; the message is one sentence in the admin's language
    (built by the caller from `reason`), and nothing was made at Stripe."""

    def __init__(self, reason: str, offer: "Offer | None" = None):
        super().__init__(reason)
        self.reason = reason  # "offer", "seats_whole", "seats_range"
        self.offer = offer


@dataclass(frozen=True)
class Offer:
    price: payments.Price
    min_seats: int | None = None  # None: sold once (quantity 1)
    max_seats: int | None = None
    seat_unit: str | None = None

    @property
    def id(self) -> str:
        return self.price.id

    @property
    def per_seat(self) -> bool:
        return self.min_seats is not None

    @property
    def first_quantity(self) -> int:
        return self.min_seats if self.per_seat else 1

    def total(self, quantity: int, currency: str | None = None) -> int | None:
        return self.price.total(quantity, currency)


@dataclass(frozen=True)
class Choice:
    offer: Offer
    quantity: int

    @property
    def amount(self) -> int:
        return self.offer.total(self.quantity)

    @property
    def amounts(self) -> dict:
        """The total in each currency the Price sells in (Checkout may charge another one)."""
        return self.offer.price.totals(self.quantity)


def offer_of(price: payments.Price) -> Offer | None:
    """The offer a Price makes, or None (logged ERROR) when it cannot be sold."""
    if not price.active:
        log.error("STRIPE_PRICE_ID: price %s is archived (inactive) at Stripe; not offered", price.id)
        return None
    if not price.tiers and price.unit_amount <= 0:
        log.error(
            "STRIPE_PRICE_ID: price %s has no amount (free or custom amounts are not sold); not offered", price.id
        )
        return None
    if any(t.unit_amount < 0 or t.flat_amount < 0 for t in price.tiers):
        log.error("STRIPE_PRICE_ID: tiered price %s bills fractions of a cent; not offered", price.id)
        return None
    raw = price.metadata.get("seats")
    if raw is None:  # sold once: quantity 1 (a tiered Price at its first tier)
        return Offer(price)
    match = _SEATS.match(raw)
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= low <= high <= STRIPE_MAX_QUANTITY:
        log.error(
            "STRIPE_PRICE_ID: price %s has malformed metadata seats=%r (want MIN-MAX); not offered", price.id, raw
        )
        return None
    if price.total(low) <= 0:
        log.error("STRIPE_PRICE_ID: price %s costs nothing for %s seats; not offered", price.id, low)
        return None
    unit = (price.metadata.get("seat_unit") or "seat").strip().lower()
    if unit not in SEAT_UNITS:
        log.error("STRIPE_PRICE_ID: price %s has an unknown seat_unit %r; sold per seat", price.id, unit)
        unit = "seat"
    return Offer(price, low, high, unit)


def _read(price_id: str, gateway) -> Offer | None:
    with _refused_lock:
        refused_at = _refused.get(gateway, {}).get(price_id)
    if refused_at is not None and time.monotonic() - refused_at < _REFUSED_TTL:
        return None
    try:
        offer = offer_of(gateway.get_price(price_id))
    except payments.PriceNotSellable:
        offer = None
    except payments.PaymentProviderError:
        cached = gateway.cached_price(price_id)  # Stripe unreachable: what was read before still sells
        if cached is None:
            raise
        offer = offer_of(cached)
    if offer is None:
        with _refused_lock:
            _refused.setdefault(gateway, {})[price_id] = time.monotonic()
    return offer


def available(price_ids=None, gateway=None) -> list[Offer]:
    """The offers on sale now, in STRIPE_PRICE_ID's order; raises PriceNotSellable when none is, and
    PaymentProviderError when Stripe could not be asked."""
    price_ids = price_ids or current_app.config["SETTINGS"].price_ids
    gateway = gateway or payments.gateway()
    found = [offer for offer in (_read(pid, gateway) for pid in price_ids) if offer is not None]
    if not found:
        raise payments.PriceNotSellable("no Price of STRIPE_PRICE_ID can be sold")
    return found


def check_at_startup(settings) -> list[str]:
    """Read every offer once when a process starts, so that an unsellable Price is named in an ERROR then, not at
    the first school's visit. Returns the ids on sale; Stripe unreachable is a warning (pages retry)."""
    gateway = payments.from_settings(settings)
    try:
        on_sale = [offer.id for offer in available(settings.price_ids, gateway)]
    except payments.PriceNotSellable:
        log.error("STRIPE_PRICE_ID: none of its prices can be sold; the registration page says so")
        return []
    except payments.PaymentProviderError as exc:
        log.warning("start-up: the offers could not be read from Stripe (%s); they are read at the first visit", exc)
        return []
    log.info("Offers on sale: %s", ", ".join(on_sale))
    return on_sale


def parse_quantity(raw, offer: Offer) -> int:
    """The number of seats the admin typed, as a whole number within the offer's range; ChoiceRefused otherwise."""
    if not offer.per_seat:
        return 1
    text = raw.strip() if isinstance(raw, str) else ""
    if not _QUANTITY.match(text):
        raise ChoiceRefused("seats_whole", offer)  # -1, 1e9, 2.5, abc, 10 kB: no number we sell
    quantity = int(text)
    if not offer.min_seats <= quantity <= offer.max_seats:
        raise ChoiceRefused("seats_range", offer)
    return quantity


def choose(offers: list[Offer], offer_id, seats) -> Choice:
    """The admin's choice from what the frame sent: `offer_id` one of the offers (the first when absent), `seats`
    the number of seats (the offer's minimum when absent)."""
    if offer_id in (None, ""):
        offer = offers[0]
    else:
        offer = next((o for o in offers if isinstance(offer_id, str) and o.id == offer_id), None)
        if offer is None:
            raise ChoiceRefused("offer")
    if seats in (None, ""):
        return Choice(offer, offer.first_quantity)
    return Choice(offer, parse_quantity(seats, offer))


def apply_choice(reg: Registration, choice: Choice) -> bool:
    """Make `choice` the registration's (what it is priced at and shown); True if it changed. Flushes."""
    price = choice.offer.price
    values = {
        "price_id": price.id,
        "quantity": choice.quantity,
        "seat_unit": choice.offer.seat_unit,
        "amount": choice.amount,
        "currency": price.currency,
        "price_options": {c: v for c, v in choice.amounts.items() if c != price.currency} or None,
        "price_interval": price.period,
        "product_name": (price.product_name or "")[:250] or None,
        "product_description": (price.product_description or "")[:1000] or None,
    }
    changed = {k: v for k, v in values.items() if getattr(reg, k) != v}
    for key, value in changed.items():
        setattr(reg, key, value)
    if changed:
        db.session.flush()
    return bool(changed)


def current_choice(reg, offers: list[Offer]) -> Choice:
    """The registration's choice as stored, against today's offers (its Price may have left the list)."""
    offer = next((o for o in offers if o.id == reg.price_id), None)
    if offer is None:
        return Choice(offers[0], offers[0].first_quantity)
    quantity = reg.quantity if offer.per_seat and offer.min_seats <= (reg.quantity or 0) <= offer.max_seats else None
    return Choice(offer, quantity or offer.first_quantity)


# Sentences for the admin, in the admin's language.
REFUSALS = {
    "offer": N_("This offer is not on sale. Choose one of the offers shown."),
    "seats_whole": N_("Enter the number of %(units)s as a whole number from %(min)s to %(max)s."),
    "seats_range": N_("The number of %(units)s must be from %(min)s to %(max)s."),
}
UNIT_NAMES = {"seat": N_("seats"), "student": N_("students"), "teacher": N_("teachers"), "user": N_("users")}


def refusal(exc: ChoiceRefused) -> str:
    """One sentence for a choice that cannot be sold."""
    offer = exc.offer
    if offer is None or not offer.per_seat:
        return _(REFUSALS["offer"])
    return _(
        REFUSALS[exc.reason],
        units=_(UNIT_NAMES[offer.seat_unit]),
        min=languages.number(offer.min_seats),
        max=languages.number(offer.max_seats),
    )
