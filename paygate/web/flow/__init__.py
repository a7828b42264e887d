"""The LMS admin's flow: the frame LTIaaS sends to us, and the payment popup it opens.

No state lives in cookies (they are third-party in the frame); the flow token in the URL names the
registration, and the frame learns every outcome by asking the server.
"""

import logging
import re

from flask import Blueprint, abort, current_app, g, jsonify, make_response, redirect, request, url_for
from sqlalchemy import select

from paygate.core import languages
from paygate.core.db import db, utcnow
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession, Registration, State
from paygate.core.registrations import open_registration, record
from paygate.gateways import ltiaas, payments
from paygate.sales import invoicing
from paygate.sales.checkout import NotPayable, open_checkout
from paygate.sales.fulfilment import complete_later, fulfil_checkout
from paygate.web import identity, throttling
from paygate.web.after_answer import after_answer
from paygate.web.flow.status import FlowView, flow_view, frame_status, restart

log = logging.getLogger(__name__)
bp = Blueprint("flow", __name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@bp.after_request
def _frame_headers(response):
    # Runs before the app's security headers (paygate/application/__init__.py), which read g.frameable: one hook
    # instead of a before- and an after-request hook on every poll.
    g.frameable = True
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(title: str, message: str, status: int, reg=None, **context):
    """A page of one message, in the admin's language (title and message come translated), naming the
    vendor and the product; an error page (4xx, 5xx) says how to reach the vendor."""
    context.setdefault("show_support", status >= 400)
    return languages.render_page(
        "message.html",
        title=title,
        message=message,
        identity=identity.of(reg) if reg is not None else identity.without_registration(),
        **context,
    ), status


def _unknown_link() -> str:
    return _("This registration link is not known.") + " " + restart()


def _absolute(endpoint: str, **values) -> str:
    """A URL on PUBLIC_URL alone: Stripe and LTIaaS must reach us where browsers do, whatever the request's
    Host, X-Forwarded-* or SCRIPT_NAME said (the path is built from the URL map, not from the request)."""
    path = current_app.url_map.bind("localhost", script_name="/").build(endpoint, values)
    return current_app.config["SETTINGS"].public_url.rstrip("/") + path


def _registration(token: str) -> Registration:
    reg = None
    if _TOKEN.match(token):
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).first()
    if reg is None:
        abort(404, description=_unknown_link())
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
    if not registration_id.strip():
        return _page(
            _("Registration link not valid"),
            _("This registration link has no registration id, so the LMS cannot be registered.") + " " + restart(),
            400,
        )
    if not ltiaas.valid_id(registration_id):
        return _page(
            _("Registration link not valid"),
            _("This registration link is incomplete or damaged.") + " " + restart(),
            400,
        )
    reg = flow_view(registration_id=registration_id)  # a repeat visit: one read of what the page shows
    if reg is None:
        # A new id costs LTIaaS and Stripe calls: an id LTIaaS refused lately is answered from memory,
        # and each client address may start only so many lookups.
        if throttling.known_dead(registration_id):
            return _expired()
        if not throttling.allow(throttling.LOOKUP):
            return _too_many(_retry_url(registration_id))
        db.session.commit()  # no transaction stays open while LTIaaS and Stripe are asked
        try:
            lms, price = _look_up(registration_id)
        except _Busy:
            return _busy(_retry_url(registration_id))
        except ltiaas.UnusableLms as exc:  # nothing stored; asking again gives the same answer
            log.warning("pre-approval: %s", exc)
            return _page(
                _("LMS not recognised"),
                _(
                    "Your LMS did not give a usable web address (URL) for itself, so "
                    "it cannot be registered. Check the LMS's address in its settings."
                )
                + " "
                + restart(),
                422,
            )
        except ltiaas.UnexpectedAnswer as exc:  # nothing stored; LTIaaS may answer properly on a retry
            log.warning("pre-approval: %s", exc)
            return _page(
                _("Registration service answered unexpectedly"),
                _(
                    "The registration service "
                    "answered in a way we did not expect, so nothing was saved. Try again in a moment; "
                    "if this keeps happening, please contact the vendor."
                ),
                502,
                retry_url=_retry_url(registration_id),
            )
        except ltiaas.LtiaasError as exc:
            if exc.status in (401, 403):
                log.error("pre-approval: LTIaaS refused our API key (%s): check LTIAAS_API_KEY", exc.status)
                return _page(
                    _("Not available"),
                    _(
                        "Registration is not available right now: the vendor's "
                        "registration service is misconfigured. Please contact the vendor."
                    ),
                    503,
                )
            log.info("pre-approval: LTIaaS registration lookup failed: %s", exc)
            if exc.status is not None and 400 <= exc.status < 500 and not exc.retryable:
                throttling.remember_dead(registration_id)  # refused now, refused for good
                return _expired()
            return _page(
                _("Registration service unavailable"),
                _("We could not reach the registration service. Try again in a moment."),
                502,
                retry_url=_retry_url(registration_id),
            )
        except payments.PriceNotSellable:
            return _not_sellable()
        except payments.PaymentProviderError:
            return _page(
                _("Payment service unavailable"),
                _("We could not reach the payment service. Try again in a moment."),
                502,
                retry_url=_retry_url(registration_id),
            )
        if not price.active or price.unit_amount <= 0:
            log.error("STRIPE_PRICE_ID names a price that cannot be sold (archived, or without an amount)")
            return _not_sellable()
        reg = open_registration(registration_id, lms, price, cause="pre-approval")
        db.session.commit()
    return _preapproval_page(reg)


