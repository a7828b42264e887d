"""An operator's refund: the payment a registration's refund returns, and the refund itself, in full or in part.

A refund in full is asked of Stripe once per payment (its idempotency key) and cancels a subscription with it; a
partial one (an amount up to what is left, for one of Stripe's reasons) once per submitted form (its form_id is
its key) and keeps the access: the rest of the money still stands (paygate/licensing/refunds.py). Each is
recorded in the timeline with the operator's reason and note.

Pattern as for every operator action (paygate/web/operator/actions.py): check, commit, call, record, commit.
"""

import logging
from dataclasses import dataclass

from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, LicencePayment, Registration, State, TimelineEntry
from paygate.core.money import format_amount, to_minor
from paygate.core.registrations import record, transition
from paygate.core.text import clean
from paygate.gateways import payments
from paygate.licensing import access, reconciler, refunds
from paygate.web.operator.actions import NOTE_MAX, Result, already_done, cause_of, reasons
from paygate.web.operator.standing import joined_from

log = logging.getLogger(__name__)

REFUNDABLE = {State.PAID, State.NEEDS_ATTENTION, State.COMPLETED}
# Stripe's reasons for a refund, the first the form's default.
REASONS = ("requested_by_customer", "duplicate", "fraudulent")


@dataclass(frozen=True)
class Ask:
    """What the operator's refund form asks: an amount (None: all that is left), a reason, a note, its form."""

    amount: str | None = None  # as typed, in major units
    reason: str | None = None
    note: str = ""
    form_id: str | None = None


@dataclass(frozen=True)
class Left:
    """What can still be refunded of a licence's payment (minor units)."""

    amount: int
    currency: str
    paid: int


def left_to_refund(reg: Registration) -> Left | None:
    """What is left to refund of the registration's payment; None where only a refund in full is possible (a
    payment never accepted as the registration's) or nothing can be refunded."""
    payment_intent = refundable_payment(reg) if reg.state in REFUNDABLE else None
    row = refunds.find_payment(payment_intent)
    if row is None or row.amount is None or not row.currency:
        return None
    return Left(row.amount - (row.amount_refunded or 0), row.currency, row.amount)


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


def _problem(ask: Ask, left: Left | None) -> tuple[str | None, int | None]:
    """One sentence if the form asks for what cannot be done; else None and the amount asked (None: in full)."""
    if ask.reason not in (None, *REASONS):
        return "Choose a reason Stripe knows: requested by customer, duplicate or fraudulent.", None
    if len(ask.note) > NOTE_MAX:
        return f"The note is longer than {NOTE_MAX} characters.", None
    if not (ask.amount or "").strip():
        return None, None
    if left is None:
        return "Only a refund in full is possible for this payment.", None
    try:
        amount = to_minor(ask.amount, left.currency)
    except ValueError as exc:
        return str(exc), None
    if not 1 <= amount <= left.amount:
        most = format_amount(left.amount, left.currency)
        return f"The amount must be more than nothing and at most what is left to refund, {most}.", None
    return None, amount


def refund(reg: Registration, email: str, ask: Ask | None = None) -> Result:
    """Refund the registration's payment, in full or (an amount in `ask`) in part. A registration's own payment
    takes the path a dashboard refund takes (paygate/licensing/refunds.py: state, licence and access follow); a
    refund in full cancels a subscription too, so that the school is not billed again for a tool it no longer has."""
    ask = ask or Ask()
    ask = Ask(ask.amount, ask.reason or None, clean(ask.note, NOTE_MAX * 2) or "", ask.form_id)
    cause = cause_of(email)
    left = left_to_refund(reg)
    problem, amount = _problem(ask, left)
    if problem:
        db.session.rollback()
        return Result("error", f"{problem} Nothing was refunded.")
    if amount is not None and left is not None and amount == left.amount:
        amount = None  # all that is left: a refund in full, with its key per payment
    if amount is not None and ask.form_id is None:
        db.session.rollback()
        return Result("error", "Reload the page and try again.")
    if ask.form_id is not None and already_done(reg, ask.form_id):
        db.session.rollback()
        return Result("info", "This refund form was sent already: one refund per form. Reload the page for another.")
    if amount is not None:
        return _refund_part(reg, amount, ask, cause)
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
    _asked(reg, ask, cause, "in full", payment_intent)
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
            level, message = refunds.refund_licence_payment(reg, row, key, metadata, cause, reason=ask.reason)
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


def _asked(reg: Registration, ask: Ask, cause: str, how: str, payment_intent: str) -> None:
    """The operator's reason and note in the timeline, before Stripe is asked; it also marks the form as sent."""
    if ask.form_id is None and not ask.note and not ask.reason:
        return
    record(
        reg,
        "operator",
        cause=cause,
        message=f"Refund {how} asked ({(ask.reason or 'no reason given').replace('_', ' ')})"
        + (f": {ask.note}" if ask.note else "."),
        details={"form": ask.form_id, "reason": ask.reason, "note": ask.note, "payment_intent": payment_intent},
    )


def _refund_part(reg: Registration, amount: int, ask: Ask, cause: str) -> Result:
    """A partial refund: its key is its form's, the completion is not held and the access stays (money stands)."""
    payment_intent = refundable_payment(reg)
    row = refunds.find_payment(payment_intent)
    row_pk = row.id
    key = f"paygate-refund-{reg.id}-{payment_intent}-form-{ask.form_id}"
    _asked(reg, ask, cause, f"of {format_amount(amount, row.currency)}", payment_intent)
    metadata = {"registration_pk": str(reg.id), "registration_id": reg.registration_id}
    db.session.commit()  # the form is spent before Stripe is asked: a second submission refunds nothing
    try:
        level, message = refunds.refund_licence_payment(
            reg, row, key, metadata, cause, amount=amount, reason=ask.reason
        )
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        # Without Stripe's answer the refund may have been made: this form's key is spent, and a new form would
        # refund again. The payment is read again, so that what is left to refund counts it if it was.
        uncertain = not exc.replayed
        record(
            reg,
            "operator",
            cause=cause,
            message=f"Refund failed at Stripe: {exc} "
            + ("Stripe did not answer: the payment is read again." if uncertain else "Nothing was changed."),
            details={"payment_intent": payment_intent, "idempotency_key": key, "replayed": exc.replayed},
        )
        db.session.commit()
        if not uncertain:
            return Result("error", f"{exc} Nothing was changed; reload the page to try again.")
        try:
            refunds.recheck(row_pk, cause)
        except payments.PaymentProviderError:
            db.session.rollback()
        return Result(
            "error",
            f"{exc} Stripe did not answer, so the refund may have been made: check the payment's refunds (on this "
            "page once Stripe tells us, or in the Stripe dashboard) before refunding again.",
        )
    if level != "error":
        message += _cancel_when_whole(reg, row_pk, cause)
    reconciler.sync(reg.id, cause)  # the refunds may now add up to the whole payment
    return Result(level, message)


def _cancel_when_whole(reg: Registration, row_pk: int, cause: str) -> str:
    """Parts that add up to the whole payment end the subscription too, as a refund in full does: a school refunded
    everything is never billed again."""
    row = db.session.get(LicencePayment, row_pk)
    subscription_id = row.licence.subscription_id if row is not None and row.licence is not None else None
    if subscription_id and row.amount and (row.amount_refunded or 0) >= row.amount:
        return " " + _cancel_subscription(reg, subscription_id, cause)
    return ""


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
