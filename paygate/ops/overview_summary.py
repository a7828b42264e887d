"""The overview's aggregate figures, kept in one row that the worker refreshes (README "The overview").

Money per month per currency, active platforms and licences, the 30-day funnel and recurring revenue each read
much of a large table (seconds at a million registrations), so they are counted by the worker every
REFRESH_SECONDS and the page reads the stored row. The page counts them itself, and stores them, when there are
none or they are older than STALE_SECONDS (the worker is not running). Each figure is one grouped query over an
index made for it (migration 0012); Python only adds up the few groups that come back. Dates are UTC.

One worker refreshes at a time: it claims the row by a conditional UPDATE (no other claim running, the figures
due) and commits the claim before it counts, so another worker's pass skips the refresh instead of repeating it.
"""

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy import case, func, or_, select, text, update

from paygate.core import telemetry
from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import ACTIVE_PLATFORM, LEGACY_PAID, Licence, LicencePayment, OverviewSummary, Registration

log = logging.getLogger(__name__)

ROW = 1
REFRESH_SECONDS = 300  # the worker counts again when the figures are this old
STALE_SECONDS = 3 * REFRESH_SECONDS  # older than this, the worker is not running: the page counts them itself
CLAIM_SECONDS = 600  # a refresh claimed this long ago was cut short (a killed worker); another may take it over
MONTHS = 12
FUNNEL_DAYS = 30
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
class Summary:
    money: dict[str, dict[str, int]]  # currency -> month (YYYY-MM) -> net received, minor units
    months: list[str]
    platforms: int
    licences: int
    funnel: Funnel
    recurring: dict[str, int]  # currency -> monthly recurring revenue, minor units
    computed_at: datetime
    took_ms: int


def current(now: datetime | None = None) -> Summary:
    """The page's figures: the stored ones (one read by primary key), or, when there are none or they are stale,
    counted now and stored (flushed: the request commits)."""
    now = now or utcnow()
    row = db.session.get(OverviewSummary, ROW)
    if row is not None and row.figures and row.computed_at and row.computed_at > now - timedelta(seconds=STALE_SECONDS):
        return _summary(row.figures, row.computed_at, row.took_ms or 0)
    figures, took_ms = _counted(now)
    _store(figures, now, took_ms)
    log.info("overview: figures counted by the page in %s ms (none fresh stored; is the worker running?)", took_ms)
    return _summary(figures, now, took_ms)


def refresh_due(now: datetime | None = None) -> int | None:
    """The worker's: count and store the figures when they are REFRESH_SECONDS old and no other worker is counting
    them; commits. The milliseconds it took, or None when not due or claimed elsewhere."""
    now = now or utcnow()
    if not _claim(now):
        db.session.commit()
        return None
    db.session.commit()  # the claim is seen by every other worker while this one counts
    try:
        figures, took_ms = _counted(now)
    except Exception:
        db.session.rollback()
        _release(now)
        db.session.commit()
        raise
    _store(figures, now, took_ms, claimed=now)
    db.session.commit()
    telemetry.overview_refresh(took_ms / 1000)
    log.info("overview: figures refreshed in %s ms", took_ms)
    return took_ms


def _claim(now: datetime) -> bool:
    row = OverviewSummary
    claimed = db.session.execute(
        update(row)
        .where(
            row.id == ROW,
            or_(row.computed_at.is_(None), row.computed_at <= now - timedelta(seconds=REFRESH_SECONDS)),
            or_(row.refreshing_since.is_(None), row.refreshing_since < now - timedelta(seconds=CLAIM_SECONDS)),
        )
        .values(refreshing_since=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed:
        return True
    if db.session.get(OverviewSummary, ROW) is not None:
        return False
    return insert_ignoring_duplicates(OverviewSummary, {"id": ROW, "refreshing_since": now})  # the first one


def _release(now: datetime) -> None:
    db.session.execute(
        update(OverviewSummary)
        .where(OverviewSummary.id == ROW, OverviewSummary.refreshing_since == now)
        .values(refreshing_since=None)
        .execution_options(synchronize_session=False)
    )


def _store(figures: dict, now: datetime, took_ms: int, claimed: datetime | None = None) -> None:
    """Over older figures only (a slower counter never overwrites newer ones); the claim ends with it."""
    row = OverviewSummary
    values = {"figures": figures, "computed_at": now, "took_ms": took_ms}
    if claimed is not None:
        values["refreshing_since"] = case((row.refreshing_since == claimed, None), else_=row.refreshing_since)
    stored = db.session.execute(
        update(row)
        .where(row.id == ROW, or_(row.computed_at.is_(None), row.computed_at < now))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not stored and claimed is None and db.session.get(OverviewSummary, ROW) is None:
        insert_ignoring_duplicates(
            OverviewSummary, {"id": ROW, "figures": figures, "computed_at": now, "took_ms": took_ms}
        )
    elif not stored and claimed is not None:
        _release(claimed)


def _counted(now: datetime) -> tuple[dict, int]:
    started = time.perf_counter()
    platforms, licences = active()
    funnel_now = funnel(now)
    figures = {
        "money": money_by_month(now),
        "months": months(now),
        "platforms": platforms,
        "licences": licences,
        "funnel": [funnel_now.opened, funnel_now.paid, funnel_now.completed],
        "recurring": recurring(),
    }
    return figures, round((time.perf_counter() - started) * 1000)


def _summary(figures: dict, computed_at: datetime, took_ms: int) -> Summary:
    return Summary(
        money=figures["money"],
        months=figures["months"],
        platforms=figures["platforms"],
        licences=figures["licences"],
        funnel=Funnel(*figures["funnel"]),
        recurring=figures["recurring"],
        computed_at=computed_at,
        took_ms=took_ms,
    )


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