class _Busy(Exception):
    """Every LTIaaS lookup slot of this process is taken."""


def _look_up(registration_id: str):
    """Which LMS registers (LTIaaS) and the price (Stripe), in one of this process's lookup slots, so
    that a slow LTIaaS holds at most LTIAAS_LOOKUP_CONCURRENCY threads; never waits for a slot."""
    with throttling.lookup_slot() as free:
        if not free:
            raise _Busy
        return (
            ltiaas.client().get_registration(registration_id),
            payments.gateway().get_price(current_app.config["SETTINGS"].stripe_price_id),
        )


def _expired():
    return _page(
        _("Registration expired"),
        _("This registration has expired, was abandoned or is already finished.") + " " + restart(),
        410,
    )


def _too_many(retry_url: str, reg=None):
    body, status = _page(
        _("Too many requests"),
        _("Too many requests came from your network just now. Wait a minute, then try again."),
        429,
        reg,
        retry_url=retry_url,
    )
    return body, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}


def _busy(retry_url: str):
    body, status = _page(
        _("Busy"), _("The registration service is busy. Try again in a moment."), 503, retry_url=retry_url
    )
    return body, status, {"Retry-After": str(throttling.BUSY_RETRY_AFTER_SECONDS)}


def _not_sellable():
    return _page(
        _("Not available"),
        _(
            "Registration is not available right now: the vendor's payment settings "
            "are incomplete. Please contact the vendor."
        ),
        503,
    )


def _preapproval_page(
    reg: Registration | FlowView,
    status: int = 200,
    invoice_error: str | None = None,
    invoice_field: str | None = None,
    answers=None,
):
    settings = current_app.config["SETTINGS"]
    offer_invoice = (
        settings.invoicing
        and reg.state == State.PENDING.value
        and (reg.licence is None or (reg.licence.kind == "invoice" and reg.licence.invoice_sent_at is None))
    )
    return languages.render_page(
        "preapproval.html",
        reg=reg,
        identity=identity.of(reg),
        lms_name=identity.lms_name(reg),
        pay_label=languages.pay_label(reg.amount, reg.currency, reg.price_interval),
        status=frame_status(reg),
        pay_url=url_for("flow.pay", token=reg.flow_token),
        status_url=url_for("flow.status", token=reg.flow_token),
        invoice_days=settings.invoice_days_until_due,
        offer_invoice=offer_invoice,
        invoice_url=url_for("flow.invoice", token=reg.flow_token) if offer_invoice else None,
        invoice_form_id=invoicing.new_form_id(reg) if offer_invoice else None,
        invoice_error=invoice_error,
        invoice_field=invoice_field,
        answers=answers or {},
        limits={"email": invoicing.EMAIL_MAX, "organisation": invoicing.ORGANISATION_MAX, "po": invoicing.PO_MAX},
    ), status


@bp.post("/flow/<token>/invoice")
def invoice(token: str):
    """The admin chose to pay by invoice, in the frame (CSRF-exempt: see paygate/web/operator/auth.py)."""
    reg = _registration(token)
    if not current_app.config["SETTINGS"].invoicing:
        return _page(_("Not offered"), _("Paying by invoice is not offered for this tool."), 400, reg)
    answers = {k: (request.form.get(k) or "")[:200] for k in ("billing_email", "organisation", "po_number")}
    if not throttling.allow(throttling.INVOICE):  # each sending may make a Customer and an Invoice at Stripe
        page, status = _preapproval_page(
            reg,
            429,
            answers=answers,
            invoice_error=_(
                "Too many requests came from your network just now. Wait a minute, then send the form again."
            ),
        )
        return page, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    try:
        invoicing.request_invoice(reg, request.form)
    except invoicing.InvoiceRefused as exc:
        db.session.rollback()
        return _preapproval_page(reg, exc.status, invoice_error=str(exc), invoice_field=exc.field, answers=answers)
    except payments.PaymentProviderError:
        db.session.rollback()
        return _preapproval_page(
            reg,
            503,
            answers=answers,
            invoice_error=_(
                "We could not reach the payment service to make your invoice. Send the form again in a moment: "
                "nothing is made twice."
            ),
        )
    return redirect(url_for("flow.pre_approval", registrationId=reg.registration_id), 303)


@bp.get("/flow/<token>/status")
def status(token: str):
    """Polled by the frame: what to show, and the completion html once it exists."""
    view = flow_view(token=token) if _TOKEN.match(token) else None
    if view is None:
        abort(404, description=_unknown_link())
    return jsonify(frame_status(view))


