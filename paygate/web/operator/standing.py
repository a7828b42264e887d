"""What a registration's money says, as operators read it: one standing for every badge and box.

Derived from the licence's facts and `access.decide` (the one access rule), never from Stripe's raw status
alone, so that no page says "succeeded" of a refunded payment or "until" of a cancelled subscription. A
platform that joined another registration's licence by its key reads that licence's money (it owes none of
its own); a pilot reads "pilot until" or "pilot ended".
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

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
    # The registration that opened the licence, when this one joined it by its key (no payment of its own).
    joined_from: int | None = None
    replaced: str | None = None  # "replaced 2026-03-01": a newer platform took this one's place on its licence

    @property
    def ended(self) -> bool:
        """Whether this platform has no access by its licence: the money gives none, or it was replaced."""
        return self.active is False or self.replaced is not None


# How a platform came onto its licence, beside the licence's standing.
JOINED = "joined by key"
OPENED = "opened the licence"
# A pilot ending within this many days is shown in the warning colour (and found by the list's filter).
PILOT_ENDING_SOON = timedelta(days=7)


def _day(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d}" if value else "?"


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "?"


def joined_from(reg) -> int | None:
    """The registration whose licence `reg` joined by its key; None when `reg` opened its licence or has none."""
    lic: Licence | None = reg.licence
    return lic.registration_pk if lic is not None and lic.registration_pk != reg.id else None


def on_licence(reg) -> str:
    """How a platform came onto its licence, and whether a newer one replaced it: one line of the platforms."""
    how = JOINED if joined_from(reg) is not None else OPENED
    return f"{how}; {replaced(reg)}" if reg.replaced_at is not None else how


def replaced(reg) -> str | None:
    return f"replaced {_day(reg.replaced_at)}" if reg.replaced_at is not None else None


def pilot_end(lic: Licence, now: datetime | None = None) -> str | None:
    """A pilot's end in words: "until ..." while it runs, "ended ..." after; None for a licence never a pilot."""
    if lic.pilot_ends_at is None:
        return None
    ran = "until" if (now or utcnow()) < lic.pilot_ends_at else "ended"
    return f"pilot {ran} {_time(lic.pilot_ends_at)}" + ("" if lic.kind == "pilot" else ", then paid for")


def standing(reg, now: datetime | None = None) -> Standing:
    """The standing of `reg`'s licence (its payments loaded with it, as the list and detail do), and how the
    platform of `reg` stands on it (joined by key, replaced)."""
    said = _licence_standing(reg.licence, now or utcnow())
    return replace(said, joined_from=joined_from(reg), replaced=replaced(reg))


def _licence_standing(lic: Licence | None, now: datetime) -> Standing:
    if lic is None:
        return Standing("no licence", None, "none")
    decision = access.decide(lic, None, now, current_app.config["SETTINGS"])
    if lic.kind == "pilot":
        return _pilot(lic, decision, now)
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
    notes = [n for n in (note, _not_renewed(lic), _partial(lic), _dispute(lic)) if n]
    if lic.dispute_open:
        tone = "warn"
    return Standing(label, decision.active, tone, note="; ".join(notes) or None, paid=paid, stripe_status=lic.status)


def _pilot(lic: Licence, decision, now: datetime) -> Standing:
    """A free pilot: active until its end (or while a payment begun before it is under way), then ended."""
    end = lic.pilot_ends_at
    running = end is not None and now < end
    label = f"pilot until {_day(end)}" if running else f"pilot ended {_day(end)}"
    note = "its payment is under way" if decision.active and not running else None
    tone = "bad" if not decision.active else "warn" if not running or end - now <= PILOT_ENDING_SOON else "good"
    return Standing(label, decision.active, tone, note=note, stripe_status=None)


def _refund_note(payment: LicencePayment) -> str | None:
    return f"refund {payment.refund_status}" if payment.refund_status not in (None, "succeeded") else None


def _not_renewed(lic: Licence) -> str | None:
    """An invoiced subscription set to end: the invoice says paid or open, the subscription ends at its period."""
    if lic.kind != "invoice" or not lic.cancel_at_period_end or lic.subscription_status == "canceled":
        return None
    return f"subscription ends on {_day(lic.period_end)}, not renewed"


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
        if lic.cancel_at_period_end:  # paid to its period's end, then over: an operator's cancel, no refund
            return f"ends on {_day(lic.period_end)}, not renewed", None
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
