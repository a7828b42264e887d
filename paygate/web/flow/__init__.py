"""The LMS admin's flow: the frame LTIaaS sends to us (the payment popup it opens is in `popup`).

No state lives in cookies (they are third-party in the frame); the flow token in the URL names the
registration, and the frame learns every outcome by asking the server.
"""

import logging

from flask import abort, current_app, jsonify, redirect, request, url_for

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import Registration, State
from paygate.core.registrations import open_registration
from paygate.gateways import ltiaas, payments
from paygate.licensing import platforms
from paygate.sales import invoice_form, invoicing, offers
from paygate.web import identity, throttling
from paygate.web.flow import choice, confirmation, without_payment
from paygate.web.flow.countries import countries
from paygate.web.flow.pages import (
    TOKEN,
    bp,
    busy,
    expired,
    flow_url,
    message_page,
    not_sellable,
    registration,
    retry_url,
    too_many,
    unknown_link,
)
from paygate.web.flow.status import FlowView, flow_view, frame_status, restart

log = logging.getLogger(__name__)


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
        return message_page(
            _("Registration link not valid"),
            _("This registration link has no registration id, so the LMS cannot be registered.") + " " + restart(),
            400,
        )
    if not ltiaas.valid_id(registration_id):
        return message_page(
            _("Registration link not valid"),
            _("This registration link is incomplete or damaged.") + " " + restart(),
            400,
        )
    reg = flow_view(registration_id=registration_id)  # a repeat visit: one read of what the page shows
    if reg is None:
        # A new id costs LTIaaS and Stripe calls: an id LTIaaS refused lately is answered from memory,
        # and each client address may start only so many lookups.
        if throttling.known_dead(registration_id):
            return expired()
        if not throttling.allow(throttling.LOOKUP):
            return too_many(retry_url(registration_id))
        db.session.commit()  # no transaction stays open while LTIaaS and Stripe are asked
        try:
            lms, on_sale = _look_up(registration_id)
        except _Busy:
            return busy(retry_url(registration_id))
        except ltiaas.UnusableLms as exc:  # nothing stored; asking again gives the same answer
            log.warning("pre-approval: %s", exc)
            return message_page(
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
            return message_page(
                _("Registration service answered unexpectedly"),
                _(
                    "The registration service "
                    "answered in a way we did not expect, so nothing was saved. Try again in a moment; "
                    "if this keeps happening, please contact the vendor."
                ),
                502,
                retry_url=retry_url(registration_id),
            )
        except ltiaas.LtiaasError as exc:
            if exc.status in (401, 403):
                log.error("pre-approval: LTIaaS refused our API key (%s): check LTIAAS_API_KEY", exc.status)
                return message_page(
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
                return expired()
            return message_page(
                _("Registration service unavailable"),
                _("We could not reach the registration service. Try again in a moment."),
                502,
                retry_url=retry_url(registration_id),
            )
        except payments.PriceNotSellable:
            return not_sellable()
        except payments.PaymentProviderError:
            return message_page(
                _("Payment service unavailable"),
                _("We could not reach the payment service. Try again in a moment."),
                502,
                retry_url=retry_url(registration_id),
            )
        first = on_sale[0]
        reg = open_registration(
            registration_id, lms, first.price, "pre-approval", first.first_quantity, first.seat_unit
        )
        db.session.commit()
    return _preapproval_page(reg)


def _chosen(reg, on_sale, answers: dict) -> offers.Choice:
    """The choice the page shows: the one a refused invoice form carried (so that its correction is invoiced for
    it), else the registration's."""
    if answers.get("offer"):
        try:
            return offers.choose(on_sale, answers["offer"], answers.get("seats") or None)
        except offers.ChoiceRefused:
            pass
    return offers.current_choice(reg, on_sale)


class _Busy(Exception):
    """Every LTIaaS lookup slot of this process is taken."""


def _look_up(registration_id: str):
    """Which LMS registers (LTIaaS) and the price (Stripe), in one of this process's lookup slots, so
    that a slow LTIaaS holds at most LTIAAS_LOOKUP_CONCURRENCY threads; never waits for a slot."""
    with throttling.lookup_slot() as free:
        if not free:
            raise _Busy
        return ltiaas.client().get_registration(registration_id), offers.available()


def _preapproval_page(
    reg: Registration | FlowView,
    status: int = 200,
    invoice_error: str | None = None,
    invoice_field: str | None = None,
    answers=None,
    **said,
):
    """The frame's page; `said` carries a refused key's or pilot's sentence (key_error, key_link, pilot_error)."""
    settings = current_app.config["SETTINGS"]
    answers = answers or {}
    if reg.state != State.PENDING.value:
        # Paid, completed, refunded...: what was bought is stored; no offer is read, Stripe may be down.
        on_sale, chosen, rows, quote = [], None, [], choice.stored_quote(reg)
    else:
        try:
            on_sale = offers.available()
        except payments.PriceNotSellable:
            return not_sellable()
        except payments.PaymentProviderError:
            return message_page(
                _("Payment service unavailable"),
                _("We could not reach the payment service. Try again in a moment."),
                502,
                retry_url=retry_url(reg.registration_id),
            )
        chosen = _chosen(reg, on_sale, answers)
        rows, quote = choice.offer_rows(on_sale), choice.quote(chosen)
    offer_invoice = (
        settings.invoicing
        and reg.state == State.PENDING.value
        and (reg.licence is None or (reg.licence.kind == "invoice" and reg.licence.invoice_sent_at is None))
    )
    pending = reg.state == State.PENDING.value
    status_now = frame_status(reg)
    return languages.render_page(
        "preapproval.html",
        reg=reg,
        key_url=flow_url(reg.flow_token, "key") if pending else None,
        pilot_url=flow_url(reg.flow_token, "pilot") if pending and platforms.pilot_allowed(reg) else None,
        pilot_days=settings.pilot_days,
        confirmation=confirmation.render(registration(reg.flow_token), finish=True)
        if status_now["phase"] == "done"
        else None,
        **said,
        identity=identity.of(reg),
        lms_name=identity.lms_name(reg),
        pay_label=quote["pay_label"],
        quote=quote,
        offers=rows,
        chosen=chosen,
        choice_markup=choice.choice_markup(on_sale, chosen),
        quote_url=flow_url(reg.flow_token, "quote"),
        invoice_terms=choice.invoice_terms() if offer_invoice else [],
        countries=countries() if offer_invoice and settings.stripe_tax else [],
        promotion_codes=settings.promotion_codes,
        status=status_now,
        pay_url=flow_url(reg.flow_token, "pay"),
        status_url=flow_url(reg.flow_token, "status"),
        invoice_days=settings.invoice_days_until_due,
        offer_invoice=offer_invoice,
        invoice_url=url_for("flow.invoice", token=reg.flow_token) if offer_invoice else None,
        invoice_form_id=invoice_form.new_form_id(reg) if offer_invoice else None,
        invoice_error=invoice_error,
        invoice_field=invoice_field,
        answers=answers,
        limits={
            "email": invoice_form.EMAIL_MAX,
            "organisation": invoice_form.ORGANISATION_MAX,
            "po": invoice_form.PO_MAX,
            "code": invoice_form.CODE_MAX,
            "postal": invoice_form.POSTAL_MAX,
        },
    ), status


@bp.post("/flow/<token>/invoice")
def invoice(token: str):
    """The admin chose to pay by invoice, in the frame (CSRF-exempt: see paygate/web/operator/auth.py)."""
    reg = registration(token)
    if not current_app.config["SETTINGS"].invoicing:
        return message_page(_("Not offered"), _("Paying by invoice is not offered for this tool."), 400, reg)
    answers = {
        k: (request.form.get(k) or "")[:200]
        for k in (
            "billing_email",
            "organisation",
            "po_number",
            "promotion_code",
            "country",
            "postal_code",
            "offer",
            "seats",
        )
    }
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
    except invoice_form.InvoiceRefused as exc:
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


@bp.get("/flow/<token>/quote")
def quote(token: str):
    """What the chosen offer and number of seats cost, said in the admin's language (the frame asks as the admin
    types); a choice that cannot be sold gets its sentence. Reads the Prices as cached (Stripe only once their
    cache time is up, as the page does); makes nothing at Stripe."""
    registration(token)
    try:
        on_sale = offers.available()
        chosen = offers.choose(on_sale, request.args.get("offer"), request.args.get("seats"))
    except offers.ChoiceRefused as exc:
        return jsonify(error=choice.refusal(exc)), 400
    except (payments.PriceNotSellable, payments.PaymentProviderError):
        return jsonify(error=_("We could not reach the payment service. Try again in a moment.")), 503
    return jsonify(choice.quote(chosen))


@bp.get("/flow/<token>/status")
def status(token: str):
    """Polled by the frame: what to show, and the completion html once it exists."""
    view = flow_view(token=token) if TOKEN.match(token) else None
    if view is None:
        abort(404, description=unknown_link())
    body = frame_status(view)
    if body["phase"] == "done":  # read once, when the poll stops: never on the pending poll
        body["confirmation"] = confirmation.render(registration(token), finish=True)
    return jsonify(body)


@bp.post("/flow/<token>/key")
def key(token: str):
    """The admin typed the key of a licence the school has (CSRF-exempt: the frame has no cookie; the flow
    token in the URL names the registration)."""
    return without_payment.key(registration(token), _preapproval_page)


@bp.post("/flow/<token>/pilot")
def pilot(token: str):
    """The admin starts a free pilot (CSRF-exempt, as `key`)."""
    return without_payment.pilot(registration(token), _preapproval_page)


from paygate.web.flow import popup  # noqa: E402, F401 - its routes are on the same blueprint
