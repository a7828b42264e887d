"""Paying a pilot or a licence that does not stand BY INVOICE on its licence page.

The form is the frame's (paygate/sales/invoice_form.py: the same checks and sentences, the cap per billing e-mail
domain) with its own signed one-time id, bound to the licence. Once it is accepted the licence is turned, under its
lock, into a licence of kind `invoice` whose invoice is asked for (`invoice_form_id` set, `invoice_sent_at` not):
its key, platforms and pilot's end stay; what it was billed by before is history. paygate/licensing/access.py
decides such a licence as the pilot it was (a running pilot is held `payment_pending_until` while its invoice is
made) or, for anything else, inactive until the invoice is sent; then as any invoice (INVOICE_ACCESS; with
`on_payment` a pilot keeps its access until its end). The invoice is made by paygate/sales/invoicing.py (`carry`):
the licence's Customer (else a new one), an Invoice or a subscription billed by invoice, finalised and sent, each
step committed before the next call, with keys naming the licence and the request, so that a double submit, a
reload or a failure halfway resumes (the form again, or the worker) and never makes a second invoice. Its metadata
names the origin registration, the licence and the request; never the key.
"""

import logging
import secrets
from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import and_, func, or_, select, update

from paygate.core.db import db, lock, utcnow
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession, Licence, Registration, State
from paygate.core.money import format_amount
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.licensing import access, licences
from paygate.sales import invoicing, licence_checkout, offers
from paygate.sales.invoice_form import (
    InvoiceRefused,
    billing_domain,
    bought,
    check_form,
    choice_refused,
    promotion_for,
    refuse_if_domain_capped,
)

log = logging.getLogger(__name__)

CAUSE = "licence page invoice"
# A running pilot's access holds this long while its invoice is made; the worker resumes a failure well within it.
HOLD = timedelta(hours=1)
# How long a licence page's invoice form may stay open before it is sent.
FORM_LIFE = timedelta(hours=12)
# How long the worker goes on resuming an invoice a failure left halfway.
RESUME_FOR = timedelta(days=1)
_FORM_SALT = "paygate-licence-invoice-form"
_EXPIRED = "This form has expired. Reload the page and send it again."


in_progress = licence_checkout.invoice_under_way


def offered(licence: Licence) -> bool:
    """Whether the licence page offers paying this licence by invoice (or resuming the invoice asked for)."""
    if not current_app.config["SETTINGS"].invoicing:
        return False
    return in_progress(licence) or licence_checkout.payable(licence)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_FORM_SALT)


def new_form_id(licence: Licence) -> str:
    return _serializer().dumps({"l": licence.id, "n": secrets.token_urlsafe(12)})


def _nonce(licence: Licence, form_id) -> str:
    """The nonce of a form id issued for this licence within FORM_LIFE, or InvoiceRefused."""
    try:
        data = _serializer().loads(form_id or "", max_age=int(FORM_LIFE.total_seconds()))
    except BadSignature:
        raise InvoiceRefused(_(_EXPIRED)) from None
    if not isinstance(data, dict) or data.get("l") != licence.id or not isinstance(data.get("n"), str):
        raise InvoiceRefused(_(_EXPIRED))
    return data["n"]


def request_invoice(licence_pk: int, form, cause: str = CAUSE) -> bool:
    """Accept the licence page's invoice form and carry the invoice as far as it goes; commits. True once the
    invoice is sent, False while another caller is making it.

    Raises InvoiceRefused (nothing was made at Stripe, nothing changed) or payments.PaymentProviderError (what was
    made is kept; the next try, or the worker, resumes).
    """
    if not current_app.config["SETTINGS"].invoicing:
        raise InvoiceRefused(_("Paying by invoice is not offered for this tool."))
    licence = db.session.get(Licence, licence_pk)
    nonce = _nonce(licence, form.get("form_id"))
    if licence.kind == "invoice" and licence.invoice_sent_at is not None and licence.invoice_form_id == nonce:
        return True  # this very form was sent already: a double submit
    if not in_progress(licence):
        _accept(licence_pk, form, nonce, cause)
    return advance(licence_pk, cause)


