"""The operators' overview: the figures, each one grouped query (README "The overview" says how each is counted).

Every figure is an aggregate the database computes over an index made for it (migration 0012); Python only
adds up the few groups that come back (months and currencies, or Prices). Dates are UTC.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy import case, func, or_, select, text

from paygate.core.db import db, utcnow
from paygate.core.models import ACTIVE_PLATFORM, LEGACY_PAID, Licence, LicencePayment, Registration
from paygate.web.operator import queries

MONTHS = 12
FUNNEL_DAYS = 30
PILOT_DAYS_AHEAD = 14
LISTED = 20  # the pilots and overdue invoices named on the page; the count says how many there are in all
# Subscriptions that are billed now: past_due is still owed and retried by Stripe; trialing has paid nothing yet.
LIVE_SUBSCRIPTION = ("active", "past_due")
# How many of each interval make a month (Stripe's day, week, month and year).
PER_MONTH = {"day": Fraction(365, 12), "week": Fraction(52, 12), "month": Fraction(1), "year": Fraction(1, 12)}
_INTERVAL = re.compile(r"^(?:(\d{1,3}) )?(day|week|month|year)s?$")


@dataclass(frozen=True)
class Funnel:
    opened: int
    paid: int  # paid, invoiced, a pilot or a licence key: a licence or a payment
    completed: int

    @staticmethod
    def rate(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f} %" if whole else "n/a"


@dataclass(frozen=True)
class Listed:
    count: int
    rows: list  # (registration pk, organisation or LMS, a date, an amount or None, its currency)
    totals: dict[str, int] = field(default_factory=dict)  # currency -> minor units


def months(now: datetime, count: int = MONTHS) -> list[str]:
    """The last `count` calendar months up to this one, oldest first, as YYYY-MM."""
    year, month = now.year, now.month
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def _month(column):
    if db.session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.strftime("%Y-%m", column)


def money_by_month(now: datetime | None = None) -> dict[str, dict[str, int]]:
    """currency -> month -> net received (minor units) over the last MONTHS months, by the month of payment: paid
    less refunded, and a payment whose dispute was lost counts nothing (the bank took back what was not refunded)."""
    now = now or utcnow()
    keys = months(now)
    start = datetime.fromisoformat(keys[0] + "-01")
    paid = LicencePayment
    month = _month(paid.paid_at).label("month")
    net = case((paid.dispute_status == "lost", 0), else_=paid.amount - func.coalesce(paid.amount_refunded, 0))
    grouped = db.session.execute(
        select(func.lower(paid.currency), month, func.sum(net))
        .where(paid.paid_at >= start, paid.amount.is_not(None), paid.currency.is_not(None))
        .group_by(func.lower(paid.currency), month)
    ).all()
    # Registrations paid before licences existed: their own columns, refunded in full or not at all.
    reg = Registration
    legacy_month = _month(reg.paid_at).label("month")
    legacy = db.session.execute(
        select(
            func.lower(reg.currency_paid),
            legacy_month,
            func.sum(case((reg.refunded_at.is_not(None), 0), else_=reg.amount_paid)),
        )
        .where(text(LEGACY_PAID), reg.paid_at >= start)
        .group_by(func.lower(reg.currency_paid), legacy_month)
    ).all()
    out: dict[str, dict[str, int]] = {}
    for currency, key, amount in [*grouped, *legacy]:
        if key in keys and currency:
            series = out.setdefault(currency, dict.fromkeys(keys, 0))
            series[key] += int(amount or 0)
    return dict(sorted(out.items()))


def active() -> tuple[int, int]:
    """(active platforms, active licences): completed platforms whose access is decided on (the licence's money,
    a pilot or an operator's grant), and the licences that have at least one."""
    row = db.session.execute(
        select(func.count(), func.count(func.distinct(Registration.licence_pk))).where(text(ACTIVE_PLATFORM))
    ).one()
    return row[0], row[1]


def funnel(now: datetime | None = None) -> Funnel:
    """Registrations opened in the last FUNNEL_DAYS days, how many of them were paid for (or given a pilot, an
    invoice or a licence key) and how many completed."""
    since = (now or utcnow()) - timedelta(days=FUNNEL_DAYS)
    reg = Registration
    row = db.session.execute(
        select(
            func.count(),
            func.count(case((or_(reg.paid_at.is_not(None), reg.licence_pk.is_not(None)), 1))),
            func.count(reg.completed_at),
        ).where(reg.created_at >= since)
    ).one()
    return Funnel(*(int(n or 0) for n in row))


def interval_months(interval: str | None) -> Fraction | None:
    """How many months one billing period is ("year" -> 12, "2 week" -> 6/13); None if not recurring."""
    match = _INTERVAL.match((interval or "").strip().lower())
    if not match:
        return None
    return 1 / (PER_MONTH[match.group(2)] / int(match.group(1) or 1))


def recurring() -> dict[str, int]:
    """currency -> monthly recurring revenue (minor units): each live subscription's amount (after discounts,
    before tax) divided by its period in months, summed; grouped by Price, whose interval is read once each."""
    live = or_(
        (Licence.kind == "subscription") & Licence.status.in_(LIVE_SUBSCRIPTION),
        Licence.subscription_id.is_not(None) & Licence.subscription_status.in_(LIVE_SUBSCRIPTION),
    )
    groups = db.session.execute(
        select(func.lower(Licence.currency), Licence.price_id, func.sum(Licence.amount))
        .where(live, Licence.amount.is_not(None), Licence.currency.is_not(None))
        .group_by(func.lower(Licence.currency), Licence.price_id)
    ).all()
    out: dict[str, Fraction] = {}
    for currency, price_id, amount in groups:
        months_each = interval_months(_price_interval(price_id))
        if months_each:
            out[currency] = out.get(currency, Fraction(0)) + Fraction(int(amount or 0)) / months_each
    return {c: round(v) for c, v in sorted(out.items())}


def _price_interval(price_id: str | None) -> str | None:
    """The interval the registrations sold at this Price were shown (the newest one's; one indexed row)."""
    if price_id is None:
        return None
    return db.session.scalar(
        select(Registration.price_interval)
        .where(Registration.price_id == price_id)
        .order_by(Registration.created_at.desc(), Registration.id.desc())
        .limit(1)
    )


def pilots_ending(now: datetime | None = None) -> Listed:
    """Pilots still running that end within PILOT_DAYS_AHEAD days, soonest first."""
    now = now or utcnow()
    where = (
        (Licence.kind == "pilot")
        & (Licence.pilot_ends_at > now)
        & (Licence.pilot_ends_at <= now + timedelta(days=PILOT_DAYS_AHEAD))
    )
    return _listed(where, Licence.pilot_ends_at, None)


def overdue_invoices(now: datetime | None = None) -> Listed:
    """Invoices still open after their due date, the longest overdue first, with what remains owed per currency."""
    where = (Licence.kind == "invoice") & (Licence.status == "open") & (Licence.due_at < (now or utcnow()))
    listed = _listed(where, Licence.due_at, Licence.amount_remaining)
    totals = db.session.execute(
        select(func.lower(Licence.currency), func.sum(Licence.amount_remaining))
        .where(where, Licence.currency.is_not(None))
        .group_by(func.lower(Licence.currency))
    ).all()
    return Listed(listed.count, listed.rows, {c: int(n or 0) for c, n in sorted(totals)})


def _listed(where, when, amount) -> Listed:
    count = db.session.scalar(select(func.count()).select_from(Licence).where(where))
    rows = db.session.execute(
        select(
            Licence.registration_pk,
            func.coalesce(Licence.organisation, Registration.lms_url),
            when,
            amount if amount is not None else text("NULL"),
            Licence.currency,
        )
        .join(Registration, Registration.id == Licence.registration_pk)
        .where(where)
        .order_by(when, Licence.id)
        .limit(LISTED)
    ).all()
    return Listed(int(count or 0), [tuple(r) for r in rows])


def attention():
    """The newest registrations that need attention, and how many do (the list's own preview)."""
    return queries.attention_preview(queries.Filters())
