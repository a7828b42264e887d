"""The routes of the overview: the page, and each of its charts as an SVG image (the figures are in `overview`)."""

import re

from flask import Response, abort, render_template

from paygate.core.db import utcnow
from paygate.web.operator import charts
from paygate.web.operator import overview as figures
from paygate.web.operator.blueprint import bp

_CURRENCY = re.compile(r"^[a-z]{3}$")


@bp.get("/overview")
def overview():
    now = utcnow()
    platforms, licences = figures.active()
    attention, attention_count = figures.attention()
    return render_template(
        "operator/overview.html",
        now=now,
        received=figures.money_by_month(now),
        months=figures.months(now),
        platforms=platforms,
        licences=licences,
        funnel=figures.funnel(now),
        funnel_days=figures.FUNNEL_DAYS,
        recurring=figures.recurring(),
        pilots=figures.pilots_ending(now),
        pilot_days=figures.PILOT_DAYS_AHEAD,
        overdue=figures.overdue_invoices(now),
        attention=attention,
        attention_count=attention_count,
    )


@bp.get("/overview/money-<currency>.svg")
def overview_money_chart(currency: str):
    if not _CURRENCY.match(currency):
        abort(404, description="No such currency.")
    series = figures.money_by_month().get(currency)
    if series is None:
        abort(404, description="Nothing was received in that currency in the last 12 months.")
    return _svg(charts.money_chart(currency, series))


@bp.get("/overview/funnel.svg")
def overview_funnel_chart():
    counted = figures.funnel()
    return _svg(charts.funnel_chart(counted.opened, counted.paid, counted.completed, figures.FUNNEL_DAYS))


def _svg(body: str) -> Response:
    return Response(body, mimetype="image/svg+xml")