def _accept(licence_pk: int, form, nonce: str, cause: str) -> None:
    """Check the form and turn the licence into one whose invoice is asked for; commits. InvoiceRefused otherwise."""
    licence = db.session.get(Licence, licence_pk)
    if not licence_checkout.payable(licence):
        raise InvoiceRefused(_("This licence is paid and active: there is nothing to pay."), status=409)
    answers = check_form(form)
    chosen, promo = _what_is_bought(form, answers)
    refuse_if_domain_capped(
        answers.billing_email, counted=False, more=_page_requests
    )  # before anything is asked of Stripe
    _expire_open_sessions(licence_pk)
    lock("invoice-domain:" + billing_domain(answers.billing_email))  # until the commit below
    licence = licences.locked(licence_pk)
    if in_progress(licence):
        db.session.rollback()
        return  # a simultaneous submission asked for it first: this one resumes it
    if not licence_checkout.payable(licence):
        raise InvoiceRefused(_("This licence is paid and active: there is nothing to pay."), status=409)
    now = utcnow()
    was = licence.kind
    hold = None
    if was == "pilot" and licence.pilot_ends_at is not None and now < licence.pilot_ends_at:
        hold = max(now + HOLD, licence.payment_pending_until or now)
    values = {
        "kind": "invoice",
        "billing_email": answers.billing_email,
        "organisation": answers.organisation,
        "po_number": answers.po_number,
        "invoice_form_id": nonce,
        **bought(chosen, promo, answers),
        "payment_pending_until": hold,
        # What billed the licence before is history; the customer stays (the invoice is made for it).
        "status": None,
        "subscription_id": None,
        "subscription_status": None,
        "cancel_at_period_end": False,
        "invoice_id": None,
        "invoice_number": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "amount": None,
        "discount": None,
        "tax": None,
        "amount_due": None,
        "amount_remaining": None,
        "due_at": None,
        "period_end": None,
        "first_paid_at": None,  # INVOICE_ACCESS=on_payment waits for THIS invoice's payment
        "invoice_sent_at": None,
        "invoicing_claimed_at": None,
        "invoicing_error": None,
        "invoicing_attempt": 0,
        "updated_at": now,
    }
    for name, value in values.items():
        setattr(licence, name, value)
    db.session.flush()
    refuse_if_domain_capped(
        answers.billing_email, counted=True, more=_page_requests
    )  # the caller rolls the change back
    origin = db.session.get(Registration, licence.registration_pk)
    record(
        origin,
        "licence",
        cause=cause,
        message=f"Pay by invoice requested on the licence page for {answers.organisation} ({answers.billing_email}"
        + (f", PO {answers.po_number}" if answers.po_number else "")
        + f"); the {was} licence keeps its key and platforms.",
        details={
            "licence": licence.id,
            "was": was,
            "billing_email": answers.billing_email,
            "organisation": answers.organisation,
            "po_number": answers.po_number,
            "price_id": chosen.offer.id,
            "quantity": chosen.quantity,
        },
    )
    access.refresh(origin, cause)  # a running pilot holds; anything else waits for the invoice
    db.session.commit()


def _page_requests(domain: str) -> int:
    """Invoices asked for on licence pages in the last 24 hours for e-mail addresses at `domain`: of licences
    older than that (a newer one is counted as the frame's request), sent since or being made."""
    since = utcnow() - timedelta(days=1)
    pattern = "%@" + domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return db.session.scalar(
        select(func.count())
        .select_from(Licence)
        .where(
            Licence.kind == "invoice",
            Licence.created_at < since,
            or_(Licence.invoice_sent_at >= since, and_(Licence.invoice_sent_at.is_(None), Licence.updated_at >= since)),
            func.lower(Licence.billing_email).like(pattern, escape="\\"),
        )
    )


def _what_is_bought(form, answers):
    """The offer and seats chosen (as the card form's), and the promotion code checked at Stripe; InvoiceRefused."""
    with choice_refused():
        chosen = offers.choose(offers.available(), form.get("offer"), form.get("seats"))
    return chosen, promotion_for(answers.promotion_code, chosen)


