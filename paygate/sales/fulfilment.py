"""Fulfilment: from "Stripe says paid" to "LTIaaS says completed", safe to run many times at once.

`fulfil_checkout` is the one entry for the webhook, the success return and reconciliation. It asks
Stripe, records the payment and commits (docs/architecture.md, invariant 1), then `complete` calls
LTIaaS once, from whichever caller wins the move into "completing" (invariant 2), outside any
transaction (invariant 3).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select

from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import CheckoutSession, Registration, State
from paygate.core.money import format_amount
from paygate.core.registrations import record, transition
from paygate.gateways import ltiaas, payments
from paygate.licensing import access, licences, platforms, reconciler, refunds
from paygate.sales import checkout, licence_checkout, licence_fulfilment

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=5)
# Reasons for attention that a successful completion answers (others, e.g. a second payment, stay).
_COMPLETION_ATTENTION = ("completion_uncertain", "completion_expired", "completion_refused", "completion_late")


@dataclass
class Outcome:
    registration: Registration | None
    paid: bool  # this session is a confirmed payment for its registration
    note: str
    # A session that pays a licence on its licence page: no completion, the reconciler tells LTIaaS instead.
    licence_pk: int | None = None


def _belongs(reg: Registration, view: payments.CheckoutView) -> list[str]:
    """What does not match between what was sold and what the session says. A session is checked against the
    choice it was opened for (its row: Price, seats, totals), else the registration's; the amount compared is
    the one before discounts and tax, and a discount is allowed only with PROMOTION_CODES."""
    problems = []
    if view.client_reference_id != reg.registration_id:
        problems.append("client_reference_id")
    if view.metadata.get("registration_pk") != str(reg.id):
        problems.append("metadata.registration_pk")
    row = _row(view.id)
    price_id = (row.price_id if row is not None else None) or reg.price_id
    quantity = (row.quantity if row is not None else None) or (reg.quantity if row is None else 1)
    # Checkout may charge in one of the Price's other currencies (currency_options, adaptive pricing).
    offered = (row.amounts if row is not None else None) or {
        reg.currency.lower(): reg.amount,
        **(reg.price_options or {}),
    }
    return problems + checkout.charged_as_offered(view, offered, price_id, quantity, reg.id)


def _row(session_id: str) -> CheckoutSession | None:
    return db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == session_id)).first()


def free_by_code(view: payments.CheckoutView) -> bool:
    """A session Stripe completed without a payment because a promotion code took the whole amount (offered only
    with PROMOTION_CODES); anything else without a payment is not something we sell."""
    return (
        view.status == "complete"
        and view.payment_status == "no_payment_required"
        and current_app.config["SETTINGS"].promotion_codes
        and view.amount_total == 0
        and (view.amount_discount or 0) > 0
    )


def registration_for(view: payments.CheckoutView) -> Registration | None:
    row = db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == view.id)).first()
    if row is not None:
        return db.session.get(Registration, row.registration_pk)
    pk = view.metadata.get("registration_pk")
    if isinstance(pk, str) and pk.isascii() and pk.isdigit() and len(pk) <= 9:  # a number our ids can be
        return db.session.get(Registration, int(pk))
    if view.client_reference_id:
        return db.session.scalars(
            select(Registration).where(Registration.registration_id == view.client_reference_id)
        ).first()
    return None


def _ours(reg: Registration, view: payments.CheckoutView) -> bool:
    """Opened here for `reg` (its row), or carrying the whole reference that `open_checkout` gives a session
    (a crash may come between Stripe making it and our row)."""
    row = db.session.scalars(
        select(CheckoutSession.registration_pk).where(CheckoutSession.session_id == view.id)
    ).first()
    if row is not None:
        return row == reg.id
    return view.client_reference_id == reg.registration_id and view.metadata.get("registration_pk") == str(reg.id)


def _remember_session(reg: Registration, view: payments.CheckoutView) -> CheckoutSession:
    now = utcnow()
    insert_ignoring_duplicates(
        CheckoutSession,
        {
            "session_id": view.id,
            "registration_pk": reg.id,
            "generation": reg.checkout_generation,
            "status": view.status or "open",
            "payment_status": view.payment_status or "unpaid",
            "url": view.url,
            "expires_at": view.expires_at,
            "created_at": now,
            "updated_at": now,
        },
    )
    row = db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == view.id)).one()
    # A late or stale view never takes a session backwards: complete and expired are final at Stripe.
    if row.status not in ("complete", "expired") or view.status == row.status:
        row.status = view.status or row.status
        row.payment_status = view.payment_status or row.payment_status
    row.amount_total, row.currency = view.amount_total, view.currency
    row.payment_intent_id = view.payment_intent or row.payment_intent_id
    row.payer_email = view.payer_email or row.payer_email
    db.session.flush()
    return row


def apply_checkout(view: payments.CheckoutView, cause: str) -> Outcome:
    """Record what Stripe says of a session, in the caller's transaction (flushes, no commit)."""
    if licence_checkout.pays_licence(view):  # opened on a licence page: it pays that licence, not a registration
        paid = (view.status == "complete" and view.payment_status == "paid") or free_by_code(view)
        applied = licence_fulfilment.apply(view, paid, cause)
        return Outcome(applied.registration, applied.paid, applied.note, applied.licence_pk)
    reg = registration_for(view)
    if reg is None:
        log.warning("Checkout Session %s belongs to no registration here (cause %s); ignored", view.id, cause)
        return Outcome(None, False, "unknown session")
    paid = (view.status == "complete" and view.payment_status == "paid") or free_by_code(view)
    if not paid and not _ours(reg, view):
        # Anyone can open a Payment Link with a registration's id as client_reference_id; unpaid, it must not
        # hold the registration "processing" or in attention. (Money received naming it is still shown below.)
        log.warning(
            "Checkout Session %s names a registration only in part and is not paid (cause %s); ignored", view.id, cause
        )
        return Outcome(None, False, "unknown session")
    _remember_session(reg, view)
    if not paid:
        if view.status == "complete" and view.payment_status == "unpaid":
            record(
                reg,
                "payment",
                cause=cause,
                message="Payment is processing (a delayed payment method).",
                details={"session": view.id},
            )
            return Outcome(reg, False, "processing")
        if view.status == "complete" and view.payment_status == "no_payment_required":
            # Nothing we sell is free: only a promotion code (PROMOTION_CODES) may take the whole amount.
            transition(
                reg,
                State.NEEDS_ATTENTION,
                cause=cause,
                expect={State.PENDING, State.ABANDONED},
                message="Checkout completed without a payment; not fulfilled.",
                details={"session": view.id},
                attention="no_payment",
            )
            return Outcome(reg, False, "no payment")
        return Outcome(reg, False, view.status or "unknown")

    problems = _belongs(reg, view)
    evidence = {
        "session": view.id,
        "payment_intent": view.payment_intent,
        "amount": view.amount_total,
        "currency": view.currency,
        "quantity": view.quantity,
        "discount": view.amount_discount or None,
        "tax": view.amount_tax,
    }
    if problems:
        evidence["mismatch"] = problems
        if not transition(
            reg,
            State.NEEDS_ATTENTION,
            cause=cause,
            expect={State.PENDING, State.ABANDONED},
            message=f"A payment that does not match what was sold ({', '.join(problems)}); not fulfilled.",
            details=evidence,
            attention="payment_mismatch",
        ):
            record(
                reg,
                "payment",
                cause=cause,
                details=evidence,
                attention=reg.attention or "payment_mismatch",
                message=f"A payment that does not match what was sold ({', '.join(problems)}).",
            )
        return Outcome(reg, False, "mismatch")

    if view.subscription:
        evidence["subscription"] = view.subscription
    licence = licences.of(reg)
    if (
        reg.payment_session_id is None
        and (licence is None or licence.kind != "invoice")  # never beside an invoice
        and transition(
            reg,
            State.PAID,
            cause=cause,
            where=(Registration.payment_session_id.is_(None),),
            expect={State.PENDING, State.ABANDONED, State.NEEDS_ATTENTION},
            message=f"Paid {format_amount(view.amount_total, view.currency)}"
            + (f" with promotion code {view.promotion_code}" if view.promotion_code else "")
            + (f" for subscription {view.subscription}." if view.subscription else "."),
            details=evidence,
            payment_session_id=view.id,
            payment_intent_id=view.payment_intent,
            amount_paid=view.amount_total,
            currency_paid=view.currency,
            payer_email=view.payer_email,
            payer_name=view.payer_name,
            paid_at=utcnow(),
            next_attempt_at=None,
        )
    ):
        licences.record_checkout(reg, view, cause)
        return Outcome(reg, True, "paid")
    if reg.payment_session_id == view.id:
        log.info("registration %s: repeated paid for %s (cause %s) ignored", reg.id, view.id, cause)
        return Outcome(reg, True, "already paid")
    # A second session paid for a registration someone already paid: keep the money visible.
    record(
        reg,
        "payment",
        cause=cause,
        details=evidence,
        attention="duplicate_payment",
        message="A second payment arrived for an already paid registration; refund it.",
    )
    return Outcome(reg, False, "duplicate payment")


