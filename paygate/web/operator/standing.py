"""What a registration's money says, as operators read it: one standing for every badge and box.

Derived from the licence's facts and `access.decide` (the one access rule), never from Stripe's raw status
alone, so that no page says "succeeded" of a refunded payment or "until" of a cancelled subscription.
"""

from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from paygate.core.db import utcnow
from paygate.core.models import Licence, LicencePayment
from paygate.core.money import format_amount
from paygate.licensing import access


@dataclass(frozen=True)
class Standing:
    label: str  # what the money says in a few words: "paid", "refunded 49.00 USD", "dispute lost"
    active: bool | None  # the access the money gives (no operator override); None: no licence
    tone: str  # good, warn, bad, none: the badge's colour
    note: str | None = None  # the line below it: a period's end, a due date, a dispute's deadline
    attention: str | None = None  # what an operator must look at, though no flag is stored for it
    paid: LicencePayment | None = None  # the payment that pays for the licence now, if it was paid
    stripe_status: str | None = None  # Stripe's own status, where it is not what decided the label


def _day(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d}" if value else "?"


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "?"


def standing(reg, now: datetime | None = None) -> Standing:
    """The standing of `reg`'s licence (its payments loaded with it, as the list and detail do)."""
    lic: Licence | None = reg.licence
    if lic is None:
        return Standing("no licence", None, "none")
    decision = access.decide(lic, None, now or utcnow(), current_app.config["SETTINGS"])
    current = access.current_payment(lic)
    paid = current if current is not None and current.paid_at is not None else None
    if current is not None and current.dispute_status == "lost":
        return Standing(
            "dispute lost",
            decision.active,
            "bad",
            note=f"{format_amount(current.amount, current.currency)} taken back by the bank",
            attention="dispute lost",
            paid=paid,
        )
    if current is not None and current.fully_refunded:
        refunded = format_amount(current.amount_refunded, current.currency)
        return Standing(f"refunded {refunded}", decision.active, "bad", note=_refund_note(current), paid=paid)
    label, note = _by_kind(lic, decision, current)
    tone = "good" if decision.active else "bad"
    if lic.status == "past_due" or lic.subscription_status == "past_due":
        tone = "warn"
    notes = [n for n in (note, _partial(lic), _dispute(lic)) if n]
    if lic.dispute_open:
        tone = "warn"
    return Standing(label, decision.active, tone, note="; ".join(notes) or None, paid=paid, stripe_status=lic.status)


def _refund_note(payment: LicencePayment) -> str | None:
    return f"refund {payment.refund_status}" if payment.refund_status not in (None, "succeeded") else None


def _partial(lic: Licence) -> str | None:
    parts = [p for p in lic.payments if p.amount_refunded and not p.fully_refunded]
    return "; ".join(f"{format_amount(p.amount_refunded, p.currency)} refunded" for p in parts) or None


def _dispute(lic: Licence) -> str | None:
    """An open dispute and the whole deadline for its evidence (Stripe's date and time)."""
    open_ = [p for p in lic.payments if p.dispute_id and p.dispute_status not in ("won", "lost")]
    return "; ".join(f"disputed, evidence due {_time(p.dispute_due_by)}" for p in open_) or None


def _ended(lic: Licence) -> str:
    """When a cancelled subscription ended: its period's end if passed, else when that was learnt."""
    ends = [d for d in (lic.period_end, lic.updated_at) if d is not None]
    return _day(min(ends)) if ends else "?"


def _by_kind(lic: Licence, decision, current: LicencePayment | None) -> tuple[str, str | None]:
    if lic.kind == "payment":
        if lic.status == "succeeded":
            return "paid", None
        if lic.status == "no_payment_required":
            return "paid nothing (promotion code)", None
        return f"payment {lic.status or 'not confirmed'}", None
    sub_status = lic.status if lic.kind == "subscription" else lic.subscription_status
    if sub_status == "canceled":
        return f"cancelled (ended {_ended(lic)})", None
    if sub_status and sub_status not in access.ACTIVE_SUBSCRIPTION:
        return sub_status.replace("_", " "), "no access while it is unpaid" if sub_status == "unpaid" else None
    if lic.kind == "subscription":
        label = f"{(sub_status or '?').replace('_', ' ')} until {_day(lic.period_end)}"
        return label, None
    name = "invoice"
    if lic.status == "paid":
        when = current.paid_at if current is not None and current.paid_at else lic.first_paid_at
        return f"{name} paid {_day(when)}", None
    if lic.status in ("void", "uncollectible"):
        return f"{name} {lic.status}", None
    if lic.status == "open" and lic.due_at is not None:
        return (
            f"{name} open, due {_day(lic.due_at)}" if decision.active else f"{name} unpaid, due {_day(lic.due_at)}"
        ), None
    return f"{name} {lic.status or 'being issued'}", None
