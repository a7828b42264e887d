"""Pay by invoice: the school's finance office gets a Stripe invoice; the tool is registered now.

`request_invoice` checks the admin's form (one sentence per refusal, nothing sent to Stripe), claims
the registration's licence as kind "invoice" (one licence per registration: a card payment is then
refused, and an open Checkout Session is expired), then `advance` makes, at Stripe, a Customer and
either an Invoice with the Price as its item or a subscription billed by invoice, finalises the
invoice and has Stripe send it. Every call has its own idempotency key derived from the registration,
and each step's result is committed before the next call, so a double submit, a reload or a failure
halfway resumes where it stopped (the admin's retry, or the worker) and never makes a second customer,
invoice or subscription. Once the invoice is sent the registration is paid (its money is secured by
the invoice) and completed at LTIaaS exactly once, as for a card.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from paygate.core.db import db, lock, utcnow
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession, Licence, Registration, State
from paygate.core.money import format_amount
from paygate.core.registrations import record, transition
from paygate.gateways import payments
from paygate.licensing import access, licences
from paygate.sales import offers
from paygate.sales.checkout import reference
from paygate.sales.fulfilment import complete, fulfil_checkout
from paygate.sales.invoice_form import (
    InvoiceRefused,
    billing_domain,
    bought,
    check_form,
    choice_refused,
    form_nonce,
    promotion_for,
    refuse_if_domain_capped,
)

log = logging.getLogger(__name__)

CAUSE = "invoice"


def request_invoice(reg: Registration, form, cause: str = CAUSE) -> None:
    """Accept the admin's invoice request and carry it as far as it goes; commits.

    Raises InvoiceRefused (nothing was created) or payments.PaymentProviderError (what was created is
    kept; the next try, or the worker, resumes).
    """
    settings = current_app.config["SETTINGS"]
    if not settings.invoicing:
        raise InvoiceRefused(_("Paying by invoice is not offered for this tool."))
    nonce = form_nonce(reg, form.get("form_id"))
    licence = licences.of(reg)
    if licence is not None and licence.kind == "invoice" and licence.customer_id is None:
        # Nothing was made at Stripe yet: corrected answers (a mistyped e-mail) still count.
        answers = check_form(form)
        bought = _what_is_bought(reg, form, answers)
        moved = billing_domain(answers.billing_email) != billing_domain(licence.billing_email or "")
        if moved:
            lock("invoice-domain:" + billing_domain(answers.billing_email))
        licence.billing_email, licence.organisation, licence.po_number = (
            answers.billing_email,
            answers.organisation,
            answers.po_number,
        )
        for key, value in bought.items():
            setattr(licence, key, value)
        if moved:  # into another domain: counted there now
            db.session.flush()
            refuse_if_domain_capped(answers.billing_email, counted=True)
        db.session.commit()
    elif licence is None:
        answers = check_form(form)
        if reg.state != State.PENDING:
            raise InvoiceRefused(_("This registration needs no payment now."))
        bought = _what_is_bought(reg, form, answers)
        _refuse_if_card_payment_started(reg)
        refuse_if_domain_capped(answers.billing_email, counted=False)  # before anything is asked of Stripe
        # Before the licence exists: a session paid a moment ago is then fulfilled as the card payment.
        reg_pk = reg.id
        _expire_open_sessions(reg_pk, cause)
        reg = db.session.get(Registration, reg_pk)
        lock("invoice-domain:" + billing_domain(answers.billing_email))  # until the commit below
        licence, created = licences.open_licence(
            reg,
            "invoice",
            billing_email=answers.billing_email,
            organisation=answers.organisation,
            po_number=answers.po_number,
            invoice_form_id=nonce,
            **bought,
        )
        if created:
            refuse_if_domain_capped(answers.billing_email, counted=True)  # the caller rolls the licence back
        if created:  # of simultaneous submissions, the one that made it says so
            record(
                reg,
                "licence",
                cause=cause,
                message=f"Pay by invoice requested for {answers.organisation} "
                f"({answers.billing_email}" + (f", PO {answers.po_number})." if answers.po_number else ")."),
                details={
                    "billing_email": answers.billing_email,
                    "organisation": answers.organisation,
                    "po_number": answers.po_number,
                },
                payer_email=answers.billing_email,
            )
        db.session.commit()
    if licence.kind != "invoice":
        raise InvoiceRefused(_("This registration is already paid by card."))
    advance(reg.id, cause)


def _what_is_bought(reg: Registration, form, answers) -> dict:
    """The offer and seats the admin chose (stored on the registration), and the promotion code, checked at Stripe
    before anything is made there: the licence's values. InvoiceRefused when any cannot be sold."""
    with choice_refused():
        on_sale = offers.available()
        chosen = (
            offers.choose(on_sale, form.get("offer"), form.get("seats"))
            if form.get("offer") or form.get("seats")
            else offers.current_choice(reg, on_sale)
        )
    reg_pk = reg.id
    promo = promotion_for(answers.promotion_code, chosen)
    reg = db.session.get(Registration, reg_pk)
    offers.apply_choice(reg, chosen)
    return bought(chosen, promo, answers)


