"""The operators' overview: each figure on known data (money per month net of a refund and a lost dispute per
currency, active platforms and licences, the funnel with its conversion, recurring revenue, pilots and overdue
invoices, what needs attention), an empty database, who may see it, and its charts as SVG images."""

import re
import secrets
from datetime import datetime, timedelta

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, LicencePayment
from paygate.ops import overview_summary
from paygate.web.operator import overview
from tests.helpers.operators import add_operator, seed, sign_in


def month_start(now: datetime, back: int = 0) -> datetime:
    year, month = now.year, now.month - back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, 0, 0, 1)


def licence(app, pk: int, **fields) -> int:
    """A licence opened by registration `pk`; its id."""
    with app.app_context():
        row = Licence(registration_pk=pk, kind=fields.pop("kind", "payment"), **fields)
        db.session.add(row)
        db.session.commit()
        return row.id


def payment(app, pk: int, licence_pk: int, amount: int, currency: str, paid_at: datetime, **fields) -> None:
    with app.app_context():
        db.session.add(
            LicencePayment(
                licence_pk=licence_pk,
                registration_pk=pk,
                payment_intent_id="pi_" + secrets.token_hex(8),
                amount=amount,
                currency=currency,
                paid_at=paid_at,
                **fields,
            )
        )
        db.session.commit()


def figures(app, fn, *args):
    with app.app_context():
        return fn(*args)


def cells(html: str, table_id: str) -> list[list[str]]:
    """The rows of the table inside the element `table_id`, as text."""
    part = html[html.index(f'id="{table_id}"') :]
    part = part[: part.index("</table>")]
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", part, re.S)
    ]


def test_money_per_month_is_net_of_a_refund_and_a_lost_dispute_in_each_currency(app, ops):
    now = utcnow()
    this, last = month_start(now), month_start(now, 1)
    a, b, c, d, old = seed(app, 5)
    la, lb, lc, ld, lo = (licence(app, pk) for pk in (a, b, c, d, old))
    payment(app, a, la, 4900, "usd", this, amount_refunded=1000)  # 39.00
    payment(app, b, lb, 4900, "usd", this, dispute_status="lost", amount_refunded=900)  # the bank took the rest
    payment(app, c, lc, 10000, "usd", last)
    payment(app, d, ld, 3000, "eur", this)
    payment(app, old, lo, 7000, "usd", month_start(now, 12))  # 13 months ago: before the chart
    # Paid before licences: its own columns; one refunded in full counts nothing.
    seed(app, amount_paid=2000, currency_paid="eur", paid_at=last)
    seed(app, amount_paid=2000, currency_paid="eur", paid_at=last, refunded_at=last)

    money = figures(app, overview_summary.money_by_month, now)
    keys = overview_summary.months(now)
    assert list(money) == ["eur", "usd"] and list(money["usd"]) == keys and len(keys) == 12
    assert (money["usd"][keys[-1]], money["usd"][keys[-2]], money["usd"][keys[0]]) == (3900, 10000, 0)
    assert (money["eur"][keys[-1]], money["eur"][keys[-2]]) == (3000, 2000)

    page = ops.get("/operator/overview")
    assert page.status_code == 200
    usd = cells(page.text, "money-usd")
    assert usd[0] == ["Month", "Net"] and usd[-1] == [keys[-1], "39.00 USD"] and usd[-2] == [keys[-2], "100.00 USD"]
    assert cells(page.text, "money-eur")[-1] == [keys[-1], "30.00 EUR"]
    assert 'src="/operator/overview/money-usd.svg"' in page.text


