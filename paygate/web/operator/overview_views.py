"""The routes of the overview: the page, and each of its charts as an SVG image (the figures are in
paygate/ops/overview_summary.py, kept by the worker, and `overview`, counted on every view)."""

import re

from flask import Response, abort, render_template

from paygate.core.db import db, utcnow
from paygate.ops import overview_summary
from paygate.web.operator import charts
from paygate.web.operator import overview as figures
from paygate.web.operator.blueprint import bp

_CURRENCY = re.compile(r"^[a-z]{3}$")


@bp.get("/overview")
def overview():
    now = utcnow()
    summary = overview_summary.current(now)
    attention, attention_count = figures.attention()
    page = render_template(
        "operator/overview.html",
        now=now,
        summary=summary,
        funnel_days=overview_summary.FUNNEL_DAYS,
        refresh_minutes=overview_summary.REFRESH_SECONDS // 60,
        pilots=figures.pilots_ending(now),
        pilot_days=figures.PILOT_DAYS_AHEAD,
        overdue=figures.overdue_invoices(now),
        attention=attention,
        attention_count=attention_count,
    )
    db.session.commit()  # the figures, when the page counted them itself
    return page


@bp.get("/overview/money-<currency>.svg")
def overview_money_chart(currency: str):
    if not _CURRENCY.match(currency):
        abort(404, description="No such currency.")
    series = _summary().money.get(currency)
    if series is None:
        abort(404, description="Nothing was received in that currency in the last 12 months.")
    return _svg(charts.money_chart(currency, series))


@bp.get("/overview/funnel.svg")
def overview_funnel_chart():
    counted = _summary().funnel
    return _svg(charts.funnel_chart(counted.opened, counted.paid, counted.completed, overview_summary.FUNNEL_DAYS))


def _summary() -> overview_summary.Summary:
    summary = overview_summary.current()
    db.session.commit()
    return summary


def _svg(body: str) -> Response:
    return Response(body, mimetype="image/svg+xml")
