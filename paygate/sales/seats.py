"""Changing the seats of a subscription from its licence page: a whole number within its offer's range
(paygate/sales/offers.py: `parse_quantity`, the same check as the frame's), set on the subscription's one
item at Stripe with prorations, then the subscription read back and applied to the licence at once (the
`customer.subscription.updated` Stripe sends afterwards finds it applied).

No transaction is open while Stripe is asked (docs/architecture.md, invariant 3); a number refused here
reaches no Stripe call that changes anything.
"""

import logging
import uuid

from paygate.core.db import db
from paygate.core.models import Licence
from paygate.gateways import payments
from paygate.licensing import access, licences
from paygate.sales import offers

log = logging.getLogger(__name__)


def changeable(licence: Licence) -> bool:
    """Whether the licence's seats may be changed: a per-seat subscription that is still running (from what is
    stored: no Stripe call)."""
    if not (licence.subscription_id and licence.price_id and licence.seat_unit):
        return False
    status = licence.status if licence.kind == "subscription" else licence.subscription_status
    return licence.kind in ("subscription", "invoice") and status in access.ACTIVE_SUBSCRIPTION


def known_range(licence: Licence) -> tuple[int, int] | None:
    """The licence's offer's MIN-MAX from the Price as this process last read it (no Stripe call), or None."""
    price = payments.gateway().cached_price(licence.price_id) if licence.price_id else None
    offer = offers.offer_of(price) if price is not None else None
    return (offer.min_seats, offer.max_seats) if offer is not None and offer.per_seat else None


def offer_of(licence: Licence) -> offers.Offer:
    """The per-seat offer the licence was bought at (its Price, read or cached); ChoiceRefused if it is none."""
    try:
        offer = offers.offer_of(payments.gateway().get_price(licence.price_id))
    except payments.PriceNotSellable:
        offer = None
    if offer is None or not offer.per_seat:
        raise offers.ChoiceRefused("offer")
    return offer


def change(licence: Licence, raw, cause: str) -> int:
    """Set the licence's subscription to the seats `raw` names; the new quantity, as the licence now holds it.

    Raises offers.ChoiceRefused (a number not whole or out of range: nothing asked of Stripe but the Price)
    and payments.PaymentProviderError (Stripe could not be asked, or refused: nothing changed here). Commits.
    """
    licence_pk, subscription_id = licence.id, licence.subscription_id
    offer = offer_of(licence)
    quantity = offers.parse_quantity(raw, offer)
    db.session.commit()  # no transaction open while Stripe is asked
    gateway = payments.gateway()
    sub = gateway.retrieve_subscription(subscription_id)
    if sub.item_id is None or not licences.subscription_belongs(db.session.get(Licence, licence_pk), sub):
        raise payments.PaymentProviderError("The subscription cannot be changed here.")
    db.session.commit()
    if sub.quantity != quantity:
        # A key of its own per request: the same change asked again later (10, 20, then 10 again) is a new change.
        gateway.change_subscription_quantity(subscription_id, sub.item_id, quantity, f"seats-{uuid.uuid4()}")
        log.info("licence %s: seats changed to %s at Stripe", licence_pk, quantity)
    try:
        licences.recheck(licence_pk, cause)  # read back and applied now; Stripe's event will find it so
    except payments.PaymentProviderError:
        db.session.rollback()  # changed at Stripe: customer.subscription.updated brings it here
        return quantity
    return db.session.get(Licence, licence_pk).quantity
