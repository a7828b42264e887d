"""The pay-by-invoice form: what the admin may write (one sentence per refusal, in the admin's language), the
cap on requests per billing e-mail domain, and the form's one-time id. Nothing here calls Stripe; the
invoice itself is made by paygate/sales/invoicing.py."""

import logging
import re
import secrets
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from babel import Locale
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select

from paygate.core.db import db, utcnow
from paygate.core.languages import N_
from paygate.core.languages import gettext as _
from paygate.core.models import Licence, Registration
from paygate.gateways import payments
from paygate.sales import offers

log = logging.getLogger(__name__)

EMAIL_MAX, ORGANISATION_MAX, PO_MAX = 254, 120, 140  # PO: Stripe's custom field value limit
CODE_MAX, POSTAL_MAX = 100, 20
_POSTAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]{0,18}[A-Za-z0-9]?$")
# CLDR's two-letter codes that are no country (groupings, "unknown").
NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "XA", "XB", "XK", "ZZ"})
_FORM_SALT = "paygate-invoice-form"


class InvoiceRefused(Exception):
    """The form cannot be accepted; the message is one sentence for the admin, `field` names where,
    `status` is the HTTP status of the page that says so."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass(frozen=True)
class InvoiceForm:
    billing_email: str
    organisation: str
    po_number: str | None
    promotion_code: str | None = None  # as typed (PROMOTION_CODES); checked at Stripe by the caller
    country: str | None = None  # ISO 3166 alpha-2 (STRIPE_TAX)
    postal_code: str | None = None


# Each field's refusals, whole sentences for the catalogs (paygate/translations), in the admin's language.
_REFUSALS = {
    "billing_email": (
        N_("Enter the billing e-mail address."),
        N_("The billing e-mail address is too long: at most %(maximum)d characters."),
        N_("The billing e-mail address cannot contain line breaks, control characters or the signs < and >."),
    ),
    "organisation": (
        N_("Enter the name of your school or organisation."),
        N_("The name of your school or organisation is too long: at most %(maximum)d characters."),
        N_(
            "The name of your school or organisation cannot contain line breaks, control characters "
            "or the signs < and >."
        ),
    ),
    "po_number": (
        N_("Enter the purchase-order number."),
        N_("The purchase-order number is too long: at most %(maximum)d characters."),
        N_("The purchase-order number cannot contain line breaks, control characters or the signs < and >."),
    ),
}


def _clean(value, field: str, maximum: int, required: bool) -> str | None:
    missing, too_long, forbidden = _REFUSALS[field]
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise InvoiceRefused(_(missing), field)
        return None
    if len(text) > maximum:
        raise InvoiceRefused(_(too_long, maximum=maximum), field)
    # Line breaks, control and invisible characters, and markup never reach Stripe, a page or a log.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp") for c in text) or "<" in text or ">" in text:
        raise InvoiceRefused(_(forbidden), field)
    return text


# Organisation and PO number go into the invoice Stripe e-mails from the vendor's account: they must not
# carry a way to reach someone ("URGENT: pay at https://evil.example", "call +1 555 123 4567").
_CONTACT_REFUSALS = {
    "organisation": N_(
        "The name of your school or organisation cannot contain a web address, an e-mail address or a phone number."
    ),
    "po_number": N_("The purchase-order number cannot contain a web address, an e-mail address or a phone number."),
}
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_WEB = re.compile(
    r"[a-z][a-z0-9+.-]*:/|\bwww\.|(?<![\w.@-])" + _LABEL + r"(?:\." + _LABEL + r")*\.[^\W\d_]{2,24}(?!\w)",
    re.IGNORECASE,
)  # a scheme, www., or a name.tld
_EMAIL = re.compile(r"[^\s@]@[^\s@]")
_PHONE = re.compile(
    r"\+\s*\(?\d(?:[\s().-]*\d){6,}"  # +1 555 123 4567, +44 (0)20 7946 0958
    r"|\(\d{1,5}\)[\s.-]*\d(?:[\s.-]?\d){3,}"  # (555) 123-4567
    r"|(?<!\d)\d{3}[\s.-]\d{3}[\s.-]\d{4}(?!\d)"  # 555-123-4567, 555.123.4567
    r"|\b(?:tel|phone|call|fax|mobile|whatsapp)\b\W{0,3}\+?\d",
    re.IGNORECASE,
)  # tel. 020 7946 0958
# An organisation's name has no run of seven digits (a PO number may: PO-2024-117, 4500012345).
_DIGITS = re.compile(r"\d(?:[\s().-]?\d){6,}")


def _refuse_contact(text: str | None, field: str) -> None:
    if text and (
        _WEB.search(text)
        or _EMAIL.search(text)
        or _PHONE.search(text)
        or (field == "organisation" and _DIGITS.search(text))
    ):
        raise InvoiceRefused(_(_CONTACT_REFUSALS[field]), field)


def check_form(form) -> InvoiceForm:
    """The admin's answers, or InvoiceRefused with the first problem."""
    email = _clean(form.get("billing_email"), "billing_email", EMAIL_MAX, True)
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvoiceRefused(
            _("The billing e-mail address is not one an invoice can be sent to; check it."), "billing_email"
        ) from None
    organisation = _clean(form.get("organisation"), "organisation", ORGANISATION_MAX, True)
    _refuse_contact(organisation, "organisation")
    po_number = _clean(form.get("po_number"), "po_number", PO_MAX, False)
    _refuse_contact(po_number, "po_number")
    settings = current_app.config["SETTINGS"]
    code = _code(form.get("promotion_code")) if settings.promotion_codes else None
    country, postal_code = _location(form) if settings.stripe_tax else (None, None)
    return InvoiceForm(email, organisation, po_number, code, country, postal_code)


