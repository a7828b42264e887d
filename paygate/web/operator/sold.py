"""What a registration was sold, as operators read it (offer, seats, amounts, payer, invoice), and the offers seen."""

from dataclasses import dataclass

from sqlalchemy import text

from paygate.core.db import db

MAX_OFFERS_LISTED = 100
# Unit nouns whose plural is not the noun and an "s" ("120 classes", not "120 classs").
_ES_ENDINGS = ("s", "x", "z", "ch", "sh")


@dataclass(frozen=True)
class Sold:
    price_id: str | None
    product_name: str | None
    quantity: int
    seat_unit: str | None  # None: an offer sold once, not per seat
    amount: int | None  # minor units, after discounts, before tax
    currency: str | None
    charged: bool  # the amount was paid or invoiced; False: only the price shown to the admin
    discount: int | None
    tax: int | None  # None: no tax computed (or not known)
    promotion_code: str | None
    payer: str | None  # the school or organisation
    invoice_pdf: str | None
    hosted_invoice_url: str | None
    # "licence": as Stripe billed it; "registration": the offer chosen, where there is no licence or its
    # licence is from before the offers were recorded (migration 0007).
    source: str

    @property
    def seats(self) -> str | None:
        """The seats as people read them ("120 students"); None for an offer sold once."""
        if not self.seat_unit:
            return None
        return f"{self.quantity} {self.seat_unit if self.quantity == 1 else plural(self.seat_unit)}"


def plural(unit: str) -> str:
    """The English plural of a seat unit (stored singular: student, teacher, class)."""
    if unit.endswith(_ES_ENDINGS):
        return unit + "es"
    if unit.endswith("y") and unit[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return unit[:-1] + "ies"
    return unit + "s"


def sold(reg) -> Sold:
    """The licence's record of the sale, falling back on the registration where the licence has none.

    A licence from before migration 0007 has no Price, quantity or amount: it was one of the registration's
    Price, and nothing was discounted or taxed then, so what was paid is the amount after discounts and
    before tax; an invoice not yet paid counts its amount due, and a registration without payment its
    price as shown. Discount, tax and code stay None there: they were never recorded, not zero.
    """
    lic = reg.licence
    billed = lic is not None and lic.price_id is not None
    if billed:
        price_id = lic.price_id
        quantity = lic.quantity if lic.quantity is not None else 1
        unit = lic.seat_unit
    else:
        price_id, quantity, unit = reg.price_id, reg.quantity if reg.quantity is not None else 1, reg.seat_unit
    if lic is not None and lic.amount is not None:
        amount, currency = lic.amount, lic.currency or reg.currency_paid or reg.currency
    elif reg.amount_paid is not None:
        amount, currency = reg.amount_paid, reg.currency_paid
    elif lic is not None and lic.amount_due is not None:
        amount, currency = lic.amount_due, lic.currency
    else:
        amount, currency = reg.amount, reg.currency
    # A pilot's licence charged nothing: its amount is the price shown, until the pilot is paid for (its kind
    # then becomes the payment's).
    charged = (lic is not None and lic.kind != "pilot") or reg.amount_paid is not None
    return Sold(
        price_id=price_id,
        # The registration's product is this Price's only while the two agree (a subscription may be moved
        # to another Price in the Stripe dashboard).
        product_name=reg.product_name if price_id == reg.price_id else None,
        quantity=quantity,
        seat_unit=unit,
        amount=amount,
        currency=currency,
        charged=charged,
        discount=lic.discount if lic else None,
        tax=lic.tax if lic else None,
        promotion_code=lic.promotion_code if lic else None,
        payer=lic.organisation if lic else None,
        invoice_pdf=lic.invoice_pdf if lic else None,
        hosted_invoice_url=lic.hosted_invoice_url if lic else None,
        source="licence" if billed else "registration",
    )


@dataclass(frozen=True)
class Offer:
    price_id: str
    product_name: str | None

    @property
    def label(self) -> str:
        return f"{self.product_name} ({self.price_id})" if self.product_name else self.price_id


# Each distinct Price by a skip over ix_registrations_price_id_created_at_id (migration 0008): one index
# probe per Price instead of a scan of every registration, with the product name of its newest registration.
# That one is the first row at or below the Price in the index's order: with `price_id = ...` PostgreSQL
# would rather walk every registration by date, filtering, which takes seconds for a Price sold long ago.
_OFFERS_SEEN = text(
    """
    WITH RECURSIVE seen(price_id) AS (
        SELECT min(price_id) FROM registrations
        UNION ALL
        SELECT (SELECT min(r.price_id) FROM registrations r WHERE r.price_id > seen.price_id)
        FROM seen WHERE seen.price_id IS NOT NULL
    )
    SELECT price_id, (
        SELECT r.product_name FROM registrations r WHERE r.price_id <= seen.price_id
        ORDER BY r.price_id DESC, r.created_at DESC, r.id DESC LIMIT 1
    ) AS product_name
    FROM seen WHERE price_id IS NOT NULL LIMIT :limit
    """
)


def offers_seen(configured: list[str]) -> list[Offer]:
    """The list filter's offers: the configured Prices in their order, then those registrations carry."""
    found = {row.price_id: row.product_name for row in db.session.execute(_OFFERS_SEEN, {"limit": MAX_OFFERS_LISTED})}
    return [Offer(price_id, found.get(price_id)) for price_id in dict.fromkeys([*configured, *found])]
