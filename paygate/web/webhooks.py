"""Stripe webhooks: a dispatcher. Verify on the raw body, record once by event id, route by type.

A signed event is still checked before use: its envelope (`envelope_problem`: id and type short printable
strings, data.object an object with a string id; the body a JSON object of bounded depth) or it is
acknowledged "malformed" and changes nothing. Each event type goes to the domain module that owns its rule:
checkout and fulfilment, licences (subscriptions, invoices), refunds and disputes. Those modules ask Stripe
for the object's current state and apply it only where it belongs (the ids stored here, or the reference
Stripe's own object carries); they never trust the event's snapshot or its order, and an object that is not
ours, or that Stripe does not know (a 404 for an id not stored here is final), is "foreign". The event and
its outcome are committed, then the sender is answered; what waits on LTIaaS (telling it a platform's new
access) runs after the answer, driven by what was recorded, and the worker finishes it if this process cannot.
"""

import logging

import stripe
from flask import Blueprint, jsonify, request
from sqlalchemy import bindparam, update

from paygate.core import telemetry
from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import StripeEvent
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.licensing import licences, reconciler, refunds
from paygate.sales import checkout, licence_checkout
from paygate.sales.fulfilment import after_payment, apply_checkout
from paygate.web.after_answer import after_answer

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

CONFIRMING = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
CLOSING = {"checkout.session.expired": "expired", "checkout.session.async_payment_failed": "failed"}
# Every other type this service handles (README "Stripe"), by the module that owns it:
# (object) -> (registration, outcome).
ROUTES = {
    "customer.subscription.updated": licences.on_subscription_event,
    "customer.subscription.deleted": licences.on_subscription_event,
    "invoice.paid": licences.on_invoice_event,
    "invoice.payment_failed": licences.on_invoice_event,
    "invoice.overdue": licences.on_invoice_event,
    "invoice.voided": licences.on_invoice_event,
    "invoice.marked_uncollectible": licences.on_invoice_event,
    "charge.refunded": refunds.on_charge_event,
    "refund.created": refunds.on_refund_event,
    "refund.updated": refunds.on_refund_event,
    "refund.failed": refunds.on_refund_event,
    "charge.dispute.created": refunds.on_dispute_event,
    "charge.dispute.updated": refunds.on_dispute_event,
    "charge.dispute.closed": refunds.on_dispute_event,
}


KNOWN_TYPES = frozenset(CONFIRMING) | frozenset(CLOSING) | frozenset(ROUTES)
# The envelope's strings go into columns (stripe_events.event_id, .type), log lines and the timeline's cause.
MAX_ID, MAX_TYPE = 255, 100


def _type_label(event) -> str:
    """The event's type as a metric label: a type this service handles, or "other" (labels stay few)."""
    kind = event.get("type")
    return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "other"


def _short_text(value, limit: int) -> bool:
    """A non-empty printable string of at most `limit` characters (no control character, NUL or lone surrogate)."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def envelope_problem(event: dict) -> str | None:
    """What is wrong with a verified event's envelope, in fixed words (never its content); None if nothing."""
    if not _short_text(event.get("id"), MAX_ID):
        return f"the event's id is not a printable string of at most {MAX_ID} characters"
    if not _short_text(event.get("type"), MAX_TYPE):
        return f"the event's type is not a printable string of at most {MAX_TYPE} characters"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "the event's data.object is not an object"
    object_id = data["object"].get("id")  # a type this service does not handle may leave it out
    if (object_id is not None or event["type"] in KNOWN_TYPES) and not _short_text(object_id, MAX_ID):
        return f"the event's data.object.id is not a printable string of at most {MAX_ID} characters"
    return None


def _malformed(event: dict | None, problem: str):
    """A signed body that is no usable event: acknowledged (a retry would bring the same bytes), logged once."""
    log.warning("webhook malformed, ignored: %s", problem)
    telemetry.webhook_event(_type_label(event) if event is not None else "other", "malformed")
    return jsonify(received=True, result="malformed")