def fulfil_checkout(session_id: str, cause: str, complete_now: bool = True) -> Outcome:
    """Ask Stripe about the session, record the payment, commit, then complete once (or leave that to
    the caller, who runs it after its answer)."""
    db.session.commit()  # no transaction stays open while Stripe is asked (the caller may have read)
    view = payments.gateway().retrieve_checkout_session(session_id)
    outcome = apply_checkout(view, cause)
    db.session.commit()
    if outcome.paid and complete_now:
        after_payment(outcome, cause)()
    return outcome


def after_payment(outcome: Outcome, cause: str):
    """What a confirmed payment leaves for after the answer: completing its registration once, or for a licence
    paid on its page, telling LTIaaS every platform's access where it differs."""
    pk = outcome.registration.id
    if outcome.licence_pk is not None:
        return lambda: reconciler.sync(pk, cause)
    return complete_later(pk, cause)


def complete_later(pk: int, cause: str):
    """`complete` of registration `pk`, as work for after an answer (a fresh session then)."""
    return lambda: complete(db.session.get(Registration, pk), cause)


def _backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)


def complete(reg: Registration, cause: str, now=None) -> None:
    """Call LTIaaS Complete if this caller wins the move from paid to completing; commits.

    `now` is the caller's clock (the worker passes the time of its pass, tests a later one): it
    decides whether a scheduled retry is due, and stamps the attempt so that only this attempt's
    outcome is recorded against it.
    """
    now = now or utcnow()
    # A payment refunded in full before its completion is not registered at all (a refund that came
    # while an earlier attempt was failing, or while it ran).
    refunds.settle_after_completion(reg, cause)
    claimed = transition(
        reg,
        State.COMPLETING,
        cause=cause,
        expect={State.PAID},
        where=(or_(Registration.next_attempt_at.is_(None), Registration.next_attempt_at <= now),),
        message="Completing the registration at LTIaaS.",
        attempt_count=Registration.attempt_count + 1,
        attempt_started_at=now,
    )
    # Read now: after the commit they would open a transaction. LTIaaS registers the platform with the
    # access its licence gives it; the reconciler corrects it if the licence changes meanwhile.
    registration_id, active = reg.registration_id, reg.access_wanted is not False
    db.session.commit()
    if not claimed:
        return
    settings = current_app.config["SETTINGS"]
    started = utcnow()
    try:
        result = ltiaas.client().complete_registration(registration_id, settings.completion_body(active))
    except ltiaas.LtiaasError as exc:
        _record_failure(reg, exc, cause, attempt=now, now=now + (utcnow() - started))
    else:
        # Any success is THE completion (LTIaaS completes an id once), even one that arrives after
        # the worker gave this attempt up as stale and a retry took over or failed. It answers the
        # completion's reasons for attention; others (a second payment) stay.
        db.session.refresh(reg)
        if reg.licence_pk is not None:  # its licence first, as every writer of it (access.locked): no deadlock
            access.locked(reg.licence_pk)
        remaining = ",".join(r for r in (reg.attention or "").split(",") if r and r not in _COMPLETION_ATTENTION)
        if not transition(
            reg,
            State.COMPLETED,
            cause=cause,
            expect={State.COMPLETING, State.PAID, State.NEEDS_ATTENTION},
            message=f"Registered at LTIaaS as platform {result.platform_id}.",
            details={"platform_id": result.platform_id},
            platform_id=result.platform_id,
            completion_html=result.html,
            completed_at=utcnow(),
            attempt_started_at=None,
            next_attempt_at=None,
            last_error=None,
            attempt_uncertain=False,
            attention=remaining or None,
            platform_active=active,
        ):
            log.error(
                "registration %s: LTIaaS completed as platform %s, but the registration is now %s",
                reg.id,
                result.platform_id,
                reg.state,
            )
            record(
                reg,
                "attempt",
                cause=cause,
                details={"platform_id": result.platform_id},
                message=f"LTIaaS registered platform {result.platform_id} after this attempt had been "
                f"given up as stale (the registration is now {reg.state}); an operator must "
                "reconcile it.",
                attention="completion_late",
                platform_id=result.platform_id,
            )
            access.completed(reg, cause)  # a platform at LTIaaS all the same: the vendor's tool will see it
        else:
            access.completed(reg, cause)  # the vendor's systems hear of it first (registration.completed)
            refunds.settle_after_completion(reg, cause)
            # Registered first, then the oldest platform past the licence's limit gives way (never before).
            platforms.make_room(reg, cause)
    db.session.commit()
    if claimed and reg.platform_id:
        # The licence may have changed while LTIaaS was asked; a replaced platform is told here too.
        reconciler.sync(reg.id, cause)


