"""What the licence page says of a licence, in the admin's language: its status in one word (the one place
that turns `access.decide` and the licence's facts into active, pilot, payment due, lapsed, refunded,
cancelled or revoked), the date that matters, what was bought, its platforms and its receipts and invoices.
It decides nothing: the access is `access.decide`'s, the range of seats the offer's.
"""

from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from paygate.core import languages
from paygate.core.db import utcnow
from paygate.core.languages import N_
from paygate.core.languages import gettext as _
from paygate.core.models import Licence, LicencePayment, Registration
from paygate.licensing import access
from paygate.sales import offers
from paygate.web import identity

WORDS = {
    "active": N_("Active"),
    "pilot": N_("Pilot until %(date)s"),
    "due": N_("Payment due %(date)s"),
    "due_undated": N_("Payment due"),
    "lapsed": N_("Lapsed"),
    "refunded": N_("Refunded"),
    "cancelled": N_("Cancelled"),
    "revoked": N_("Revoked"),
}
EXPLAINED = {
    "pilot": N_("A free pilot: your LMS has access until its end. Pay to keep it afterwards."),
    "due": N_("Your LMS keeps access while the payment is due. Pay before the date to keep it."),
    "due_undated": N_("The last payment did not go through. Your LMS keeps access while Stripe tries again."),
    "lapsed": N_("Your LMS has no access: the licence is not paid for."),
    "refunded": N_("The payment was refunded: your LMS has no access."),
    "cancelled": N_("The licence was cancelled: your LMS has no access."),
    "revoked": N_("Access was withdrawn. Contact the vendor if you think this is a mistake."),
}


@dataclass(frozen=True)
class Status:
    word: str  # active, pilot, due, lapsed, refunded, cancelled, revoked
    text: str  # in the admin's language: "Pilot until 2026-05-01"
    note: str | None  # one sentence on what it means, or None when active
    active: bool  # what the licence's own facts give (access.decide, no operator override)


@dataclass(frozen=True)
class Platform:
    lms_url: str
    lms: str  # "Canvas (cloud)", as the admin knows it
    registered: str  # the date, in the admin's language
    active: bool
    replaced: bool  # a newer platform took its place on the licence


@dataclass(frozen=True)
class Paper:
    """A receipt or an invoice: what it is, and Stripe's hosted links to it."""

    label: str
    url: str | None = None
    pdf: str | None = None


def _day(value: datetime | None) -> str:
    return languages.format_day(value) if value is not None else ""


def status(licence: Licence, now: datetime | None = None) -> Status:
    """The licence's status in words, from `access.decide` and the facts that say why."""
    settings = current_app.config["SETTINGS"]
    decision = access.decide(licence, None, now or utcnow(), settings)
    word, date = _word(licence, decision.active is True)
    key = "due_undated" if word == "due" and not date else word
    text = _(WORDS[key], date=date) if date else _(WORDS[key])
    note = _(EXPLAINED[key]) if key in EXPLAINED else None
    return Status(word, text, note, decision.active is True)


def _word(licence: Licence, active: bool) -> tuple[str, str | None]:
    current = access.current_payment(licence)
    live = [p for p in licence.platforms if p.platform_id and p.replaced_at is None]
    if live and all(p.access_override is False for p in live):
        return "revoked", None  # an operator withdrew it
    if current is not None and current.dispute_status == "lost":
        return "revoked", None  # the bank took the payment back
    if current is not None and current.fully_refunded:
        return "refunded", None
    if licence.kind == "pilot":
        return ("pilot", _day(licence.pilot_ends_at)) if active else ("lapsed", None)
    sub_status = licence.status if licence.kind == "subscription" else licence.subscription_status
    if sub_status == "canceled" or (licence.kind == "invoice" and licence.status == "void"):
        return "cancelled", None
    if not active:
        return "lapsed", None
    if sub_status == "past_due":
        return "due", None
    if licence.kind == "invoice" and licence.status != "paid":
        return "due", _day(licence.due_at) or None
    return "active", None


def when(licence: Licence, shown: Status) -> tuple[str, str] | None:
    """The date that matters now, with its label: the pilot's end, the due date or the period's end."""
    if licence.kind == "pilot" and licence.pilot_ends_at is not None:
        return _("Pilot ends"), _day(licence.pilot_ends_at)
    if shown.word == "due" and licence.due_at is not None:
        return _("Due date"), _day(licence.due_at)
    if licence.period_end is not None and shown.word in ("active", "due"):
        return _("Period ends"), _day(licence.period_end)
    return None


def price(licence: Licence, opened: Registration) -> str | None:
    """What is paid, with how often ("360.00 USD per year"); what it would cost, for a pilot."""
    amount = licence.amount if licence.amount is not None else opened.amount
    currency = licence.currency or opened.currency
    return languages.price_line(amount, currency, opened.price_interval) if amount is not None and currency else None


def seats(licence: Licence) -> str | None:
    """ "120 students", or None for an offer sold once."""
    if not licence.seat_unit or licence.quantity is None:
        return None
    units = offers.UNIT_NAMES.get(licence.seat_unit, offers.UNIT_NAMES["seat"])
    return _("%(number)s %(units)s", number=languages.number(licence.quantity), units=_(units))


def platforms(licence: Licence, now: datetime | None = None) -> list[Platform]:
    """Every LMS platform on the licence, oldest first, with its access as the licence and overrides decide it."""
    settings, now = current_app.config["SETTINGS"], now or utcnow()
    shown = []
    for reg in licence.platforms:
        decision = access.decide(licence, reg.access_override, now, settings, reg.replaced_at)
        shown.append(
            Platform(
                lms_url=reg.lms_url,
                lms=identity.lms_name(reg),
                registered=_day(reg.completed_at or reg.created_at),
                active=bool(decision.active and reg.platform_id),
                replaced=reg.replaced_at is not None,
            )
        )
    return shown


def papers(licence: Licence) -> list[Paper]:
    """The invoice (Stripe's hosted page and PDF) and every payment made for the licence."""
    found = []
    if licence.hosted_invoice_url or licence.invoice_pdf:
        label = _("Invoice %(number)s", number=licence.invoice_number) if licence.invoice_number else _("Invoice")
        found.append(Paper(label, licence.hosted_invoice_url, licence.invoice_pdf))
    for payment in licence.payments:
        found.append(Paper(_payment_line(payment)))
    return found


def _payment_line(payment: LicencePayment) -> str:
    amount = languages.money(payment.amount, payment.currency)
    line = _("Payment of %(amount)s on %(date)s", amount=amount, date=_day(payment.paid_at or payment.created_at))
    if payment.amount_refunded:
        refunded = languages.money(payment.amount_refunded, payment.currency)
        line += " " + _("(%(amount)s refunded)", amount=refunded)
    return line
