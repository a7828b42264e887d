"""The LMS admin's flow: the frame LTIaaS sends to us, and the payment popup it opens.

No state lives in cookies (they are third-party in the frame); the flow token in the URL names the
registration, and the frame learns every outcome by asking the server.
"""
import logging
import re

from flask import (Blueprint, abort, current_app, g, jsonify, make_response, redirect, render_template, request,
                   url_for)
from sqlalchemy import select

from .. import invoicing, ltiaas, payments
from ..checkout import NotPayable, open_checkout
from ..db import db, utcnow
from ..after_answer import after_answer
from ..fulfilment import complete_later, fulfil_checkout
from ..models import CheckoutSession, Registration, State
from ..money import format_amount
from ..registrations import open_registration, record
from .status import RESTART, FlowView, flow_view, frame_status

log = logging.getLogger(__name__)
bp = Blueprint("flow", __name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@bp.after_request
def _frame_headers(response):
    # Runs before the app's security headers (app/__init__.py), which read g.frameable: one hook
    # instead of a before- and an after-request hook on every poll.
    g.frameable = True
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(title: str, message: str, status: int, **context):
    return render_template("message.html", title=title, message=message, **context), status


def _absolute(endpoint: str, **values) -> str:
    """A URL on PUBLIC_URL: Stripe and LTIaaS must reach us where browsers do, whatever Host said."""
    return current_app.config["SETTINGS"].public_url.rstrip("/") + url_for(endpoint, **values)


def _registration(token: str) -> Registration:
    reg = None
    if _TOKEN.match(token):
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).first()
    if reg is None:
        abort(404, description=f"This registration link is not known. {RESTART}")
    return reg


def _retry_url(registration_id: str) -> str:
    return url_for("flow.pre_approval", registrationId=registration_id)


@bp.get("/lti/register")
def lti_register():
    """The registration URL admins type: on our origin, so Canvas accepts the close message from us."""
    target = current_app.config["SETTINGS"].ltiaas_url.rstrip("/") + "/lti/register"
    query = request.query_string.decode("latin-1")
    return redirect(f"{target}?{query}" if query else target, 302)


@bp.get("/pre-approval")
def pre_approval():
    registration_id = request.args.get("registrationId", "")
    if not ltiaas.valid_id(registration_id):
        return _page("Registration link not valid", f"This registration link is incomplete or damaged. "
                     f"{RESTART}", 400)
    reg = flow_view(registration_id=registration_id)  # a repeat visit: one read of what the page shows
    if reg is None:
        db.session.commit()  # no transaction stays open while LTIaaS and Stripe are asked
        try:
            lms = ltiaas.client().get_registration(registration_id)
            price = payments.gateway().get_price(current_app.config["SETTINGS"].stripe_price_id)
        except ltiaas.LtiaasError as exc:
            if exc.status in (401, 403):
                log.error("pre-approval: LTIaaS refused our API key (%s): check LTIAAS_API_KEY", exc.status)
                return _page("Not available", "Registration is not available right now: the vendor's "
                             "registration service is misconfigured. Please contact the vendor.", 503)
            log.info("pre-approval: LTIaaS registration lookup failed: %s", exc)
            if exc.status is not None and 400 <= exc.status < 500 and not exc.retryable:
                return _page("Registration expired", "This registration has expired, was abandoned or is "
                             f"already finished. {RESTART}", 410)
            return _page("Registration service unavailable", "We could not reach the registration service. "
                         "Try again in a moment.", 502, retry_url=_retry_url(registration_id))
        except payments.PriceNotSellable:
            return _not_sellable()
        except payments.PaymentProviderError:
            return _page("Payment service unavailable", "We could not reach the payment service. Try again "
                         "in a moment.", 502, retry_url=_retry_url(registration_id))
        if not price.active or price.unit_amount <= 0:
            log.error("STRIPE_PRICE_ID names a price that cannot be sold (archived, or without an amount)")
            return _not_sellable()
        reg = open_registration(registration_id, lms, price, cause="pre-approval")
        db.session.commit()
    return _preapproval_page(reg)


def _not_sellable():
    return _page("Not available", "Registration is not available right now: the vendor's payment settings "
                 "are incomplete. Please contact the vendor.", 503)


def _preapproval_page(reg: Registration | FlowView, status: int = 200, invoice_error: str | None = None,
                      invoice_field: str | None = None, answers=None):
    settings = current_app.config["SETTINGS"]
    price = format_amount(reg.amount, reg.currency)
    offer_invoice = settings.invoicing and reg.state == State.PENDING.value and (
        reg.licence is None or reg.licence.kind == "invoice" and reg.licence.invoice_sent_at is None)
    return render_template(
        "preapproval.html", reg=reg, price=price, period=period_words(reg.price_interval),
        status=frame_status(reg), pay_url=url_for("flow.pay", token=reg.flow_token),
        status_url=url_for("flow.status", token=reg.flow_token),
        invoice_days=settings.invoice_days_until_due, offer_invoice=offer_invoice,
        invoice_url=url_for("flow.invoice", token=reg.flow_token) if offer_invoice else None,
        invoice_form_id=invoicing.new_form_id(reg) if offer_invoice else None,
        invoice_error=invoice_error, invoice_field=invoice_field, answers=answers or {},
        limits={"email": invoicing.EMAIL_MAX, "organisation": invoicing.ORGANISATION_MAX, "po": invoicing.PO_MAX},
    ), status


