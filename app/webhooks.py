"""Stripe webhooks: verified on the raw body, recorded once by event id, fulfilled idempotently."""
import logging

import stripe
from flask import Blueprint, jsonify, request
from sqlalchemy import update

from . import payments
from .db import db, insert_ignoring_duplicates, utcnow
from .fulfilment import apply_checkout, complete
from .models import CheckoutSession, StripeEvent
from .registrations import record

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

CONFIRMING = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
CLOSING = {"checkout.session.expired": "expired", "checkout.session.async_payment_failed": "failed"}


@bp.post("/webhooks/stripe")
def stripe_webhook():
    payload = request.get_data()
    try:
        event = payments.gateway().construct_event(payload, request.headers.get("Stripe-Signature"))
    except (ValueError, stripe.SignatureVerificationError):
        log.warning("webhook refused: missing, bad or stale signature")
        return jsonify(error="invalid signature"), 400
    try:
        result = handle_event(event, payload.decode("utf-8"))
    except payments.PaymentProviderError:
        db.session.rollback()
        return jsonify(error="payment provider unavailable; retry"), 503
    return jsonify(received=True, result=result)


def handle_event(event: dict, payload: str) -> str:
    """Apply one verified event; the LTIaaS call, if any, runs after the commit."""
    event_id, kind = event["id"], event["type"]
    obj = (event.get("data") or {}).get("object") or {}
    session_id = obj.get("id") if obj.get("object") == "checkout.session" else None
    # Stripe is asked again for the session: a late event never decides on stale data.
    view = payments.gateway().retrieve_checkout_session(session_id) if kind in CONFIRMING and session_id else None

    new = insert_ignoring_duplicates(StripeEvent, {"event_id": event_id, "type": kind, "session_id": session_id,
                                                   "received_at": utcnow(), "deliveries": 1, "payload": payload})
    if not new:
        db.session.execute(update(StripeEvent).where(StripeEvent.event_id == event_id)
                           .values(deliveries=StripeEvent.deliveries + 1))
    cause = f"webhook {event_id} ({kind})"
    if view is not None:
        outcome = apply_checkout(view, cause)
        result = outcome.note
        if new and result == "already paid":  # another event for the same payment: logged, ignored
            record(outcome.registration, "event", cause=cause, details={"session": session_id},
                   message="Stripe confirmed the payment again; already recorded, ignored.")
    elif kind in CLOSING and session_id:
        outcome, result = None, _close_session(session_id, CLOSING[kind], cause, new)
    else:
        outcome, result = None, "ignored"
    registration = outcome.registration if outcome else None
    if new:  # the first delivery's outcome is the one operators read
        db.session.execute(update(StripeEvent).where(StripeEvent.event_id == event_id).values(
            outcome=result, registration_pk=registration.id if registration else StripeEvent.registration_pk))
    else:
        log.info("webhook %s delivered again; outcome %s", event_id, result)
    db.session.commit()
    if outcome is not None and outcome.paid:
        complete(outcome.registration, cause)
    return result


def _close_session(session_id: str, how: str, cause: str, new: bool) -> str:
    """An expired or failed session: final for that session, and never for a paid registration."""
    row = db.session.scalars(db.select(CheckoutSession).where(CheckoutSession.session_id == session_id)).first()
    if row is None:
        return "unknown session"
    reg = row.registration
    if reg.payment_session_id == session_id:
        if new:
            record(reg, "event", cause=cause, message=f"Late '{how}' for the session that paid; ignored.")
        return "ignored: already paid"
    if how == "expired" and row.status != "complete":
        row.status = "expired"
    if how == "failed" and row.failed_at is None:
        row.failed_at = utcnow()
    if new:
        record(reg, "event", cause=cause, details={"session": session_id},
               message="The payment session expired unpaid." if how == "expired" else
               "The delayed payment failed; nothing was charged.")
    db.session.execute(update(StripeEvent).where(StripeEvent.session_id == session_id)
                       .values(registration_pk=reg.id))
    return how
