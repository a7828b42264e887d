"""The payment popup: `pay` opens (or reuses) the Checkout Session and sends the popup to Stripe; `paid` is
Stripe's success return, asked of Stripe and recorded before it answers; `cancelled` says what to do next.
The frame learns the outcome from the server (its status poll), never from the popup."""

import logging

from flask import make_response, redirect, request, url_for
from sqlalchemy import select

from paygate.core import languages
from paygate.core.db import db, utcnow
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.sales import offers
from paygate.sales.checkout import NotPayable, open_checkout
from paygate.sales.fulfilment import complete_later, fulfil_checkout
from paygate.web import throttling
from paygate.web.after_answer import after_answer
from paygate.web.flow import confirmation
from paygate.web.flow.pages import absolute, bp, message_page, not_sellable, registration, too_many
from paygate.web.flow.status import restart

log = logging.getLogger(__name__)


@bp.get("/flow/<token>/pay")
def pay(token: str):
    """The popup: send it to the registration's one open Checkout Session."""
    reg = registration(token)
    asked = {k: request.args.get(k) for k in ("offer", "seats") if k in request.args}
    if not throttling.allow(throttling.CHECKOUT):  # each opening may ask Stripe
        return too_many(url_for("flow.pay", token=token, **asked), reg)
    try:
        on_sale = offers.available()
        # Without a choice in the URL (a link kept from before): what the registration was last priced at.
        chosen = offers.choose(on_sale, asked.get("offer"), asked.get("seats")) if asked else None
    except offers.ChoiceRefused as exc:  # nothing is made at Stripe
        return message_page(_("Check your choice"), offers.refusal(exc) + " " + close_and_retry(), 400, reg)
    except payments.PriceNotSellable:
        return not_sellable()
    except payments.PaymentProviderError:
        return _busy(reg, token, asked)
    try:
        url = open_checkout(
            reg,
            success_url=absolute("flow.paid", token=token) + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=absolute("flow.cancelled", token=token),
            locale=languages.checkout_locale(),
            choice=chosen,
            organisation_label=_("School or organisation"),
        )
    except NotPayable as exc:
        if exc.reason == "too_late":
            return message_page(
                _("Registration timed out"),
                _("This registration is too old to pay for safely. Close this window.") + " " + restart(),
                409,
                reg,
            )
        if exc.reason == "invoiced":
            return message_page(
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
            return message_page(
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
        return message_page(
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
            return not_sellable()
        return _busy(reg, token, asked)
    return redirect(url, 303)


def _busy(reg, token: str, asked: dict):
    """Stripe could not be asked: try again, with the same choice (nothing is made twice)."""
    return message_page(
        _("Payment service busy"),
        _("We could not open the payment page. Try again: you will not be charged twice."),
        503,
        reg,
        retry_url=url_for("flow.pay", token=token, **asked),
    )


def close_and_retry() -> str:
    """The end of a refusal in the popup: the choice is made in the frame."""
    return _("Close this window, correct it in your LMS window and press Pay again.")


@bp.get("/flow/<token>/paid")
def paid(token: str):
    """Stripe's success return, in the popup: the URL proves nothing, so ask Stripe."""
    reg = registration(token)
    session_id = request.args.get("session_id", "")
    if not payments.valid_session_id(session_id):
        return message_page(
            _("Payment not recognised"), _("This payment link is damaged. Return to your LMS window."), 400, reg
        )
    owner = db.session.scalars(
        select(CheckoutSession.registration_pk).where(CheckoutSession.session_id == session_id)
    ).first()
    if owner != reg.id:  # Stripe is asked only about sessions this registration opened
        return message_page(
            _("Payment not recognised"),
            _(
                "This payment link does not belong to this registration. "
                "Return to your LMS window: a payment made there finishes the registration by itself."
            ),
            400,
            reg,
        )
    if not throttling.allow(throttling.RETURN, str(reg.id)):  # each return asks Stripe
        body, status = message_page(
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
        return message_page(
            _("Payment being confirmed"),
            _(
                "We could not confirm the payment with Stripe just now. If "
                "you paid, the registration finishes by itself in your LMS window."
            ),
            503,
            reg,
        )
    if outcome.registration is None or outcome.registration.id != reg.id:
        return message_page(
            _("Payment not recognised"), _("This payment does not belong to this registration."), 400, reg
        )
    if outcome.paid:  # completed after this answer: the admin is not kept waiting on LTIaaS
        # The confirmation stays (the key, its licence page, the reference): this window no longer closes itself.
        page, code = message_page(
            _("Payment received"),
            _(
                "Thank you: your payment was received. Keep the details below; the registration finishes in "
                "your LMS window, where you press Finish."
            ),
            200,
            reg,
            confirmation=confirmation.render(reg, finish=False),
        )
        return after_answer(make_response(page, code), complete_later(reg.id, "success return"))
    if outcome.note == "processing":
        return message_page(
            _("Payment processing"),
            _(
                "Your payment is being processed. Return to your LMS window: "
                "the registration finishes there once the payment is confirmed."
            ),
            200,
            reg,
            close=True,
        )
    return message_page(
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
    reg = registration(token)
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
    return message_page(
        _("Payment cancelled"),
        _("No payment was made. Return to your LMS window to pay, or close it to stop the registration."),
        200,
        reg,
        close=True,
    )