def period_words(interval: str | None) -> str:
    """ "year" -> "per year", "3 month" -> "every 3 months", None -> "paid once"."""
    if not interval:
        return "paid once"
    count, _, unit = interval.rpartition(" ")
    return f"every {count} {unit}s" if count else f"per {unit}"


@bp.post("/flow/<token>/invoice")
def invoice(token: str):
    """The admin chose to pay by invoice, in the frame (CSRF-exempt: see app/operator/auth.py)."""
    reg = _registration(token)
    if not current_app.config["SETTINGS"].invoicing:
        return _page("Not offered", "Paying by invoice is not offered for this tool.", 400)
    answers = {k: (request.form.get(k) or "")[:200] for k in ("billing_email", "organisation", "po_number")}
    try:
        invoicing.request_invoice(reg, request.form)
    except invoicing.InvoiceRefused as exc:
        db.session.rollback()
        return _preapproval_page(reg, 400, invoice_error=str(exc), invoice_field=exc.field, answers=answers)
    except payments.PaymentProviderError:
        db.session.rollback()
        return _preapproval_page(reg, 503, answers=answers, invoice_error=(
            "We could not reach the payment service to make your invoice. Send the form again in a moment: "
            "nothing is made twice."))
    return redirect(url_for("flow.pre_approval", registrationId=reg.registration_id), 303)


@bp.get("/flow/<token>/status")
def status(token: str):
    """Polled by the frame: what to show, and the completion html once it exists."""
    view = flow_view(token=token) if _TOKEN.match(token) else None
    if view is None:
        abort(404, description=f"This registration link is not known. {RESTART}")
    return jsonify(frame_status(view))


@bp.get("/flow/<token>/pay")
def pay(token: str):
    """The popup: send it to the registration's one open Checkout Session."""
    reg = _registration(token)
    try:
        url = open_checkout(reg, success_url=_absolute("flow.paid", token=token) + "?session_id={CHECKOUT_SESSION_ID}",
                            cancel_url=_absolute("flow.cancelled", token=token))
    except NotPayable as exc:
        if exc.reason == "too_late":
            return _page("Registration timed out", f"This registration is too old to pay for safely. Close "
                         f"this window. {RESTART}", 409)
        if exc.reason == "invoiced":
            return _page("Paying by invoice", "An invoice was requested for this registration, so no card "
                         "payment is taken. Close this window and return to your LMS window.", 409, close=True)
        if exc.reason == "processing":
            return _page("Payment processing", "Your payment is still being processed, so no second payment "
                         "is taken. Close this window and return to your LMS window.", 409, close=True)
        return _page("Already paid", "This registration needs no payment now. Close this window and return "
                     "to your LMS.", 409, close=True)
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        if exc.http_status in (400, 403, 404):  # Stripe refuses what we sell: no retry will help
            log.error("Stripe refused to open a Checkout Session (http %s): check STRIPE_PRICE_ID",
                      exc.http_status)
            return _not_sellable()
        return _page("Payment service busy", "We could not open the payment page. Try again: you will not "
                     "be charged twice.", 503, retry_url=url_for("flow.pay", token=token))
    return redirect(url, 303)


@bp.get("/flow/<token>/paid")
def paid(token: str):
    """Stripe's success return, in the popup: the URL proves nothing, so ask Stripe."""
    reg = _registration(token)
    session_id = request.args.get("session_id", "")
    if not payments.valid_session_id(session_id):
        return _page("Payment not recognised", "This payment link is damaged. Return to your LMS window.", 400)
    owner = db.session.scalars(select(CheckoutSession.registration_pk)
                               .where(CheckoutSession.session_id == session_id)).first()
    if owner != reg.id:  # Stripe is asked only about sessions this registration opened
        return _page("Payment not recognised", "This payment link does not belong to this registration. "
                     "Return to your LMS window: a payment made there finishes the registration by itself.", 400)
    try:
        outcome = fulfil_checkout(session_id, cause="success return", complete_now=False)
    except payments.PaymentProviderError:
        db.session.rollback()
        return _page("Payment being confirmed", "We could not confirm the payment with Stripe just now. If "
                     "you paid, the registration finishes by itself in your LMS window.", 503)
    if outcome.registration is None or outcome.registration.id != reg.id:
        return _page("Payment not recognised", "This payment does not belong to this registration.", 400)
    if outcome.paid:  # completed after this answer: the admin is not kept waiting on LTIaaS
        page, code = _page("Payment received", "Thank you: your payment was received. Return to your LMS "
                           "window; the registration finishes there. This window can be closed.", 200, close=True)
        return after_answer(make_response(page, code), complete_later(reg.id, "success return"))
    if outcome.note == "processing":
        return _page("Payment processing", "Your payment is being processed. Return to your LMS window: "
                     "the registration finishes there once the payment is confirmed.", 200, close=True)
    return _page("Payment not completed", "The payment was not completed. Return to your LMS window to "
                 "try again.", 409, close=True)


@bp.get("/flow/<token>/cancel")
def cancelled(token: str):
    """Stripe's cancel return: tell the frame, keep the session for a retry."""
    reg = _registration(token)
    session = reg.checkout_sessions[-1] if reg.checkout_sessions else None
    if session is not None and session.status == "open" and session.canceled_at is None:
        session.canceled_at = utcnow()
        record(reg, "payment", cause="cancel return", message="The admin left Checkout without paying.",
               details={"session": session.session_id})
        db.session.commit()
    return _page("Payment cancelled", "No payment was made. Return to your LMS window to pay, or close it "
                 "to stop the registration.", 200, close=True)