def _refuse_if_card_payment_started(reg: Registration) -> None:
    """A card payment in progress (a delayed one, or a session paid a moment ago) wins over an invoice."""
    for row in reg.checkout_sessions:
        if row.status == "complete" and row.failed_at is None:
            raise InvoiceRefused(_("A card payment was already made for this registration."))


def _expire_open_sessions(reg_pk: int, cause: str) -> None:
    """Close any Checkout Session still open, so that the card cannot pay an invoiced registration."""
    rows = db.session.scalars(
        select(CheckoutSession).where(CheckoutSession.registration_pk == reg_pk, CheckoutSession.status == "open")
    ).all()
    ids = [row.session_id for row in rows]
    db.session.commit()
    gateway = payments.gateway()
    for session_id in ids:
        try:
            gateway.expire_checkout_session(session_id)
        except payments.PaymentProviderError:
            # Already complete (paid in the popup just now) or expired? Stripe's answer decides.
            outcome = fulfil_checkout(session_id, cause)
            if outcome.paid or outcome.note == "processing":
                raise InvoiceRefused(
                    _("A card payment was just made for this registration; no invoice is needed.")
                ) from None
            if outcome.note == "open":  # Stripe could not close it: a card could still pay it
                raise
        db.session.execute(
            update(CheckoutSession)
            .where(CheckoutSession.session_id == session_id, CheckoutSession.status == "open")
            .values(status="expired", updated_at=utcnow())
        )
        db.session.commit()


# Six Stripe calls, each with an 8 s timeout and up to 3 tries, fit well inside this: a claim older than
# it was left by a process that died.
CLAIM_STALE = timedelta(minutes=10)


