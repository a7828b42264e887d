"""The overview's charts as SVG images, drawn on the server by leather.

leather writes every colour and font as a presentation attribute (no <style>, no script), so a chart needs nothing
from the CSP, and it has no dependencies of its own. Each chart is served from its own route as an image whose
text alternative is the table beside it; the SVG scales to its box (a viewBox, no fixed size).
"""

import re
from html import escape

import leather

from paygate.core.money import ZERO_DECIMAL

WIDTH, HEIGHT = 720, 320
COLUMN = "#2656c9"  # the operator pages' blue: 6.5:1 on the chart's white
FUNNEL = ("#5a6270", "#2656c9", "#14532d")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _themed() -> None:
    # leather reads its look from module attributes: set once, the same for every chart.
    leather.theme.background_color = "#ffffff"
    leather.theme.title_color = "#1d2330"
    leather.theme.title_font_family = leather.theme.tick_font_family = "system-ui, sans-serif"
    leather.theme.tick_color = "#e6e9ef"
    leather.theme.label_color = "#3d4452"
    leather.theme.axis_title_color = "#3d4452"


_themed()


def major(amount: int, currency: str) -> float:
    return amount if currency.lower() in ZERO_DECIMAL else amount / 100


def money_chart(currency: str, series: dict[str, int]) -> str:
    """Net received per month in one currency (major units), one column a month."""
    chart = leather.Chart(f"Net received per month, {currency.upper()}")
    data = [(MONTH_NAMES[int(month[5:]) - 1], major(amount, currency)) for month, amount in series.items()]
    chart.add_columns(data, fill_color=COLUMN)
    chart.add_y_axis(tick_formatter=lambda value, index, count: f"{value:,.0f}")
    return _svg(chart, f"Net received per month in {currency.upper()}, {_months_named(series)}")


def funnel_chart(opened: int, paid: int, completed: int, days: int) -> str:
    """The registrations opened in the last `days` days and how far they got, one bar a step."""
    chart = leather.Chart(f"Registrations of the last {days} days")
    steps = [(opened, "opened"), (paid, "paid or pilot"), (completed, "completed")]
    for (count, label), colour in zip(steps, FUNNEL, strict=True):
        chart.add_bars([(count, label)], fill_color=colour)
    chart.add_x_axis(tick_formatter=lambda value, index, count: f"{value:,.0f}")
    return _svg(
        chart, f"Registrations of the last {days} days: {opened} opened, {paid} paid or pilot, {completed} completed"
    )


def _months_named(series: dict[str, int]) -> str:
    keys = list(series)
    return f"{keys[0]} to {keys[-1]}" if keys else ""


def _svg(chart, title: str) -> str:
    """The chart's SVG, scaling to its box, named for assistive technology."""
    svg = chart.to_svg(width=WIDTH, height=HEIGHT)
    svg = re.sub(
        r'^<svg width="\d+" height="\d+"',
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}"',
        svg,
        count=1,
    )
    return svg.replace(">", f"><title>{escape(title)}</title>", 1)
