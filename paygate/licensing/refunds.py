"""Refunds and disputes, wherever they happen: here, in the Stripe dashboard, or at the payer's bank.

Every path ends in `apply_payment`: the payment as Stripe has it now (its charge's amount refunded,
its newest refund, its dispute) is written on the licence's payment row, the registration's state
follows (refunded in full → refunded; a refund that failed afterwards → back, and flagged), and the
access is decided again. A partial refund is recorded and changes no access. A dispute opened flags
the registration with its evidence deadline; lost → inactive; won → the flag clears.
"""

import logging

from sqlalchemy import select, update

from paygate.core import notifications
from paygate.core.db import db, utcnow
from paygate.core.models import Licence, LicencePayment, Registration, State
from paygate.core.money import format_amount
from paygate.core.registrations import record, transition
from paygate.gateways import payments
from paygate.licensing import access, licences

log = logging.getLogger(__name__)

OPEN_DISPUTE = {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
# What a refund answers; kept when another reason (a second payment) still needs an operator.
_REFUND_ATTENTION = {"refunding", "refund_unrecorded", "refund_failed"}


def _reasons(reg: Registration) -> list[str]:
    return [r for r in (reg.attention or "").split(",") if r]


def without(reg: Registration, *reasons: str) -> str | None:
    return ",".join(r for r in _reasons(reg) if r not in reasons) or None


def find_payment(payment_intent: str | None) -> LicencePayment | None:
    if not payment_intent:
        return None
    return db.session.scalars(select(LicencePayment).where(LicencePayment.payment_intent_id == payment_intent)).first()


def apply_payment(
    row: LicencePayment,
    view: payments.PaymentView,
    cause: str,
    refund: payments.RefundView | None = None,
    dispute: payments.DisputeView | None = None,
) -> Registration:
    """Write what Stripe says of a payment now; the registration's state and access follow. Flushes."""
    reg = db.session.get(Registration, row.registration_pk)
    was_refunded = row.fully_refunded
    before = (row.amount_refunded, row.refund_status, row.dispute_status)
    row.charge_id = view.charge or row.charge_id
    row.amount = row.amount if view.amount is None else view.amount
    row.amount_refunded = view.amount_refunded
    if refund is not None and (row.refund_id in (None, refund.id) or refund.status in ("pending", "succeeded")):
        row.refund_id, row.refund_status = refund.id, refund.status
    if dispute is not None:
        row.dispute_id, row.dispute_status, row.dispute_due_by = dispute.id, dispute.status, dispute.due_by
    row.updated_at = utcnow()
    db.session.flush()
    amount = format_amount(row.amount_refunded, row.currency)
    if (row.amount_refunded, row.refund_status) != before[:2]:
        kind = "in full" if row.fully_refunded else ("in part" if row.amount_refunded else "no longer")
        record(
            reg,
            "licence",
            cause=cause,
            message=f"Payment {row.payment_intent_id} refunded {kind}"
            + (
                f" ({amount}, refund {row.refund_id} {row.refund_status})."
                if row.amount_refunded
                else f" (refund {row.refund_id} {row.refund_status})."
            ),
            details={
                "payment_intent": row.payment_intent_id,
                "amount_refunded": row.amount_refunded,
                "refund_id": row.refund_id,
                "refund_status": row.refund_status,
            },
        )
    if dispute is not None and row.dispute_status != before[2]:
        _dispute_changed(reg, row, cause)
    if row.fully_refunded and reg.state != State.REFUNDED.value:  # also after an answer that was lost
        _to_refunded(reg, row, cause)
    elif row.fully_refunded and row.refund_id and reg.refund_id != row.refund_id:
        # charge.refunded may come before refund.created: the refund's id is learnt afterwards.
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id)
            .values(refund_id=row.refund_id)
            .execution_options(synchronize_session=False)
        )
        db.session.refresh(reg)
    elif was_refunded and not row.fully_refunded:
        _refund_undone(reg, row, cause)
    licence = db.session.get(Licence, row.licence_pk)
    licence.dispute_open = any(p.dispute_status in OPEN_DISPUTE for p in licence.payments)
    access.refresh(reg, cause)
    return reg


