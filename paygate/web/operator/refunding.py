"""An operator's refund: the payment a registration's refund returns, and the refund itself, asked of Stripe
once per payment (its idempotency key), recorded in the timeline; a subscription is cancelled with it.

Pattern as for every operator action (paygate/web/operator/actions.py): check, commit, call, record, commit.
"""

import logging

from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, Registration, State, TimelineEntry
from paygate.core.money import format_amount
from paygate.core.registrations import record, transition
from paygate.gateways import payments
from paygate.licensing import access, reconciler, refunds
from paygate.web.operator.actions import Result, cause_of, reasons
from paygate.web.operator.standing import joined_from

log = logging.getLogger(__name__)

REFUNDABLE = {State.PAID, State.NEEDS_ATTENTION, State.COMPLETED}


def refundable_payment(reg: Registration) -> str | None:
    """The payment intent a refund of this registration returns the money of, if any.

    The registration's own payment; else, for a payment that was not accepted (mismatch), the one
    paid Checkout Session of the registration. None for a registration that joined another's licence by its
    key: it paid nothing, and the licence's payment is refunded on the registration that opened it.
    """
    if reg.payment_intent_id:
        return reg.payment_intent_id
    if joined_from(reg) is not None:
        return None
    current = access.current_payment(reg.licence) if reg.licence is not None else None
    if current is not None:  # a subscription's or an invoice's payment
        return current.payment_intent_id
    paid = [
        s.payment_intent_id
        for s in db.session.scalars(
            select(CheckoutSession).where(
                CheckoutSession.registration_pk == reg.id,
                CheckoutSession.payment_status == "paid",
                CheckoutSession.payment_intent_id.is_not(None),
            )
        )
    ]
    return paid[0] if len(set(paid)) == 1 else None


def can_refund(reg: Registration) -> bool:
    return reg.state in REFUNDABLE and refundable_payment(reg) is not None


def refund_key(reg: Registration, payment_intent: str) -> str:
    """One key per payment, so a second click replays the first refund; after an answer Stripe keeps
    and would replay (a 5xx), the next try takes a new key (Stripe never refunds a payment twice)."""
    replayed = sum(
        1
        for e in db.session.scalars(
            select(TimelineEntry).where(TimelineEntry.registration_pk == reg.id, TimelineEntry.kind == "operator")
        )
        if isinstance(e.details, dict)
        and e.details.get("replayed")
        and e.details.get("payment_intent") == payment_intent
    )
    return f"paygate-refund-{reg.id}-{payment_intent}" + (f"-{replayed}" if replayed else "")


def refund(reg: Registration, email: str) -> Result:
    """Refund the registration's payment in full. A registration's own payment takes the path a
    dashboard refund takes (paygate/licensing/refunds.py: state, licence and access follow); a subscription is
    cancelled too, so that the school is not billed again for a tool it no longer has."""
    cause = cause_of(email)
    if reg.state == State.REFUNDED:
        db.session.rollback()
        return Result("info", f"Already refunded ({reg.refund_id}).")
    payment_intent = refundable_payment(reg)
    origin = joined_from(reg)
    if origin is not None and payment_intent is None:
        db.session.rollback()
        return Result(
            "error",
            f"Nothing to refund here: registration {reg.id} joined the licence of registration {origin} by its "
            f"key and paid nothing; refund the licence's payment on registration {origin}.",
        )
    if reg.state not in REFUNDABLE or payment_intent is None:
        db.session.rollback()
        return Result(
            "error", f"Nothing to refund: the registration is {reg.state} and has no payment that can be refunded here."
        )
    key = refund_key(reg, payment_intent)
    # Hold the completion first: a worker must not register the platform while money goes back.
    if reg.state == State.PAID and not transition(
        reg,
        State.NEEDS_ATTENTION,
        cause=cause,
        expect={State.PAID},
        message="Refund started: the completion is held.",
        attention="refunding",
    ):
        db.session.commit()
        return Result("info", f"The registration changed to {reg.state} meanwhile; look again before refunding.")
    metadata = {"registration_pk": str(reg.id), "registration_id": reg.registration_id}
    row = refunds.find_payment(payment_intent)
    licence = row.licence if row is not None else None
    subscription_id = licence.subscription_id if licence is not None else None
    db.session.commit()  # nothing is held while Stripe is asked (values read before the commit)
    try:
        if row is not None:
            level, message = refunds.refund_licence_payment(reg, row, key, metadata, cause)
        else:
            level, message = _refund_unaccepted(reg, payment_intent, key, metadata, cause)
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        record(
            reg,
            "operator",
            cause=cause,
            message=f"Refund failed at Stripe: {exc} Nothing was changed.",
            details={"payment_intent": payment_intent, "idempotency_key": key, "replayed": exc.replayed},
        )
        db.session.commit()
        return Result("error", f"{exc} Nothing was changed; try again, or refund in the Stripe dashboard.")
    if subscription_id and level != "error":
        message += " " + _cancel_subscription(reg, subscription_id, cause)
    reconciler.sync(reg.id, cause)  # a refund in full ends the access: LTIaaS is told now
    return Result(level, message)