def _claim(licence_pk: int, now) -> bool:
    """One caller at a time talks to Stripe for an invoice; a claim older than CLAIM_STALE is retaken."""
    stale = now - CLAIM_STALE
    claimed = (
        db.session.execute(
            update(Licence)
            .where(
                Licence.id == licence_pk,
                Licence.invoice_sent_at.is_(None),
                or_(Licence.invoicing_claimed_at.is_(None), Licence.invoicing_claimed_at < stale),
            )
            .values(invoicing_claimed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    db.session.commit()
    return claimed


def advance(reg_pk: int, cause: str) -> None:
    """Carry the registration's invoice through every step not done yet, then complete; commits."""
    reg = db.session.get(Registration, reg_pk)
    licence = licences.of(reg)
    if licence is None or licence.kind != "invoice":
        return
    if licence.invoice_sent_at is None:
        request = Request(
            key=f"paygate-invoice-{reg.id}-{reg.registration_id}-",
            reference=reference(reg)["metadata"],
            recurring=reg.price_interval is not None,
            price_id=licence.price_id or reg.price_id,
        )
        if not carry(licence.id, request):
            return  # another request or the worker is making it right now
        reg = db.session.get(Registration, reg_pk)
        licence = licences.of(reg)
        _secured(reg, licence, cause)
    reg = db.session.get(Registration, reg_pk)
    if reg.state == State.PAID.value:
        complete(reg, cause)


@dataclass(frozen=True)
class Request:
    """What an invoice is made for at Stripe: its idempotency keys' prefix, the reference in its metadata,
    whether its Price is recurring (a subscription billed by invoice), and that Price."""

    key: str
    reference: dict
    recurring: bool
    price_id: str


def carry(licence_pk: int, request: Request) -> bool:
    """Claim the licence's invoice and make and send it; commits. False when another caller holds the claim.

    Raises payments.PaymentProviderError (what was made is kept and the claim released: the next try resumes).
    """
    now = utcnow()
    if not _claim(licence_pk, now):
        return False
    try:
        _make_and_send(licence_pk, request)
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        # Stripe replays an answer it kept (a 5xx) for the same key: the next try takes new ones.
        # Only our own claim is released: a caller who took a stale claim over keeps it.
        db.session.execute(
            update(Licence)
            .where(Licence.id == licence_pk, Licence.invoicing_claimed_at == now)
            .values(
                invoicing_claimed_at=None,
                invoicing_error=str(exc)[:300],
                invoicing_attempt=Licence.invoicing_attempt + (1 if exc.replayed else 0),
            )
        )
        db.session.commit()
        raise
    return True


def _make_and_send(licence_pk: int, request: Request) -> None:
    """The Stripe steps, each committed before the next; each key names the request and step.

    After a failure Stripe keeps under its key (a 5xx, `invoicing_attempt` > 0), the keys change, and
    before making anything again Stripe is asked whether the failed call made it after all.
    """
    settings = current_app.config["SETTINGS"]
    gateway = payments.gateway()
    ref = request.reference
    licence = db.session.get(Licence, licence_pk)
    attempt = licence.invoicing_attempt
    key = request.key + (f"{attempt}-" if attempt else "")
    price_id, recurring = request.price_id, request.recurring
    quantity, promo = licence.quantity or 1, licence.promotion_code_id
    address = {"country": licence.billing_country, "postal_code": licence.billing_postal_code}
    address = {k: v for k, v in address.items() if v} or None
    email, organisation, po_number = licence.billing_email, licence.organisation, licence.po_number
    customer, invoice_id, status = licence.customer_id, licence.invoice_id, licence.status
    db.session.commit()
    days = settings.invoice_days_until_due

    def save(**values):
        db.session.execute(update(Licence).where(Licence.id == licence_pk).values(updated_at=utcnow(), **values))
        db.session.commit()

    if customer is None:
        customer = (attempt and gateway.find_customer(email, ref)) or gateway.create_customer(
            email=email,
            name=organisation,
            po_number=po_number,
            metadata=ref,
            idempotency_key=key + "customer",
            address=address,
        )
        save(customer_id=customer)
    if invoice_id is None and recurring:
        sub = (attempt and gateway.find_subscription(customer, ref)) or gateway.create_invoiced_subscription(
            customer=customer,
            price_id=price_id,
            days_until_due=days,
            metadata=ref,
            idempotency_key=key + "subscription",
            quantity=quantity,
            promotion_code=promo,
        )
        invoice_id, status = sub.latest_invoice_id, "draft"
        save(subscription_id=sub.id, subscription_status=sub.status, invoice_id=invoice_id, status=status)
    elif invoice_id is None:
        invoice = (attempt and gateway.find_invoice(customer, ref)) or gateway.create_invoice(
            customer=customer,
            days_until_due=days,
            po_number=po_number,
            metadata=ref,
            idempotency_key=key + "invoice",
            promotion_code=promo,
        )
        invoice_id, status = invoice.id, invoice.status
        save(invoice_id=invoice_id, status=status)
    if attempt and status in (None, "draft"):
        status = gateway.retrieve_invoice(invoice_id).status  # the failed finalisation may have happened
    if status in (None, "draft"):
        if not recurring and not (attempt and _has_line(gateway.retrieve_invoice(invoice_id))):
            # Replayed if it was added before a failure: never a second item.
            gateway.add_invoice_item(
                customer=customer,
                invoice=invoice_id,
                price_id=price_id,
                metadata=ref,
                idempotency_key=key + "item",
                quantity=quantity,
            )
        invoice = gateway.finalize_invoice(invoice_id, idempotency_key=key + "finalize")
        _save_invoice(save, invoice)
    invoice = gateway.send_invoice(invoice_id, idempotency_key=key + "send")
    _save_invoice(save, invoice, invoice_sent_at=utcnow(), invoicing_claimed_at=None, invoicing_error=None)


def _has_line(invoice: payments.InvoiceView) -> bool:
    """Whether the Price is on the invoice already: a promotion code may leave nothing due, never no subtotal."""
    return invoice.price_id is not None or bool(invoice.subtotal)


def _save_invoice(save, invoice: payments.InvoiceView, **more) -> None:
    save(
        status=invoice.status,
        invoice_number=invoice.number,
        due_at=invoice.due_date,
        hosted_invoice_url=invoice.hosted_invoice_url,
        invoice_pdf=invoice.invoice_pdf,
        amount_due=invoice.amount_due,
        amount_remaining=invoice.amount_remaining,
        currency=invoice.currency,
        # As Stripe billed it: after discounts and before tax, the discount, the tax Stripe Tax computed.
        amount=invoice.amount_before_tax,
        discount=invoice.discount or None,
        tax=invoice.tax,
        **more,
    )


def _secured(reg: Registration, licence: Licence, cause: str) -> None:
    """The invoice is out: the registration may be completed; its access follows the licence."""
    amount = format_amount(licence.amount_due, licence.currency)
    due = f", due {licence.due_at:%Y-%m-%d}" if licence.due_at else ""
    transition(
        reg,
        State.PAID,
        cause=cause,
        expect={State.PENDING, State.ABANDONED},
        message=f"Invoice {licence.invoice_number or licence.invoice_id} for {amount} sent to "
        f"{licence.billing_email}{due}; registering now.",
        details={
            "invoice": licence.invoice_id,
            "customer": licence.customer_id,
            "subscription": licence.subscription_id,
        },
        next_attempt_at=None,
    )
    access.refresh(reg, cause)
    db.session.commit()


def resume_pending(now, limit: int = 100) -> int:
    """The worker: finish invoice requests a failure left halfway, while the LMS token lasts."""
    window = timedelta(minutes=current_app.config["SETTINGS"].registration_window_minutes)
    rows = (
        db.session.execute(
            select(Licence.registration_pk)
            .join(Registration, Registration.id == Licence.registration_pk)
            .where(
                Licence.kind == "invoice",
                Licence.invoice_sent_at.is_(None),
                Registration.state == State.PENDING.value,
                Registration.created_at > now - window,
            )
            .order_by(Licence.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    db.session.commit()
    done = 0
    for reg_pk in rows:
        try:
            advance(reg_pk, "worker")
            done += 1
        except (payments.PaymentProviderError, InvoiceRefused) as exc:
            log.warning("worker: invoice of registration %s not finished: %s", reg_pk, exc)
    return done