def _code(value) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    # Stripe's codes are letters, digits and dashes, at most 100: anything else is no code (and never sent).
    if len(text) > CODE_MAX or not payments.valid_code(text):
        raise InvoiceRefused(
            _("This promotion code is not valid. Check it, or leave the field empty."), "promotion_code"
        )
    return text


def _location(form) -> tuple[str, str | None]:
    """The billing country and postal code that Stripe Tax needs (a postal code in the US and Canada)."""
    country = form.get("country")
    country = country.strip().upper() if isinstance(country, str) else ""
    if len(country) != 2 or country in NOT_COUNTRIES or country not in Locale.parse("en").territories:
        raise InvoiceRefused(_("Choose the country of your billing address."), "country")
    postal = form.get("postal_code")
    postal = postal.strip() if isinstance(postal, str) else ""
    if postal and (len(postal) > POSTAL_MAX or not _POSTAL.match(postal)):
        raise InvoiceRefused(_("The postal code can contain only letters, digits, spaces and dashes."), "postal_code")
    if not postal and country in ("US", "CA"):
        raise InvoiceRefused(_("Enter the postal code of your billing address."), "postal_code")
    return country, postal or None


# At most INVOICE_REQUESTS_PER_DOMAIN_PER_DAY invoice licences per billing e-mail domain in 24 hours,
# counted in the database: exact across processes and restarts, and never waved through when a rate
# store is down (the rate store lets the flow pass then). Counted again under a lock per domain after
# this request's licence is written, so that simultaneous requests cannot all pass.

_CAPPED = N_(
    "Too many invoices were requested today for e-mail addresses at %(domain)s. Pay by card, or try again tomorrow."
)


def billing_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def _requests_today(domain: str) -> int:
    pattern = "%@" + domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return db.session.scalar(
        select(func.count())
        .select_from(Licence)
        .where(
            Licence.kind == "invoice",
            Licence.created_at >= utcnow() - timedelta(days=1),
            func.lower(Licence.billing_email).like(pattern, escape="\\"),
        )
    )


def refuse_if_domain_capped(email: str, counted: bool, more=None) -> None:
    """InvoiceRefused (429) once the e-mail's domain had its invoice requests of the day; `counted` when
    this request's own licence, written in this transaction under the domain's lock, is among them; `more(domain)`
    counts requests made elsewhere (a licence page's)."""
    domain = billing_domain(email)
    cap = current_app.config["SETTINGS"].invoice_requests_per_domain_per_day
    if _requests_today(domain) + (more(domain) if more else 0) > (cap if counted else cap - 1):
        log.warning("pay by invoice: %s invoice requests for one billing domain in 24 hours reached; refused", cap)
        raise InvoiceRefused(_(_CAPPED, domain=domain), "billing_email", status=429)


# The form's one-time id: signed (the frame has no cookies for a CSRF token), bound to the registration.


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_FORM_SALT)


def new_form_id(reg: Registration) -> str:
    return _serializer().dumps({"r": reg.id, "n": secrets.token_urlsafe(12)})


def form_nonce(reg: Registration, form_id: str | None) -> str:
    """The nonce of a form id issued for this registration within its window, or InvoiceRefused."""
    window = current_app.config["SETTINGS"].registration_window_minutes * 60
    try:
        data = _serializer().loads(form_id or "", max_age=window)
    except BadSignature:
        raise InvoiceRefused(_("This form has expired. Reload the page and send it again.")) from None
    if not isinstance(data, dict) or data.get("r") != reg.id or not isinstance(data.get("n"), str):
        raise InvoiceRefused(_("This form has expired. Reload the page and send it again."))
    return data["n"]


# The request.


def promotion_for(code: str | None, chosen) -> payments.PromotionCode | None:
    """The promotion code typed in an invoice form (the frame's or the licence page's), looked up at Stripe with no
    transaction open (commits) and checked for the offer and amount chosen; InvoiceRefused when it cannot be used."""
    if not code:
        return None
    db.session.commit()  # no transaction stays open while Stripe is asked
    promo = payments.gateway().find_promotion_code(code)
    price = chosen.offer.price
    if promo is None or not promo.usable_for(price, chosen.amount, price.currency, utcnow()):
        raise InvoiceRefused(
            _(
                "This promotion code cannot be used for this offer: it is unknown, expired or used up, "
                "or meant for another offer."
            ),
            "promotion_code",
        )
    return promo


@contextmanager
def choice_refused():
    """An offer or a number of seats that cannot be sold, said as the invoice form's sentence (on the seats)."""
    try:
        yield
    except offers.ChoiceRefused as exc:
        raise InvoiceRefused(offers.refusal(exc), "seats") from None
    except payments.PriceNotSellable:
        raise InvoiceRefused(_("This offer is not on sale. Choose one of the offers shown."), "seats") from None


def bought(chosen, promo: payments.PromotionCode | None, answers: InvoiceForm) -> dict:
    """What an invoice form buys, as the licence stores it: the offer, its seats, the code and the billing place."""
    return {
        "price_id": chosen.offer.id,
        "quantity": chosen.quantity,
        "seat_unit": chosen.offer.seat_unit,
        "promotion_code": promo.code if promo else None,
        "promotion_code_id": promo.id if promo else None,
        "billing_country": answers.country,
        "billing_postal_code": answers.postal_code,
    }
