"""Paying a licence BY INVOICE on its licence page: the invoice part of the pay form (a template global
`licence_invoice`, paygate/templates/_licence_invoice.html inside _licence_pay.html) and `POST <page>/invoice`
(paygate/sales/licence_invoicing.py makes and sends the invoice), then 303 back to the licence page's one-hour
link with `?notice=invoice` (sent) or `?notice=invoicing` (another request is making it).

Like the card's Pay, the form needs no CSRF token: its URL holds the key or the one-hour link, and its signed
one-time form id is bound to the licence. Bad input gets one sentence and changes nothing, at Stripe or here.
"""

import logging

from flask import current_app, redirect, request

from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import Licence
from paygate.gateways import payments
from paygate.sales import invoice_form, licence_invoicing
from paygate.web import throttling
from paygate.web.flow import choice as choice_text
from paygate.web.flow.countries import countries
from paygate.web.flow.pages import message_page
from paygate.web.licence import Held, bp, held

log = logging.getLogger(__name__)


@bp.app_template_global("licence_invoice")
def licence_invoice(licence: Licence) -> dict | None:
    """What the pay form's invoice part shows: None when paying by invoice is not offered for this licence; else
    the form's one-time id, its fields and terms, and `pending` (an invoice asked for is not sent yet)."""
    if not licence_invoicing.offered(licence):
        return None
    settings = current_app.config["SETTINGS"]
    return {
        "form_id": licence_invoicing.new_form_id(licence),
        "pending": licence_invoicing.in_progress(licence),
        "billing_email": licence.billing_email,
        "terms": choice_text.invoice_terms(),
        "countries": countries() if settings.stripe_tax else [],
        "promotion_codes": settings.promotion_codes,
        "limits": {
            "email": invoice_form.EMAIL_MAX,
            "organisation": invoice_form.ORGANISATION_MAX,
            "po": invoice_form.PO_MAX,
            "code": invoice_form.CODE_MAX,
            "postal": invoice_form.POSTAL_MAX,
        },
    }


@bp.app_template_global("licence_invoice_notice")
def licence_invoice_notice(licence: Licence, notice: str | None) -> str | None:
    """The sentence the licence page shows after the invoice form (`?notice=`), or None."""
    if notice == "invoice" and licence.kind == "invoice" and licence.invoice_sent_at is not None:
        return _(
            "Invoice %(number)s was sent to %(email)s. The licence keeps its key and its LMS platforms.",
            number=licence.invoice_number or "",
            email=licence.billing_email or "",
        )
    if notice in ("invoice", "invoicing") and licence_invoicing.in_progress(licence):
        return _("Your invoice is being made. Reload this page in a moment.")
    return None


@bp.post("/<key>/invoice")
@bp.post("/m/<token>/invoice")
def invoice(key=None, token=None):
    """The admin asked to pay this licence by invoice."""
    found = held(key, token)
    return _invoice(found) if isinstance(found, Held) else found


def _invoice(held: Held):
    """The admin asked to pay this licence by invoice: checked, then made and sent at Stripe."""
    if not throttling.allow(throttling.INVOICE):  # each sending may make a Customer and an Invoice at Stripe
        body, status = message_page(
            _("Too many requests"),
            _("Too many requests came from your network just now. Wait a minute, then send the form again."),
            429,
        )
        return body, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    licence_pk = held.licence.id
    try:
        sent = licence_invoicing.request_invoice(licence_pk, request.form)
    except invoice_form.InvoiceRefused as exc:
        db.session.rollback()
        return message_page(_("Check the invoice form"), str(exc), exc.status)
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        if exc.http_status in (400, 403, 404):
            log.error("Stripe refused a licence page's invoice (http %s)", exc.http_status)
        return message_page(
            _("Payment service busy"),
            _(
                "We could not reach the payment service to make your invoice. Send the form again in a moment: "
                "nothing is made twice."
            ),
            503,
        )
    held = Held(db.session.get(Licence, licence_pk), key=held.key, token=held.token)
    return redirect(f"{held.link()}?notice={'invoice' if sent else 'invoicing'}", 303)