def test_active_platforms_and_licences(app, ops):
    first, second, other, revoked, pending = seed(app, 5)
    shared = licence(app, first)
    licence(app, other)
    with app.app_context():
        from paygate.core.models import Registration

        for pk in (first, second, other):
            db.session.get(Registration, pk).access_wanted = True
            db.session.get(Registration, pk).platform_id = f"platform-{pk}"
        db.session.get(Registration, second).licence_pk = shared
        db.session.get(Registration, revoked).platform_id = "platform-gone"
        db.session.get(Registration, revoked).access_wanted = False
        db.session.get(Registration, pending).state = "pending"
        db.session.get(Registration, pending).access_wanted = True
        db.session.commit()
    assert figures(app, overview_summary.active) == (3, 2)
    page = ops.get("/operator/overview").text
    assert re.search(r'id="active-platforms">3<', page) and re.search(r'id="active-licences">2<', page)


def test_the_funnel_of_the_last_30_days_with_its_conversion(app, ops):
    now = utcnow()
    recent = now - timedelta(days=29)
    opened = seed(app, 2, state="pending", created_at=recent)
    (paid,) = seed(app, state="paid", paid_at=now, created_at=recent)
    (pilot,) = seed(app, state="paid", created_at=recent)
    licence(app, pilot, kind="pilot", pilot_ends_at=now + timedelta(days=20))
    seed(app, 2, state="completed", paid_at=now, completed_at=now, created_at=recent)
    seed(app, 3, state="completed", paid_at=now, completed_at=now, created_at=now - timedelta(days=31))
    assert opened and paid
    assert figures(app, overview_summary.funnel, now) == overview_summary.Funnel(opened=6, paid=4, completed=2)
    page = ops.get("/operator/overview").text
    assert cells(page, "funnel")[1:] == [
        ["Opened", "6", "100.0 %"],
        ["Paid or pilot", "4", "66.7 %"],
        ["Completed", "2", "33.3 %"],
    ]


def test_recurring_revenue_from_live_subscriptions_normalised_to_a_month(app, ops):
    yearly, monthly, trial, ended, invoiced, once = seed(app, 6)
    with app.app_context():
        from paygate.core.models import Registration

        for pk, price, interval in (
            (yearly, "price_year", "year"),
            (monthly, "price_month", "month"),
            (trial, "price_year", "year"),
            (ended, "price_month", "month"),
            (invoiced, "price_two", "2 month"),
            (once, "price_once", None),
        ):
            reg = db.session.get(Registration, pk)
            reg.price_id, reg.price_interval = price, interval
        db.session.commit()
    sub = {"kind": "subscription", "subscription_id": "sub_x"}
    licence(app, yearly, status="active", price_id="price_year", amount=12000, currency="usd", **sub)
    licence(app, monthly, status="past_due", price_id="price_month", amount=2000, currency="usd", **sub)
    licence(app, trial, status="trialing", price_id="price_year", amount=99000, currency="usd", **sub)
    licence(app, ended, status="canceled", price_id="price_month", amount=99000, currency="usd", **sub)
    licence(
        app,
        invoiced,
        kind="invoice",
        status="open",
        subscription_id="sub_y",
        subscription_status="active",
        price_id="price_two",
        amount=6000,
        currency="eur",
    )
    licence(app, once, status="succeeded", price_id="price_once", amount=50000, currency="usd")
    assert figures(app, overview_summary.recurring) == {"eur": 3000, "usd": 3000}
    page = ops.get("/operator/overview").text
    assert "30.00 EUR" in page and "30.00 USD" in page


def test_pilots_ending_within_14_days_but_not_15(app, ops):
    now = utcnow()
    soon, later, ended, paid = seed(app, 4)
    licence(app, soon, kind="pilot", pilot_ends_at=now + timedelta(days=13, hours=23), organisation="Soon School")
    licence(app, later, kind="pilot", pilot_ends_at=now + timedelta(days=15))
    licence(app, ended, kind="pilot", pilot_ends_at=now - timedelta(hours=1))
    licence(app, paid, kind="invoice", status="paid", pilot_ends_at=now + timedelta(days=3))  # paid for: no pilot
    listed = figures(app, overview.pilots_ending, now)
    assert listed.count == 1 and [r[0] for r in listed.rows] == [soon]
    page = ops.get("/operator/overview").text
    assert f'href="/operator/registrations/{soon}"' in page and "Soon School" in page
    assert f'href="/operator/registrations/{later}"' not in page
    assert re.search(r'id="pilots-count">1<', page)


