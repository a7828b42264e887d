"""Refunds and disputes, wherever they happen: here, in the Stripe dashboard, or at the payer's bank.

Every path ends in `apply_payment`: the payment as Stripe has it now (its charge's amount refunded,
its newest refund, its dispute) is written on the licence's payment row, the registration's state
follows (refunded in full → refunded; a refund that failed afterwards → back, and flagged), and the
access is decided again. A partial refund is recorded and changes no access. A dispute opened flags
the registration with its evidence deadline; lost → inactive; won → the flag clears.
"""
import logging

from sqlalchemy import select, update

from . import access, licences, payments
from .db import db, utcnow
from .models import Licence, LicencePayment, Registration, State
from .money import format_amount
from .registrations import record, transition

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
    return db.session.scalars(select(LicencePayment)
                              .where(LicencePayment.payment_intent_id == payment_intent)).first()


def apply_payment(row: LicencePayment, view: payments.PaymentView, cause: str,
                  refund: payments.RefundView | None = None,
                  dispute: payments.DisputeView | None = None) -> Registration:
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
        record(reg, "licence", cause=cause, message=f"Payment {row.payment_intent_id} refunded {kind}"
               + (f" ({amount}, refund {row.refund_id} {row.refund_status})." if row.amount_refunded else
                  f" (refund {row.refund_id} {row.refund_status})."),
               details={"payment_intent": row.payment_intent_id, "amount_refunded": row.amount_refunded,
                        "refund_id": row.refund_id, "refund_status": row.refund_status})
    if dispute is not None and row.dispute_status != before[2]:
        _dispute_changed(reg, row, cause)
    if row.fully_refunded and reg.state != State.REFUNDED.value:  # also after an answer that was lost
        _to_refunded(reg, row, cause)
    elif row.fully_refunded and row.refund_id and reg.refund_id != row.refund_id:
        # charge.refunded may come before refund.created: the refund's id is learnt afterwards.
        db.session.execute(update(Registration).where(Registration.id == reg.id).values(refund_id=row.refund_id)
                           .execution_options(synchronize_session=False))
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
    message = f"Refunded {format_amount(row.amount_refunded, row.currency)} ({row.refund_id or 'at Stripe'}" \
              + (f", {row.refund_status})." if pending else ").")
    transition(reg, State.REFUNDED, cause=cause, expect={State.PAID, State.NEEDS_ATTENTION, State.COMPLETED},
               message=message, details={"refund_id": row.refund_id, "refund_status": row.refund_status},
               refund_id=row.refund_id, refunded_at=utcnow(), next_attempt_at=None,
               attention=without(reg, *_REFUND_ATTENTION))


def settle_after_completion(reg: Registration, cause: str) -> None:
    """A refund recorded while LTIaaS was completing: the completed registration shows it now."""
    licence = db.session.scalars(select(Licence).where(Licence.registration_pk == reg.id)).first()
    current = access.current_payment(licence) if licence is not None else None
    if current is not None and current.fully_refunded:
        _to_refunded(reg, current, cause)


def _refund_undone(reg: Registration, row: LicencePayment, cause: str) -> None:
    """A refund failed after it was recorded: the money stayed with the vendor, so the registration
    is what it was before, flagged for an operator (the school may expect its money back)."""
    back = State.COMPLETED if reg.platform_id else State.NEEDS_ATTENTION
    message = (f"Refund {row.refund_id} {row.refund_status or 'failed'}: the payment was not refunded after all; "
               "the refund is undone and the access restored.")
    if not transition(reg, back, cause=cause, expect={State.REFUNDED}, message=message,
                      details={"refund_id": row.refund_id, "refund_status": row.refund_status},
                      refund_id=None, refunded_at=None, attention="refund_failed"):
        record(reg, "licence", cause=cause, message=message, attention="refund_failed",
               details={"refund_id": row.refund_id})


def _dispute_changed(reg: Registration, row: LicencePayment, cause: str) -> None:
    status, due = row.dispute_status, row.dispute_due_by
    details = {"dispute_id": row.dispute_id, "status": status, "due_by": due.isoformat() if due else None}
    if status in OPEN_DISPUTE:
        record(reg, "licence", cause=cause, details=details, attention="disputed",
               message=f"Dispute {row.dispute_id} opened on {row.payment_intent_id} ({status})"
                       + (f"; evidence due by {due:%Y-%m-%d %H:%M} UTC." if due else "."))
    elif status == "lost":
        record(reg, "licence", cause=cause, details=details, attention=without(reg, "disputed"),
               message=f"Dispute {row.dispute_id} lost: the payment went back to the payer.")
    else:  # won, warning_closed, prevented: the money stays
        record(reg, "licence", cause=cause, details=details, attention=without(reg, "disputed"),
               message=f"Dispute {row.dispute_id} closed: {status}.")


# Webhook routes: find ours from the verified payload's ids, then ask Stripe.

