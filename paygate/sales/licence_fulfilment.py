"""A licence paid on its licence page: the paid session, read from Stripe, applied to THAT licence, once.

Reached from paygate/sales/fulfilment.py (`apply_checkout`) for a session whose metadata names a licence, so the
webhook, the licence page's success return and reconciliation share it. The session must name the licence and the
registration that opened it, and carry the Price, quantity and amounts it was opened for
(paygate/sales/licence_checkout.py). Under the licence's lock, the one caller whose conditional UPDATE marks the
session paid records the payment and turns the licence into a payment or a subscription, with its Stripe ids; the
key, the platforms and the pilot's end (history) stay. Every platform's access is decided again; the caller has
the reconciler tell LTIaaS after its commit. The registration's state never changes and nothing is completed.
"""

import logging
from dataclasses import dataclass

from sqlalchemy import select, update

from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import CheckoutSession, Licence, Registration
from paygate.core.money import format_amount
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.licensing import access, licences
from paygate.sales import checkout, offers
from paygate.sales.licence_checkout import licence_named

log = logging.getLogger(__name__)

PAID = ("paid", "no_payment_required")


@dataclass
class Applied:
    registration: Registration | None  # the registration that opened the licence
    paid: bool  # this session pays the licence (now or before)
    note: str
    licence_pk: int | None = None


def _origin(view: payments.CheckoutView) -> tuple[Licence | None, Registration | None]:
    licence_pk = licence_named(view)
    licence = db.session.get(Licence, licence_pk) if licence_pk is not None else None
    origin = db.session.get(Registration, licence.registration_pk) if licence is not None else None
    return licence, origin


def _row(session_id: str) -> CheckoutSession | None:
    query = select(CheckoutSession).where(CheckoutSession.session_id == session_id)
    return db.session.scalars(query.execution_options(populate_existing=True)).first()


def names_licence(licence: Licence, origin: Registration, view: payments.CheckoutView) -> bool:
    """The session carries the whole reference of the licence's origin registration, and its row (if any) is a
    licence page's session of that registration."""
    row = _row(view.id)
    return (
        view.client_reference_id == origin.registration_id
        and view.metadata.get("registration_pk") == str(origin.id)
        and view.metadata.get("registration_id") == origin.registration_id
        and view.metadata.get("licence") == str(licence.id)
        and (row is None or (row.registration_pk == origin.id and row.generation < 0))
    )


def mismatch(origin: Registration, row: CheckoutSession | None, view: payments.CheckoutView) -> list[str]:
    """What differs between what the session was opened for (its row) and what Stripe says it charged."""
    if row is None or row.price_id is None:
        return ["opened elsewhere"]  # no choice recorded here to check it against: an operator looks
    return checkout.charged_as_offered(view, row.amounts or {}, row.price_id, row.quantity or 1, origin.id)


def _remember(origin: Registration, view: payments.CheckoutView) -> CheckoutSession:
    """The session's row (made now if a crash came between Stripe and ours), with what Stripe says of it."""
    now = utcnow()
    insert_ignoring_duplicates(
        CheckoutSession,
        {
            "session_id": view.id,
            "registration_pk": origin.id,
            "generation": -1,
            "status": view.status or "open",
            "payment_status": view.payment_status or "unpaid",
            "url": view.url,
            "expires_at": view.expires_at,
            "created_at": now,
            "updated_at": now,
        },
    )
    row = _row(view.id)
    row.amount_total, row.currency = view.amount_total, view.currency
    row.payment_intent_id = view.payment_intent or row.payment_intent_id
    row.payer_email = view.payer_email or row.payer_email
    return row