def test_overdue_invoices_and_what_they_still_owe(app, ops):
    now = utcnow()
    late, later, not_due, paid = seed(app, 4)
    invoice = {"kind": "invoice", "currency": "eur"}
    licence(app, late, status="open", due_at=now - timedelta(days=10), amount_remaining=5000, **invoice)
    licence(app, later, status="open", due_at=now - timedelta(days=1), amount_remaining=2500, **invoice)
    licence(app, not_due, status="open", due_at=now + timedelta(days=1), amount_remaining=9900, **invoice)
    licence(app, paid, status="paid", due_at=now - timedelta(days=5), amount_remaining=0, **invoice)
    listed = figures(app, overview.overdue_invoices, now)
    assert (listed.count, [r[0] for r in listed.rows], listed.totals) == (2, [late, later], {"eur": 7500})
    page = ops.get("/operator/overview").text
    assert [r[0] for r in cells(page, "overdue")[1:]] == [f"#{late}", f"#{later}"]
    assert "75.00 EUR owed" in page and 'href="/operator/?licence=invoice_overdue"' in page


def test_what_needs_attention_links_to_each_registration(app, ops):
    (stuck,) = seed(app, attention="completion_refused", state="needs_attention")
    seed(app, 2)
    page = ops.get("/operator/overview").text
    assert re.search(r'id="attention-count">1<', page)
    assert f'<a href="/operator/registrations/{stuck}">#{stuck}</a>' in page and "completion refused" in page
    assert 'href="/operator/?attention=1"' in page


def test_an_empty_database(app, ops):
    page = ops.get("/operator/overview")
    assert page.status_code == 200
    assert "Nothing was received in the last 12 months." in page.text
    assert re.search(r'id="active-platforms">0<', page.text) and re.search(r'id="recurring">none<', page.text)
    assert cells(page.text, "funnel")[1] == ["Opened", "0", "n/a"]
    assert "No pilot ends within 14 days." in page.text and "No invoice is overdue." in page.text
    assert "Nothing needs attention." in page.text
    assert ops.get("/operator/overview/money-usd.svg").status_code == 404
    assert ops.get("/operator/overview/funnel.svg").status_code == 200


def test_a_viewer_sees_it_and_nobody_signed_out_does(app, client):
    assert client.get("/operator/overview").status_code in (302, 303)
    add_operator(app, email="viewer@vendor.example", role="viewer")
    assert sign_in(client, email="viewer@vendor.example").status_code == 303
    page = client.get("/operator/overview")
    assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    assert client.get("/operator/overview/funnel.svg").status_code == 200
    assert 'href="/operator/overview"' in client.get("/operator/").text  # the nav link


def test_the_charts_are_svg_images_without_script(app, ops):
    now = utcnow()
    (pk,) = seed(app, created_at=now, paid_at=now)
    payment(app, pk, licence(app, pk), 4900, "usd", now)
    for path in ("/operator/overview/money-usd.svg", "/operator/overview/funnel.svg"):
        chart = ops.get(path)
        assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
        body = chart.get_data(as_text=True)
        assert body.startswith("<svg") and 'role="img"' in body and "<title>" in body
        assert "<script" not in body.lower() and "<style" not in body.lower() and "on" + "load=" not in body
    assert "Net received per month in USD" in ops.get("/operator/overview/money-usd.svg").text
    assert "1 opened" in ops.get("/operator/overview/funnel.svg").text
    for bad in ("USD", "us", "eur1", "xyz"):
        assert ops.get(f"/operator/overview/money-{bad}.svg").status_code == 404