def _record_failure(reg: Registration, exc: ltiaas.LtiaasError, cause: str, *, attempt, now) -> None:
    """Record a failed attempt, started at `attempt`, failing at `now`: retry later or ask an operator."""
    settings = current_app.config["SETTINGS"]
    error = exc.as_dict()
    deadline = reg.created_at + timedelta(minutes=settings.registration_window_minutes)
    # Only this attempt's outcome: if the worker gave it up as stale, a later attempt owns the row.
    this_attempt = (Registration.attempt_started_at == attempt,)
    if exc.retryable and now < deadline:
        delay = _backoff(reg.attempt_count)
        taken = transition(
            reg,
            State.PAID,
            cause=cause,
            expect={State.COMPLETING},
            where=this_attempt,
            message=f"{exc}; retrying in {int(delay.total_seconds())} s.",
            details=error,
            last_error=error,
            attempt_started_at=None,
            next_attempt_at=now + delay,
            attempt_uncertain=reg.attempt_uncertain or exc.uncertain,
        )
    else:
        if reg.attempt_uncertain or exc.uncertain:
            attention, message = (
                "completion_uncertain",
                f"{exc}. An attempt may have registered the platform at LTIaaS: "
                "check LTIaaS before retrying or refunding.",
            )
        elif exc.retryable:
            attention, message = "completion_expired", f"{exc}; the LMS token has run out."
        else:
            attention, message = "completion_refused", f"LTIaaS refused the completion: {exc}."
        taken = transition(
            reg,
            State.NEEDS_ATTENTION,
            cause=cause,
            expect={State.COMPLETING},
            where=this_attempt,
            message=message,
            details=error,
            last_error=error,
            attempt_started_at=None,
            next_attempt_at=None,
            attention=attention,
        )
    if not taken:
        record(
            reg,
            "attempt",
            cause=cause,
            details=error,
            message=f"A late answer to an attempt already given up as stale: {exc}.",
        )
    else:
        refunds.settle_after_completion(reg, cause)  # a refund recorded while this attempt ran