def _claim(row: CheckoutSession, view: payments.CheckoutView) -> bool:
    """Mark the session paid; True for the one caller that does (the others see it paid already)."""
    return (
        db.session.execute(
            update(CheckoutSession)
            .where(
                CheckoutSession.id == row.id,
                ~((CheckoutSession.status == "complete") & CheckoutSession.payment_status.in_(PAID)),
            )
            .values(status="complete", payment_status=view.payment_status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def apply(view: payments.CheckoutView, paid: bool, cause: str) -> Applied:
    """Apply a licence page's session as Stripe has it now (`paid`: paid, or made free by a promotion code), in
    the caller's transaction (flushes, no commit)."""
    licence, origin = _origin(view)
    if licence is None or not names_licence(licence, origin, view):
        log.warning("Checkout Session %s names a licence it does not belong to (cause %s); ignored", view.id, cause)
        return Applied(None, False, "foreign session")
    licence = licences.locked(licence.id)  # one payment of a licence at a time; simultaneous callers queue
    row = _remember(origin, view)
    if not paid:
        if view.status == "complete" and view.payment_status == "unpaid":
            if row.status != "complete":
                row.status, row.payment_status = "complete", "unpaid"
                record(
                    origin,
                    "payment",
                    cause=cause,
                    message="Licence page: the payment is processing (a delayed payment method).",
                    details={"session": view.id, "licence": licence.id},
                )
            return Applied(origin, False, "processing", licence.id)
        if row.status == "open" and view.status in ("open", "expired"):
            row.status = view.status
        return Applied(origin, False, view.status or "unknown", licence.id)
    evidence = {
        "session": view.id,
        "licence": licence.id,
        "payment_intent": view.payment_intent,
        "subscription": view.subscription,
        "amount": view.amount_total,
        "currency": view.currency,
        "quantity": view.quantity,
    }
    problems = mismatch(origin, row, view)
    if problems:
        if row.status != "complete" or row.payment_status not in PAID:
            row.status, row.payment_status = "complete", view.payment_status
            record(
                origin,
                "payment",
                cause=cause,
                details={**evidence, "mismatch": problems},
                attention="payment_mismatch",
                message="A payment on the licence page that does not match what was offered "
                f"({', '.join(problems)}); the licence is unchanged: refund it or apply it by hand.",
            )
        return Applied(origin, False, "mismatch", licence.id)
    if not _claim(row, view):
        return Applied(origin, True, "already paid", licence.id)
    before = licence.kind
    _convert(licence, row, view, origin, cause)
    record(
        origin,
        "licence",
        cause=cause,
        details={**evidence, "kind": licence.kind, "was": before},
        message=f"Licence paid on its licence page: {format_amount(view.amount_total, view.currency)}"
        + (f" with promotion code {view.promotion_code}" if view.promotion_code else "")
        + f"; the {before} licence is now a {licence.kind} licence, with its key and platforms.",
    )
    access.refresh(origin, cause)  # every platform of the licence
    return Applied(origin, True, "licence paid", licence.id)


def _seat_unit(price_id: str, licence: Licence) -> str | None:
    price = payments.gateway().cached_price(price_id)  # read when the page offered it; no call to Stripe here
    offer = offers.offer_of(price) if price is not None else None
    return offer.seat_unit if offer is not None else licence.seat_unit


def _convert(
    licence: Licence, row: CheckoutSession, view: payments.CheckoutView, origin: Registration, cause: str
) -> None:
    """The licence becomes what the session bought; its key, platforms and pilot's end stay. Flushes."""
    now = utcnow()
    price_id = view.price_ids[0] if view.price_ids else row.price_id
    bought = {
        "price_id": price_id,
        "quantity": view.quantity or row.quantity or 1,
        "seat_unit": _seat_unit(price_id, licence),
        "amount": view.amount_before_tax,
        "discount": view.amount_discount or None,
        "tax": view.amount_tax,
        "promotion_code": view.promotion_code,
        "promotion_code_id": None,
        "organisation": view.organisation or licence.organisation,
        "currency": view.currency,
        # What the licence was billed by before (an invoice, a pilot's hold) is history now.
        "invoice_id": view.invoice,
        "invoice_number": None,
        "hosted_invoice_url": view.invoice_url,
        "invoice_pdf": view.invoice_pdf,
        "amount_due": None,
        "amount_remaining": None,
        "due_at": None,
        "subscription_status": None,
        "cancel_at_period_end": False,  # a new subscription says its own (apply_subscription)
        "payment_pending_until": None,
        "updated_at": now,
    }
    sub = view.subscription_view
    if sub is not None:
        bought.update(kind="subscription", subscription_id=sub.id, customer_id=sub.customer or licence.customer_id)
    else:
        bought.update(
            kind="payment",
            status="succeeded" if view.payment_status == "paid" else view.payment_status,
            customer_id=view.customer or licence.customer_id,
            subscription_id=None,  # a lapsed subscription's events no longer concern this licence
            period_end=None,
            first_paid_at=licence.first_paid_at or now,
        )
    for name, value in bought.items():
        setattr(licence, name, value)
    db.session.flush()
    if sub is not None:
        licences.apply_subscription(origin, licence, sub, cause)  # status, period, its invoice and payment
    elif view.payment_intent:
        licences.add_payment(licence, view.payment_intent, amount=view.amount_total, currency=view.currency)