def _to_refunded(reg: Registration, row: LicencePayment, cause: str) -> None:
    """The payment that paid is refunded in full: the registration shows refunded."""
    licence = db.session.get(Licence, row.licence_pk)
    if access.current_payment(licence) is not row:
        return  # an earlier period's payment: recorded above, the current one still pays
    pending = row.refund_status not in (None, "succeeded")
    message = f"Refunded {format_amount(row.amount_refunded, row.currency)} ({row.refund_id or 'at Stripe'}" + (
        f", {row.refund_status})." if pending else ")."
    )
    transition(
        reg,
        State.REFUNDED,
        cause=cause,
        expect={State.PAID, State.NEEDS_ATTENTION, State.COMPLETED},
        message=message,
        details={"refund_id": row.refund_id, "refund_status": row.refund_status},
        refund_id=row.refund_id,
        refunded_at=utcnow(),
        next_attempt_at=None,
        attention=without(reg, *_REFUND_ATTENTION),
    )


def settle_after_completion(reg: Registration, cause: str) -> None:
    """A refund recorded while the registration could not move (LTIaaS was completing it): it shows
    refunded now, whatever the completion's outcome. Flushes."""
    licence = db.session.get(Licence, reg.licence_pk) if reg.licence_pk is not None else None
    current = access.current_payment(licence) if licence is not None else None
    if current is not None and current.fully_refunded:
        _to_refunded(reg, current, cause)


def _refund_undone(reg: Registration, row: LicencePayment, cause: str) -> None:
    """A refund failed after it was recorded: the money stayed with the vendor, so the registration
    is what it was before, flagged for an operator (the school may expect its money back)."""
    back = State.COMPLETED if reg.platform_id else State.NEEDS_ATTENTION
    message = (
        f"Refund {row.refund_id} {row.refund_status or 'failed'}: the payment was not refunded after all; "
        "the refund is undone and the access restored."
    )
    if not transition(
        reg,
        back,
        cause=cause,
        expect={State.REFUNDED},
        message=message,
        details={"refund_id": row.refund_id, "refund_status": row.refund_status},
        refund_id=None,
        refunded_at=None,
        attention="refund_failed",
    ):
        record(
            reg,
            "licence",
            cause=cause,
            message=message,
            attention="refund_failed",
            details={"refund_id": row.refund_id},
        )


def _dispute_changed(reg: Registration, row: LicencePayment, cause: str) -> None:
    status, due = row.dispute_status, row.dispute_due_by
    details = {"dispute_id": row.dispute_id, "status": status, "due_by": due.isoformat() if due else None}
    if status in OPEN_DISPUTE:
        record(
            reg,
            "licence",
            cause=cause,
            details=details,
            attention="disputed",
            message=f"Dispute {row.dispute_id} opened on {row.payment_intent_id} ({status})"
            + (f"; evidence due by {due:%Y-%m-%d %H:%M} UTC." if due else "."),
        )
        notifications.dispute_opened(reg, row.dispute_id, status, due)
    elif status == "lost":
        record(
            reg,
            "licence",
            cause=cause,
            details=details,
            attention=without(reg, "disputed"),
            message=f"Dispute {row.dispute_id} lost: the payment went back to the payer.",
        )
    else:  # won, warning_closed, prevented: the money stays
        record(
            reg,
            "licence",
            cause=cause,
            details=details,
            attention=without(reg, "disputed"),
            message=f"Dispute {row.dispute_id} closed: {status}.",
        )


# Webhook routes: find ours from the verified payload's ids, then ask Stripe; apply only what is that payment's.


