"""Opening a Checkout Session for a registration: at most one open at a time, reused on every click."""

import hashlib
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import CheckoutSession, Licence, Registration, State
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.sales import offers

log = logging.getLogger(__name__)

# Stripe accepts an expiry 30 minutes to 24 hours after creation.
STRIPE_MIN_EXPIRY = timedelta(minutes=30, seconds=30)
# Completion must still fit in the LMS token's life after the last possible payment.
COMPLETION_MARGIN = timedelta(minutes=5)
# A session about to expire is not handed out: the admin needs time to type a card number.
REUSE_MARGIN = timedelta(minutes=2)


class NotPayable(Exception):
    """The registration cannot take a payment now; `reason` picks the sentence shown to the admin."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def reference(reg: Registration) -> dict:
    """What ties a Checkout Session to its registration, checked again on every confirmation."""
    return {
        "client_reference_id": reg.registration_id,
        "metadata": {"registration_pk": str(reg.id), "registration_id": reg.registration_id},
    }


def _usable(row: CheckoutSession | None, now, reg: Registration) -> bool:
    """An open session of this registration's current choice (its Price and seats), with time left to pay."""
    return (
        row is not None
        and row.status == "open"
        and row.failed_at is None
        and row.expires_at is not None
        and row.expires_at > now + REUSE_MARGIN
        and (row.price_id or reg.price_id, row.quantity or 1) == (reg.price_id, reg.quantity)
    )


def _current_session(reg: Registration) -> CheckoutSession | None:
    return db.session.scalars(
        select(CheckoutSession)
        .where(CheckoutSession.registration_pk == reg.id, CheckoutSession.generation == reg.checkout_generation)
        .order_by(CheckoutSession.id.desc())
        .limit(1)
    ).first()