def _route(payment_intent: str | None, cause: str, fetch) -> tuple[Registration | None, str]:
    row = find_payment(payment_intent)
    if row is None:
        return None, "foreign payment"
    row_pk, licence_pk = row.id, row.licence_pk
    db.session.commit()  # nothing is held while Stripe is asked
    view, refund, dispute = fetch()
    licences.locked(licence_pk)  # every writer of a licence takes its lock first
    row = db.session.get(LicencePayment, row_pk)
    db.session.refresh(row)
    before = (row.amount_refunded, row.refund_status, row.dispute_status)
    reg = apply_payment(row, view, cause, refund=refund, dispute=dispute)
    after = (row.amount_refunded, row.refund_status, row.dispute_status)
    return reg, "recorded" if after != before else "no change"


def on_charge_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """charge.refunded: the charge's refunds as Stripe has them now."""
    payment_intent = payments._id_of(obj.get("payment_intent"))
    refunds = ((obj.get("refunds") or {}).get("data") or [])
    refund_id = refunds[0].get("id") if refunds and isinstance(refunds[0], dict) else None

    def fetch():
        gateway = payments.gateway()
        refund = gateway.retrieve_refund(refund_id) if payments.valid_id(refund_id, "re") else None
        return gateway.retrieve_payment(payment_intent), refund, None
    return _route(payment_intent if payments.valid_id(payment_intent, "pi") else None, cause, fetch)


def on_refund_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """refund.created / refund.updated / refund.failed: the refund and its payment now."""
    payment_intent = payments._id_of(obj.get("payment_intent"))
    if not (payments.valid_id(obj.get("id"), "re") or payments.valid_id(obj.get("id"), "pyr")):
        return None, "not a refund"

    def fetch():
        gateway = payments.gateway()
        refund = gateway.retrieve_refund(obj["id"])
        return gateway.retrieve_payment(refund.payment_intent or payment_intent), refund, None
    return _route(payment_intent if payments.valid_id(payment_intent, "pi") else None, cause, fetch)


def on_dispute_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """charge.dispute.*: the dispute and its payment now."""
    payment_intent = payments._id_of(obj.get("payment_intent"))
    if not payments.valid_id(obj.get("id"), "du") and not payments.valid_id(obj.get("id"), "dp"):
        return None, "not a dispute"

    def fetch():
        gateway = payments.gateway()
        dispute = gateway.retrieve_dispute(obj["id"])
        return gateway.retrieve_payment(dispute.payment_intent or payment_intent), None, dispute
    return _route(payment_intent if payments.valid_id(payment_intent, "pi") else None, cause, fetch)


def recheck(row_pk: int, cause: str) -> bool:
    """Read a recent payment from Stripe again (reconciliation): refunds and disputes; commits."""
    row = db.session.get(LicencePayment, row_pk)
    payment_intent, known_dispute, licence_pk = row.payment_intent_id, row.dispute_id, row.licence_pk
    before = (row.amount_refunded, row.refund_status, row.dispute_status)
    db.session.commit()
    gateway = payments.gateway()
    view = gateway.retrieve_payment(payment_intent)
    dispute = None
    if view.disputed or known_dispute:
        disputes = gateway.disputes_of(payment_intent)
        dispute = disputes[0] if disputes else None
    licences.locked(licence_pk)
    row = db.session.get(LicencePayment, row_pk)
    db.session.refresh(row)
    apply_payment(row, view, cause, dispute=dispute)
    changed = (row.amount_refunded, row.refund_status, row.dispute_status) != before
    db.session.commit()
    return changed


# The operator's refund: the same path as a dashboard refund, after asking Stripe to refund.

def refund_licence_payment(reg: Registration, row: LicencePayment, key: str, metadata: dict,
                           cause: str) -> tuple[str, str]:
    """Refund the payment at Stripe and record it as a dashboard refund would be; commits.

    Returns (level, sentence). "Already refunded" at Stripe is read and recorded, not an error.
    """
    row_pk, payment_intent, row_licence = row.id, row.payment_intent_id, row.licence_pk
    db.session.commit()
    gateway = payments.gateway()
    refund = None
    try:
        refund = gateway.refund(payment_intent, key, metadata=metadata)
    except payments.AlreadyRefunded:
        log.info("refund of %s: Stripe says it was refunded already; reading it", payment_intent)
    view = gateway.retrieve_payment(payment_intent)
    licences.locked(row_licence)
    row = db.session.get(LicencePayment, row_pk)
    db.session.refresh(row)
    reg = apply_payment(row, view, cause, refund=refund)
    db.session.commit()
    amount = format_amount(row.amount_refunded, row.currency)
    if refund is None:
        return "info", f"Already refunded at Stripe ({amount}); recorded here."
    if refund.status in ("failed", "canceled"):
        return "error", f"Stripe did not refund: the refund {refund.id} is {refund.status}."
    if refund.status == "pending":
        return "ok", f"Refund of {amount} pending at Stripe ({refund.id}); the access is removed now."
    return "ok", f"Refunded {amount} ({refund.id})."