def _of_payment(found, view: payments.PaymentView) -> bool:
    """Whether a refund or dispute read from Stripe is of this payment (its PaymentIntent, or its charge)."""
    if found.payment_intent is not None:
        return found.payment_intent == view.payment_intent
    return found.charge is not None and found.charge == view.charge


def _belongs(row: LicencePayment, fetched) -> bool:
    view, refund, dispute = fetched
    return (
        view.payment_intent == row.payment_intent_id
        and (refund is None or _of_payment(refund, view))
        and (dispute is None or _of_payment(dispute, view))
    )


def _apply_fresh(row_pk: int, licence_pk: int, fetch, cause: str):
    """Read from Stripe, then apply to the payment row under its licence's lock (paygate/licensing/licences.py),
    if what was read is that payment's; (None, False) when it is not."""

    def apply(_licence, fetched):
        view, refund, dispute = fetched
        row = db.session.get(LicencePayment, row_pk)
        db.session.refresh(row)
        before = (row.amount_refunded, row.refund_status, row.dispute_status)
        reg = apply_payment(row, view, cause, refund=refund, dispute=dispute)
        return reg, (row.amount_refunded, row.refund_status, row.dispute_status) != before

    def belongs(_licence, fetched):
        return fetched is not None and _belongs(db.session.get(LicencePayment, row_pk), fetched)

    reg = db.session.get(Registration, db.session.get(LicencePayment, row_pk).registration_pk)
    return licences.apply_fresh(licence_pk, fetch, apply, (reg, False), belongs, (None, False))


def _route(payment_intent: str | None, cause: str, fetch, foreign: str = "foreign payment"):
    """The event's payment, if it is one of ours; `fetch(row)` reads it (and its refund or dispute) from Stripe."""
    row = find_payment(payment_intent)
    if row is None:
        return None, "foreign payment"
    stored = (row.refund_id, row.dispute_id)
    reg, changed = _apply_fresh(row.id, row.licence_pk, lambda: fetch(stored), cause)
    if reg is None:
        return None, foreign
    return reg, "recorded" if changed else "no change"


def _payment_and_refund(payment_intent: str, refund_id: str | None = None):
    """The payment as Stripe has it now, and its newest refund (current API versions leave a charge's
    refunds out of its events, so they are listed)."""
    gateway = payments.gateway()
    view = gateway.retrieve_payment(payment_intent)
    if payments.valid_id(refund_id, "re") or payments.valid_id(refund_id, "pyr"):
        return view, gateway.retrieve_refund(refund_id)
    return view, gateway.latest_refund(payment_intent) if view.amount_refunded else None


def on_charge_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """charge.refunded: the charge's refunds as Stripe has them now."""
    payment_intent = payments.id_of(obj.get("payment_intent"))
    return _route(
        payment_intent if payments.valid_id(payment_intent, "pi") else None,
        cause,
        lambda _stored: (*_payment_and_refund(payment_intent), None),
    )


def on_refund_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """refund.created / refund.updated / refund.failed: the refund and its payment now."""
    payment_intent = payments.id_of(obj.get("payment_intent"))
    if not (payments.valid_id(obj.get("id"), "re") or payments.valid_id(obj.get("id"), "pyr")):
        return None, "not a refund"

    def fetch(stored):
        gateway = payments.gateway()
        view = gateway.retrieve_payment(payment_intent)
        refund = licences.read_unless_missing(gateway.retrieve_refund, obj["id"], stored)
        return (view, refund, None) if refund is not None else None

    return _route(payment_intent if payments.valid_id(payment_intent, "pi") else None, cause, fetch, "foreign refund")


