"""Paying a licence on its licence page: the pay form's offers, `pay` (to Checkout, in this top-level page) and
`paid` (Stripe's success return: asked of Stripe and recorded before the answer, then back to the licence page
with `?notice=` `paid`, `processing`, `unpaid` or `confirming`: Stripe could not be asked, the webhook finishes it).

The key is in the page's URL but never in one given to Stripe: the return URLs carry the licence page's
one-hour link (`Held.link()`). The pay form needs no CSRF token: its URL holds the key or the link, which a
forging site cannot know, and the licence page sends no Referer (`no-referrer`) that a token check could ask for.
"""

import logging

from flask import redirect, request
from markupsafe import Markup
from sqlalchemy import select

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession, Licence
from paygate.gateways import payments
from paygate.sales import licence_checkout, offers
from paygate.sales.checkout import NotPayable
from paygate.sales.fulfilment import after_payment, fulfil_checkout
from paygate.web import throttling
from paygate.web.after_answer import after_answer
from paygate.web.flow import choice as choice_text
from paygate.web.flow.pages import message_page
from paygate.web.licence import Held, bp, by_link, held

log = logging.getLogger(__name__)


@bp.app_template_global("licence_payment")
def licence_payment(licence: Licence) -> dict | None:
    """What the licence page's pay form shows (paygate/templates/_licence_pay.html): None when the licence has
    nothing to pay; else the offers and seat field (`choice`), or `unavailable` when Stripe cannot be asked."""
    if not licence_checkout.payable(licence):
        return None
    try:
        on_sale = offers.available()
    except (payments.PriceNotSellable, payments.PaymentProviderError):
        return {"choice": Markup(""), "unavailable": _("Paying is not possible just now. Try again later.")}
    return {"choice": choice_text.choice_markup(on_sale, offers.current_choice(licence, on_sale)), "unavailable": None}


@bp.post("/<key>/pay")
@bp.post("/m/<token>/pay")
def pay(key=None, token=None):
    """The admin's offer and seats, checked, then to a Checkout Session that pays this licence."""
    found = held(key, token)
    return _pay(found) if isinstance(found, Held) else found


def _pay(held: Held):
    """The admin's offer and seats, checked, then to a Checkout Session that pays this licence."""
    if not throttling.allow(throttling.CHECKOUT):  # each opening may ask Stripe
        return message_page(
            _("Too many requests"),
            _("Too many requests came from your network just now. Wait a minute, then try again."),
            429,
        )
    try:
        on_sale = offers.available()
        chosen = offers.choose(on_sale, request.form.get("offer"), request.form.get("seats"))
    except offers.ChoiceRefused as exc:  # nothing is made at Stripe
        return message_page(_("Check your choice"), offers.refusal(exc), 400)
    except (payments.PriceNotSellable, payments.PaymentProviderError):
        return _busy()
    link = held.link()
    token = link.rsplit("/", 1)[1]
    try:
        url = licence_checkout.open_for_licence(
            held.licence,
            chosen,
            success_url=link.rsplit("/m/", 1)[0] + f"/paid/{token}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=link,
            locale=languages.checkout_locale(),
            organisation_label=_("School or organisation"),
        )
    except NotPayable as exc:
        if exc.reason == "processing":
            return message_page(
                _("Payment processing"),
                _("A payment for this licence is still being processed, so no second payment is taken."),
                409,
            )
        return message_page(_("Nothing to pay"), _("This licence is paid and active: there is nothing to pay."), 409)
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        if exc.http_status in (400, 403, 404):
            log.error("Stripe refused a licence page's Checkout Session (http %s)", exc.http_status)
        return _busy()
    return redirect(url, 303)


def _busy():
    return message_page(
        _("Payment service busy"),
        _("We could not open the payment page. Try again: you will not be charged twice."),
        503,
    )


@bp.get("/paid/<token>")
def paid(token: str):
    """Stripe's success return for a licence page's session: the URL proves nothing, so Stripe is asked; the
    payment is recorded, then the admin goes back to the licence page (a fresh one-hour link) with a notice."""
    found = by_link(token)
    if not isinstance(found, Held):
        return found
    session_id = request.args.get("session_id", "")
    owner = None
    if payments.valid_session_id(session_id):
        owner = db.session.scalars(
            select(CheckoutSession).where(
                CheckoutSession.session_id == session_id,
                CheckoutSession.registration_pk == found.licence.registration_pk,
                CheckoutSession.generation < 0,
            )
        ).first()
    if owner is None:  # Stripe is asked only about sessions this licence's page opened
        return message_page(_("Payment not recognised"), _("This payment link does not belong to this licence."), 400)
    if not throttling.allow(throttling.RETURN, f"licence-{found.licence.id}"):  # each return asks Stripe
        return redirect(found.link() + "?notice=confirming", 303)
    try:
        outcome = fulfil_checkout(session_id, cause="licence page return", complete_now=False)
    except payments.PaymentProviderError:
        db.session.rollback()
        return redirect(found.link() + "?notice=confirming", 303)
    if outcome.licence_pk != found.licence.id:
        return message_page(_("Payment not recognised"), _("This payment does not belong to this licence."), 400)
    notice = "paid" if outcome.paid else "processing" if outcome.note == "processing" else "unpaid"
    back = redirect(f"{found.link()}?notice={notice}", 303)
    if outcome.paid:  # LTIaaS is told after the answer: the admin is not kept waiting on it
        return after_answer(back, after_payment(outcome, "licence page return"))
    return back