def _expire_open_sessions(licence_pk: int) -> None:
    """Close the licence page's open Checkout Sessions, so that a card cannot pay a licence billed by invoice."""
    licence = db.session.get(Licence, licence_pk)
    rows = db.session.scalars(licence_checkout.sessions_of(licence)).all()
    if any(r.status == "complete" and r.payment_status == "unpaid" and r.failed_at is None for r in rows):
        raise InvoiceRefused(
            _("A payment for this licence is still being processed, so no second payment is taken."), status=409
        )
    ids = [r.session_id for r in rows if r.status == "open"]
    db.session.commit()
    gateway = payments.gateway()
    for session_id in ids:
        try:
            gateway.expire_checkout_session(session_id)
        except payments.PaymentProviderError:
            # Paid in the other tab just now? Stripe's answer decides; a card payment wins over an invoice.
            if gateway.retrieve_checkout_session(session_id).status != "expired":
                raise InvoiceRefused(
                    _("A payment for this licence is still being processed, so no second payment is taken."),
                    status=409,
                ) from None
        db.session.execute(
            update(CheckoutSession)
            .where(CheckoutSession.session_id == session_id, CheckoutSession.status == "open")
            .values(status="expired", updated_at=utcnow())
        )
        db.session.commit()


def advance(licence_pk: int, cause: str) -> bool:
    """Make and send the invoice asked for, if it is not sent yet, then apply it; commits. True once it is sent."""
    licence = db.session.get(Licence, licence_pk)
    if not in_progress(licence):
        return licence.kind == "invoice" and licence.invoice_sent_at is not None
    origin = db.session.get(Registration, licence.registration_pk)
    reference = {**licence_checkout.metadata(licence, origin), "invoice_request": licence.invoice_form_id}
    key = f"paygate-licence-invoice-{licence.id}-{licence.invoice_form_id}-"
    price_id = licence.price_id
    db.session.commit()
    recurring = payments.gateway().get_price(price_id).period is not None  # read with no transaction open
    request = invoicing.Request(key=key, reference=reference, recurring=recurring, price_id=price_id)
    if not invoicing.carry(licence_pk, request):
        return False  # another request or the worker is making it right now
    _sent(licence_pk, cause)
    return True


def _sent(licence_pk: int, cause: str) -> None:
    """The invoice is out: the pilot's hold ends (the invoice decides now) and every platform is decided again."""
    licence = licences.locked(licence_pk)
    licence.payment_pending_until = None
    origin = db.session.get(Registration, licence.registration_pk)
    amount = format_amount(licence.amount_due, licence.currency)
    due = f", due {licence.due_at:%Y-%m-%d}" if licence.due_at else ""
    record(
        origin,
        "licence",
        cause=cause,
        message=f"Invoice {licence.invoice_number or licence.invoice_id} for {amount} sent to "
        f"{licence.billing_email}{due}; the licence is paid by invoice, with its key and platforms.",
        details={
            "licence": licence.id,
            "invoice": licence.invoice_id,
            "customer": licence.customer_id,
            "subscription": licence.subscription_id,
        },
    )
    access.refresh(origin, cause)
    db.session.commit()
    log.info("licence %s: its invoice was sent (licence page)", licence_pk)


def resume_pending(now, limit: int = 100) -> int:
    """The worker: finish licence page invoices a failure left halfway; how many were sent (the worker's
    reconciler then tells LTIaaS what changed)."""
    pks = db.session.scalars(
        select(Licence.id)
        .join(Registration, Registration.id == Licence.registration_pk)
        .where(
            Licence.kind == "invoice",
            Licence.invoice_sent_at.is_(None),
            Licence.invoice_form_id.is_not(None),
            Licence.updated_at > now - RESUME_FOR,
            Registration.state != State.PENDING.value,  # the frame's own requests are paygate/sales/invoicing.py's
        )
        .order_by(Licence.id)
        .limit(limit)
    ).all()
    db.session.commit()
    done = 0
    for pk in pks:
        try:
            done += advance(pk, "worker")
        except payments.PaymentProviderError as exc:
            db.session.rollback()
            log.warning("worker: the invoice of licence %s is not finished: %s", pk, exc)
    return done