def on_dispute_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """charge.dispute.*: the dispute and its payment now."""
    payment_intent = payments.id_of(obj.get("payment_intent"))
    if not payments.valid_id(obj.get("id"), "du") and not payments.valid_id(obj.get("id"), "dp"):
        return None, "not a dispute"

    def fetch(stored):
        gateway = payments.gateway()
        view = gateway.retrieve_payment(payment_intent)
        dispute = licences.read_unless_missing(gateway.retrieve_dispute, obj["id"], stored)
        return (view, None, dispute) if dispute is not None else None

    return _route(payment_intent if payments.valid_id(payment_intent, "pi") else None, cause, fetch, "foreign dispute")


def recheck(row_pk: int, cause: str) -> bool:
    """Read a recent payment from Stripe again (reconciliation): refunds and disputes; commits."""
    row = db.session.get(LicencePayment, row_pk)
    payment_intent, known_dispute, licence_pk = row.payment_intent_id, row.dispute_id, row.licence_pk

    def fetch():
        view, refund = _payment_and_refund(payment_intent)
        dispute = None
        if view.disputed or known_dispute:
            disputes = payments.gateway().disputes_of(payment_intent)
            dispute = disputes[0] if disputes else None
        return view, refund, dispute

    _, changed = _apply_fresh(row_pk, licence_pk, fetch, cause)
    db.session.commit()
    return changed


# The operator's refund: the same path as a dashboard refund, after asking Stripe to refund.


def refund_licence_payment(
    reg: Registration,
    row: LicencePayment,
    key: str,
    metadata: dict,
    cause: str,
    amount: int | None = None,
    reason: str | None = None,
) -> tuple[str, str]:
    """Refund `amount` of the payment (all that is left by default) at Stripe and record it as a dashboard refund
    would be; commits. A partial refund leaves the access as it is: the rest of the money stands.

    Returns (level, sentence). "Already refunded" at Stripe is read and recorded, not an error.
    Raises payments.PaymentProviderError only when Stripe refunded nothing.
    """
    row_pk, payment_intent, row_licence = row.id, row.payment_intent_id, row.licence_pk
    if row.refund_status in ("failed", "canceled") and row.refund_id:
        key += f"-after-{row.refund_id}"  # that refund failed: a new one, not its replay
    db.session.commit()
    gateway = payments.gateway()
    refund = None
    try:
        refund = gateway.refund(payment_intent, key, metadata=metadata, amount=amount, reason=reason)
    except payments.AlreadyRefunded:
        log.info("refund of %s: Stripe says it was refunded already; reading it", payment_intent)
    try:
        reg, _ = _apply_fresh(
            row_pk,
            row_licence,
            lambda: (*_payment_and_refund(payment_intent, refund.id if refund else None), None),
            cause,
        )
    except payments.PaymentProviderError:
        db.session.rollback()
        if refund is None:
            raise
        # The money went back; the record follows from the webhook or the next reconciliation.
        record(
            reg,
            "operator",
            cause=cause,
            details={"refund_id": refund.id, "status": refund.status},
            message=f"Stripe refunded ({refund.id}, {refund.status}); it could not be read back yet, so "
            "the record follows from Stripe's webhook or the next reconciliation.",
        )
        db.session.commit()
        return "ok", f"Refunded at Stripe ({refund.id}); the record here follows in a moment."
    row = db.session.get(LicencePayment, row_pk)
    refunded = refund.amount if refund is not None and refund.amount else row.amount_refunded
    status, refund_id, full = row.refund_status, row.refund_id, row.fully_refunded
    amount = format_amount(refunded, row.currency)
    access_now = "the access is removed now" if full else "the access stays: the rest of the payment stands"
    db.session.commit()
    if refund is None:
        return "info", f"Already refunded at Stripe ({amount}); recorded here."
    if status in ("failed", "canceled"):
        return "error", f"Stripe did not refund: the refund {refund_id} is {status}."
    if status in ("pending", "requires_action"):
        return (
            "ok",
            f"Refund of {amount} {status.replace('_', ' ')} at Stripe ({refund_id}); {access_now}.",
        )
    return "ok", f"Refunded {amount} ({refund_id})." + ("" if full else f" {access_now.capitalize()}.")
