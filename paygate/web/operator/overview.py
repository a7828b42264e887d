"""The operators' overview's live figures: pilots ending, overdue invoices and what needs attention, each counted on
every view from an index made for it (migration 0012). The aggregate figures are kept by the worker
(paygate/ops/overview_summary.py). Dates are UTC.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, literal_column, select, text

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.web.operator import queries

PILOT_DAYS_AHEAD = 14
LISTED = 20  # the pilots and overdue invoices named on the page; the count says how many there are in all


@dataclass(frozen=True)
class Listed:
    count: int
    rows: list  # (registration pk, organisation or LMS, a date, an amount or None, its currency)
    totals: dict[str, int] = field(default_factory=dict)  # currency -> minor units


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
    # Literal values, as the partial index ix_licences_open_invoice_due_at says them (models.OPEN_INVOICE): a
    # bound parameter would leave PostgreSQL's generic plans unable to prove that the index covers the rows.
    open_invoice = (Licence.kind == literal_column("'invoice'")) & (Licence.status == literal_column("'open'"))
    where = open_invoice & (Licence.due_at < (now or utcnow()))
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