@bp.get("/flow/<token>/pay")
def pay(token: str):
    """The popup: send it to the registration's one open Checkout Session."""
    reg = _registration(token)
    if not throttling.allow(throttling.CHECKOUT):  # each opening may ask Stripe
        return _too_many(url_for("flow.pay", token=token), reg)
    try:
        url = open_checkout(
            reg,
            success_url=_absolute("flow.paid", token=token) + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=_absolute("flow.cancelled", token=token),
            locale=languages.checkout_locale(),
        )
    except NotPayable as exc:
        if exc.reason == "too_late":
            return _page(
                _("Registration timed out"),
                _("This registration is too old to pay for safely. Close this window.") + " " + restart(),
                409,
                reg,
            )
        if exc.reason == "invoiced":
            return _page(
                _("Paying by invoice"),
                _(
                    "An invoice was requested for this registration, so no card "
                    "payment is taken. Close this window and return to your LMS window."
                ),
                409,
                reg,
                close=True,
                show_support=False,
            )
        if exc.reason == "processing":
            return _page(
                _("Payment processing"),
                _(
                    "Your payment is still being processed, so no second payment "
                    "is taken. Close this window and return to your LMS window."
                ),
                409,
                reg,
                close=True,
                show_support=False,
            )
        return _page(
            _("Already paid"),
            _("This registration needs no payment now. Close this window and return to your LMS."),
            409,
            reg,
            close=True,
            show_support=False,
        )
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        if exc.http_status in (400, 403, 404):  # Stripe refuses what we sell: no retry will help
            log.error("Stripe refused to open a Checkout Session (http %s): check STRIPE_PRICE_ID", exc.http_status)
            return _not_sellable()
        return _page(
            _("Payment service busy"),
            _("We could not open the payment page. Try again: you will not be charged twice."),
            503,
            reg,
            retry_url=url_for("flow.pay", token=token),
        )
    return redirect(url, 303)


@bp.get("/flow/<token>/paid")
def paid(token: str):
    """Stripe's success return, in the popup: the URL proves nothing, so ask Stripe."""
    reg = _registration(token)
    session_id = request.args.get("session_id", "")
    if not payments.valid_session_id(session_id):
        return _page(
            _("Payment not recognised"), _("This payment link is damaged. Return to your LMS window."), 400, reg
        )
    owner = db.session.scalars(
        select(CheckoutSession.registration_pk).where(CheckoutSession.session_id == session_id)
    ).first()
    if owner != reg.id:  # Stripe is asked only about sessions this registration opened
        return _page(
            _("Payment not recognised"),
            _(
                "This payment link does not belong to this registration. "
                "Return to your LMS window: a payment made there finishes the registration by itself."
            ),
            400,
            reg,
        )
    if not throttling.allow(throttling.RETURN, str(reg.id)):  # each return asks Stripe
        body, status = _page(
            _("Payment being confirmed"),
            _(
                "Return to your LMS window: the registration "
                "finishes there by itself once Stripe confirms your payment. This window can be "
                "closed."
            ),
            429,
            reg,
            close=True,
            show_support=False,
        )
        return body, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    try:
        outcome = fulfil_checkout(session_id, cause="success return", complete_now=False)
    except payments.PaymentProviderError:
        db.session.rollback()
        return _page(
            _("Payment being confirmed"),
            _(
                "We could not confirm the payment with Stripe just now. If "
                "you paid, the registration finishes by itself in your LMS window."
            ),
            503,
            reg,
        )
    if outcome.registration is None or outcome.registration.id != reg.id:
        return _page(_("Payment not recognised"), _("This payment does not belong to this registration."), 400, reg)
    if outcome.paid:  # completed after this answer: the admin is not kept waiting on LTIaaS
        page, code = _page(
            _("Payment received"),
            _(
                "Thank you: your payment was received. Return to your LMS "
                "window; the registration finishes there. This window can be closed."
            ),
            200,
            reg,
            close=True,
        )
        return after_answer(make_response(page, code), complete_later(reg.id, "success return"))
    if outcome.note == "processing":
        return _page(
            _("Payment processing"),
            _(
                "Your payment is being processed. Return to your LMS window: "
                "the registration finishes there once the payment is confirmed."
            ),
            200,
            reg,
            close=True,
        )
    return _page(
        _("Payment not completed"),
        _("The payment was not completed. Return to your LMS window to try again."),
        409,
        reg,
        close=True,
        show_support=False,
    )


@bp.get("/flow/<token>/cancel")
def cancelled(token: str):
    """Stripe's cancel return: tell the frame, keep the session for a retry."""
    reg = _registration(token)
    session = reg.checkout_sessions[-1] if reg.checkout_sessions else None
    if session is not None and session.status == "open" and session.canceled_at is None:
        session.canceled_at = utcnow()
        record(
            reg,
            "payment",
            cause="cancel return",
            message="The admin left Checkout without paying.",
            details={"session": session.session_id},
        )
        db.session.commit()
    return _page(
        _("Payment cancelled"),
        _("No payment was made. Return to your LMS window to pay, or close it to stop the registration."),
        200,
        reg,
        close=True,
    )