def _cancel_subscription(reg: Registration, subscription_id: str, cause: str) -> str:
    key = f"paygate-cancel-{reg.id}-{subscription_id}"
    db.session.commit()  # nothing is held while Stripe is asked
    try:
        sub = payments.gateway().cancel_subscription(subscription_id, key)
    except payments.PaymentProviderError as exc:
        record(
            reg,
            "operator",
            cause=cause,
            message=f"The subscription {subscription_id} could not be "
            f"cancelled: {exc} Cancel it in the Stripe dashboard.",
            details={"subscription": subscription_id},
        )
        db.session.commit()
        return f"The subscription {subscription_id} could not be cancelled: cancel it in the Stripe dashboard."
    record(
        reg,
        "operator",
        cause=cause,
        message=f"Subscription {subscription_id} cancelled ({sub.status}).",
        details={"subscription": subscription_id, "status": sub.status},
    )
    db.session.commit()
    return f"Subscription {subscription_id} cancelled."


def _refund_unaccepted(reg: Registration, payment_intent: str, key: str, metadata: dict, cause: str) -> tuple[str, str]:
    """A payment that was never accepted as this registration's (a mismatch): it has no licence."""
    try:
        refunded = payments.gateway().refund(payment_intent, key, metadata=metadata)
    except payments.AlreadyRefunded:
        refunded = None
    details = {"payment_intent": payment_intent, "idempotency_key": key}
    if refunded is not None:
        details.update(
            refund_id=refunded.id, status=refunded.status, amount=refunded.amount, currency=refunded.currency
        )
        if refunded.status in ("failed", "canceled"):
            record(
                reg,
                "operator",
                cause=cause,
                details=details,
                message=f"Stripe refused the refund {refunded.id} ({refunded.status}). Nothing was changed.",
            )
            db.session.commit()
            return "error", f"Stripe refused the refund ({refunded.status}). Nothing was changed."
    refund_id = refunded.id if refunded is not None else None
    amount = format_amount(refunded.amount, refunded.currency) if refunded is not None else "the payment"
    db.session.refresh(reg)
    # A second payment still waiting for its own refund keeps the registration in view.
    attention = "duplicate_payment" if "duplicate_payment" in reasons(reg) else None
    if transition(
        reg,
        State.REFUNDED,
        cause=cause,
        expect=REFUNDABLE,
        details=details,
        message=f"Refunded {amount} ({refund_id or 'already refunded at Stripe'}).",
        refund_id=refund_id,
        refunded_at=utcnow(),
        attention=attention,
        next_attempt_at=None,
    ):
        db.session.commit()
        return "ok", f"Refunded {amount} ({refund_id or 'at Stripe'})."
    record(
        reg,
        "operator",
        cause=cause,
        details=details,
        attention="refund_unrecorded",
        message=f"Stripe refunded {amount} ({refund_id}) but the registration moved to {reg.state} "
        "meanwhile; refund again to record it here (Stripe will not refund twice).",
    )
    db.session.commit()
    return "error", (
        f"Stripe refunded {amount} ({refund_id}), but the registration changed to {reg.state} "
        "meanwhile. Refund again to record it; no second refund is made."
    )