def open_checkout(
    reg: Registration,
    success_url: str,
    cancel_url: str,
    locale: str | None = None,
    choice: offers.Choice | None = None,
    organisation_label: str | None = None,
) -> str:
    """The URL of the registration's open Checkout Session for the admin's `choice` (offer and seats; the stored
    one when None), creating one if none is usable. A new choice is stored first and gets its own session; the
    session of the previous choice is expired at Stripe, so that one registration is never paid twice.

    Generation g has one idempotency key and one expiry, so a double click, a reload or a retry
    after a network failure or a rate limit replays the same request and Stripe answers with the
    same session. After an answer Stripe would replay (a 5xx), the next try opens generation g+1.
    Commits; the Stripe call happens outside any transaction. `locale` (Checkout's language) is fixed
    with the generation, like the key: a retry in another language replays the first request.
    """
    settings = current_app.config["SETTINGS"]
    now = utcnow()
    invoiced = db.session.scalars(
        select(Licence.id).where(Licence.registration_pk == reg.id, Licence.kind == "invoice")
    ).first()
    if invoiced is not None:
        raise NotPayable("invoiced")  # the admin chose to pay by invoice: never a card payment too
    if reg.state != State.PENDING:
        raise NotPayable(reg.state)
    current = _current_session(reg)
    if current is not None and current.status == "complete" and current.failed_at is None:
        raise NotPayable("processing")  # a delayed payment is on its way: never a second charge
    if choice is not None and (choice.offer.id, choice.quantity) != (reg.price_id, reg.quantity):
        if current is not None and current.status == "open":
            _close_for_new_choice(current.session_id)  # before anything else: never two payable sessions
            db.session.refresh(reg)
            current = _current_session(reg)
        offers.apply_choice(reg, choice)
        db.session.commit()
    if _usable(current, now, reg):
        if current.canceled_at is not None:  # the admin is trying again in the same session
            current.canceled_at = None
            db.session.commit()
        return current.url
    generation_spent = (
        reg.checkout_generation == 0
        or current is not None
        or reg.checkout_expires_at is None
        or reg.checkout_expires_at <= now + REUSE_MARGIN
    )
    if generation_spent:
        expires_at = reg.created_at + timedelta(minutes=settings.registration_window_minutes) - COMPLETION_MARGIN
        if expires_at < now + STRIPE_MIN_EXPIRY:
            raise NotPayable("too_late")
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id, Registration.checkout_generation == reg.checkout_generation)
            .values(
                checkout_generation=reg.checkout_generation + 1,
                checkout_expires_at=expires_at,
                checkout_locale=locale,
                checkout_payer_label=(organisation_label or "")[:50] or None,
            )
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        db.session.refresh(reg)
        current = _current_session(reg)
        if _usable(current, now, reg):  # a concurrent click got there first
            return current.url
    if reg.checkout_expires_at < now + STRIPE_MIN_EXPIRY:
        raise NotPayable("too_late")  # Stripe would refuse this generation's expiry by now
    generation, expires_at = reg.checkout_generation, reg.checkout_expires_at
    ref = reference(reg)
    request = {
        "price_id": reg.price_id,
        "reference": ref["client_reference_id"],
        "metadata": ref["metadata"],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_at": expires_at,
        # The choice is in the key: two clicks on different offers at once never reuse each other's key.
        "idempotency_key": f"paygate-checkout-{reg.id}-{reg.registration_id}-{generation}-{_digest(reg)}",
        "recurring": reg.price_interval is not None,
        "locale": reg.checkout_locale,
        "quantity": reg.quantity,
        "organisation_label": reg.checkout_payer_label,
    }
    reg_pk = reg.id
    chosen = {
        "price_id": reg.price_id,
        "quantity": reg.quantity,
        "amounts": {reg.currency: reg.amount, **(reg.price_options or {})},
    }
    db.session.commit()  # no transaction stays open while Stripe is called
    try:
        view = payments.gateway().create_checkout_session(**request)
    except payments.PaymentProviderError as exc:
        if exc.replayed:
            # Stripe would replay this answer for the same key: the next try starts a new generation.
            db.session.execute(
                update(Registration)
                .where(Registration.id == reg_pk, Registration.checkout_generation == generation)
                .values(checkout_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
        raise
    insert_ignoring_duplicates(
        CheckoutSession,
        {
            "session_id": view.id,
            "registration_pk": reg_pk,
            "generation": generation,
            "status": view.status or "open",
            "payment_status": view.payment_status or "unpaid",
            "url": view.url,
            "expires_at": view.expires_at or expires_at,
            "amount_total": view.amount_total,
            "currency": view.currency,
            "created_at": now,
            "updated_at": now,
            **chosen,
        },
    )
    db.session.commit()
    return view.url


def _digest(reg: Registration) -> str:
    return hashlib.sha256(f"{reg.price_id}\n{reg.quantity}".encode()).hexdigest()[:16]


def _close_for_new_choice(session_id: str) -> None:
    """The open session of the admin's previous choice is expired at Stripe before the new choice is stored. If
    Stripe says it was paid meanwhile, that payment stands (NotPayable "processing": the webhook or the return
    records it); if Stripe cannot be asked, nothing changes (PaymentProviderError: try again)."""
    db.session.commit()  # no transaction stays open while Stripe is called
    try:
        view = payments.gateway().expire_checkout_session(session_id)
    except payments.PaymentProviderError:
        view = read_session(session_id)
        if view is None or view.status == "open":
            raise
    if view.status == "complete":
        raise NotPayable("processing")
    db.session.execute(
        update(CheckoutSession)
        .where(CheckoutSession.session_id == session_id, CheckoutSession.status == "open")
        .values(status="expired", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def _row(session_id: str) -> CheckoutSession | None:
    return db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == session_id)).first()


def read_session(session_id: str) -> payments.CheckoutView | None:
    """The session as Stripe has it now; None when Stripe has no such session and none of ours has that id
    (someone else's, or none: Stripe's 404 is final). A 404 for a session of ours raises, to be retried."""
    try:
        return payments.gateway().retrieve_checkout_session(session_id)
    except payments.ObjectMissing:
        if _row(session_id) is not None:
            raise
        return None


def close_session(session_id: str, how: str, cause: str, note: bool = True):
    """An expired or failed session: final for that session, and never for a paid registration. Stripe is
    asked: the session must be ours (its reference) and closed that way there, whatever the event said.

    Returns (registration or None, outcome). Flushes; the caller commits.
    """
    row = _row(session_id)
    if row is None:
        return None, "unknown session"
    reg = row.registration
    view = read_session(session_id)
    ref = reference(reg)
    if (view.client_reference_id, view.metadata.get("registration_pk")) != (
        ref["client_reference_id"],
        ref["metadata"]["registration_pk"],
    ):
        log.warning(
            "Checkout Session %s: Stripe's session names another registration than %s; ignored", session_id, reg.id
        )
        return None, "foreign session"
    if reg.payment_session_id == session_id:
        if note:
            record(reg, "event", cause=cause, message=f"Late '{how}' for the session that paid; ignored.")
        return reg, "ignored: already paid"
    closed = (
        view.status == "expired" if how == "expired" else view.status == "complete" and view.payment_status != "paid"
    )
    if not closed:
        return reg, f"no change (Stripe says the session is {view.status or 'unknown'}, {view.payment_status})"
    if how == "expired" and row.status != "complete":
        row.status = "expired"
    if how == "failed" and row.failed_at is None:
        row.failed_at = utcnow()
    if note:
        record(
            reg,
            "event",
            cause=cause,
            details={"session": session_id},
            message="The payment session expired unpaid."
            if how == "expired"
            else "The delayed payment failed; nothing was charged.",
        )
    return reg, how


def charged_as_offered(
    view: payments.CheckoutView, offered: dict, price_id: str, quantity: int, registration_pk: int
) -> list[str]:
    """What differs between what a session was opened for (its amounts before discounts and tax, per currency; its
    Price and number) and what Stripe says it charged. A discount is allowed only with PROMOTION_CODES, tax on top
    or included; a subscription must name the registration. Both a registration's and a licence's sessions."""
    problems = []
    currency = (view.currency or "").lower()
    subtotal = view.amount_subtotal if view.amount_subtotal is not None else view.amount_total
    if currency not in offered:
        problems.append("currency")
    elif subtotal != offered[currency]:
        problems.append("amount")
    discount, tax = view.amount_discount or 0, view.amount_tax or 0
    if discount and not current_app.config["SETTINGS"].promotion_codes:
        problems.append("discount")
    fits = subtotal is None or view.amount_total in (subtotal - discount, subtotal - discount + tax)
    if not fits and "amount" not in problems:
        problems.append("amount")  # tax inclusive or exclusive; nothing else may change the total
    if view.mode == "subscription" and (
        view.subscription_view is None or view.subscription_view.metadata.get("registration_pk") != str(registration_pk)
    ):
        problems.append("subscription")
    if view.price_ids and view.price_ids != [price_id]:
        problems.append("price")
    if view.quantity is not None and view.quantity != quantity:
        problems.append("quantity")
    return problems