_EVENTS = StripeEvent.__table__
_DELIVERED_AGAIN = (
    update(_EVENTS).where(_EVENTS.c.event_id == bindparam("delivered")).values(deliveries=_EVENTS.c.deliveries + 1)
)


@bp.post("/webhooks/stripe")
def stripe_webhook():
    payload = request.get_data()
    try:
        event = payments.gateway().construct_event(payload, request.headers.get("Stripe-Signature"))
    except payments.MalformedEvent as exc:
        return _malformed(None, f"the signed body {exc}")
    except (ValueError, stripe.SignatureVerificationError):
        log.warning("webhook refused: missing, bad or stale signature")
        telemetry.webhook_event("unverified", "refused_signature")
        return jsonify(error="invalid signature"), 400
    problem = envelope_problem(event)
    if problem is not None:
        return _malformed(event, problem)
    try:
        result, after = handle_event(event, payload.decode("utf-8"))
    except payments.PaymentProviderError:
        db.session.rollback()
        telemetry.webhook_event(_type_label(event), "unavailable")
        return jsonify(error="payment provider unavailable; retry"), 503
    except ValueError:  # an id that is not of its kind: nothing of ours, and never worth a retry
        db.session.rollback()
        log.warning("webhook %s (%s): an object id of the wrong shape; ignored", event.get("id"), event.get("type"))
        telemetry.webhook_event(_type_label(event), "malformed")
        return jsonify(received=True, result="malformed")
    except Exception:
        telemetry.webhook_event(_type_label(event), "error")
        raise
    telemetry.webhook_event(_type_label(event), result)
    response = jsonify(received=True, result=result)
    return after_answer(response, after) if after is not None else response


def handle_event(event: dict, payload: str):
    """Apply one verified event of a sound envelope (`envelope_problem`) and commit; returns (outcome, work to
    do after the answer or None)."""
    event_id, kind = event["id"], event["type"]
    obj = event["data"]["object"]
    cause = f"webhook {event_id} ({kind})"[:300]  # the timeline's cause column
    session_id = obj.get("id") if obj.get("object") == "checkout.session" else None
    registration, after, result = None, None, "ignored"
    if kind in CONFIRMING and session_id:
        # Stripe is asked again for the session: a late event never decides on stale data.
        view = checkout.read_session(session_id)
        outcome = apply_checkout(view, cause) if view is not None else None
        registration, result = (outcome.registration, outcome.note) if outcome else (None, "unknown session")
        if outcome and outcome.paid:
            after = after_payment(outcome, cause)
    elif kind in CLOSING and session_id:
        repeat = db.session.get(StripeEvent, event_id) is not None  # a repeat adds no timeline line
        registration, result = checkout.close_session(session_id, CLOSING[kind], cause, note=not repeat)
        released = licence_checkout.release_session(session_id, cause) if registration is not None else None
        if released is not None:  # a pilot's hold for its payment ended: its access may end with it
            after = lambda: reconciler.sync(released, cause)  # noqa: E731
    elif kind in ROUTES:
        registration, result = ROUTES[kind](obj, cause)
        if registration is not None:
            pk = registration.id
            after = lambda: reconciler.sync(pk, cause)  # noqa: E731
    # The first delivery's outcome is the one operators read: it is inserted with the event.
    new = insert_ignoring_duplicates(
        StripeEvent,
        {
            "event_id": event_id,
            "type": kind,
            "session_id": session_id,
            "received_at": utcnow(),
            "deliveries": 1,
            "payload": payload,
            "outcome": result[:300],
            "registration_pk": registration.id if registration else None,
        },
    )
    if new:
        if registration is not None and result == "already paid":
            record(
                registration,
                "event",
                cause=cause,
                details={"session": session_id},
                message="Stripe confirmed the payment again; already recorded, ignored.",
            )
    else:
        db.session.execute(_DELIVERED_AGAIN, {"delivered": event_id})
        log.info("webhook %s delivered again; outcome %s", event_id, result)
    db.session.commit()
    return result, after
