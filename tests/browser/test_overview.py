"""The operators' overview in a real browser, with money in two currencies, subscriptions, a pilot ending, an overdue
invoice and a registration needing attention: axe-clean (the rules of tests/browser/test_accessibility.py) at 1280
and 320 CSS px wide, no sideways scrolling at 320 px, and each chart a visible, loaded image within the page."""

import secrets
from datetime import timedelta

import pytest

from paygate.application import create_app
from paygate.core.db import db, utcnow
from paygate.core.models import Licence, LicencePayment
from tests.browser.test_accessibility import NARROW, axe_counts, signed_in
from tests.helpers.apps import empty
from tests.helpers.operators import add_operator, seed
from tests.helpers.servers import free_port, serving

pytestmark = pytest.mark.browser


def licence(pk: int, **fields) -> Licence:
    row = Licence(registration_pk=pk, kind=fields.pop("kind", "payment"), **fields)
    db.session.add(row)
    db.session.flush()
    return row


def paid(pk: int, amount: int, currency: str, days_ago: int, **fields) -> None:
    row = licence(pk, status="succeeded", amount=amount, currency=currency)
    db.session.add(
        LicencePayment(
            licence_pk=row.id,
            registration_pk=pk,
            payment_intent_id="pi_" + secrets.token_hex(8),
            amount=amount,
            currency=currency,
            paid_at=utcnow() - timedelta(days=days_ago),
            **fields,
        )
    )


def fill(app) -> None:
    now = utcnow()
    pks = seed(app, 14, created_at=now - timedelta(days=3), paid_at=now, completed_at=now)
    (stuck,) = seed(app, state="needs_attention", attention="completion_refused", created_at=now)
    seed(app, 3, state="pending", created_at=now - timedelta(days=1))
    with app.app_context():
        for i, pk in enumerate(pks[:8]):
            paid(pk, 4900 + 1000 * i, "usd", days_ago=32 * i, amount_refunded=900 if i == 2 else 0)
        for i, pk in enumerate(pks[8:11]):
            paid(pk, 125000, "eur", days_ago=40 * i)
        licence(pks[11], kind="subscription", status="active", subscription_id="sub_x", amount=12000, currency="usd")
        licence(pks[12], kind="pilot", pilot_ends_at=now + timedelta(days=5), organisation="Pilot Valley School")
        licence(
            pks[13],
            kind="invoice",
            status="open",
            due_at=now - timedelta(days=9),
            amount=9900,
            amount_remaining=9900,
            currency="eur",
            organisation="A School Whose Name Is Long Enough To Wrap On A Narrow Phone Screen",
        )
        assert stuck
        db.session.commit()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    port = free_port()
    path = tmp_path_factory.mktemp("overview") / "overview.sqlite"
    app = create_app(
        {
            "app_env": "local",
            "database_url": f"sqlite:///{path}",
            "public_url": f"http://127.0.0.1:{port}",
            "secret_key": "overview-test",
        }
    )
    empty(app)
    add_operator(app)
    fill(app)
    with serving(app, port):
        yield f"http://127.0.0.1:{port}"
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("width", [1280, NARROW])
def test_the_overview_is_accessible_fits_a_phone_and_shows_its_charts(browser, base, width):
    context = signed_in(browser, base, width)
    page = context.new_page()
    page.goto(f"{base}/operator/overview")
    page.locator("h1", has_text="Overview").wait_for()
    # The seeded figures are there: money in both currencies, the pilot, the overdue invoice, the attention.
    assert page.locator("#money-usd table").is_visible() and page.locator("#money-eur table").is_visible()
    assert page.locator("#pilots").inner_text().count("Pilot Valley School") == 1
    assert "99.00 EUR" in page.locator("#overdue").inner_text()
    assert page.locator("#attention-count").inner_text() == "1"
    assert "UTC" in page.locator("#as-of").inner_text()

    charts = page.locator("img.chart")
    assert charts.count() == 3  # USD, EUR and the funnel
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        assert chart.is_visible()
        loaded = chart.evaluate("img => img.complete && img.naturalWidth > 0")
        assert loaded, chart.get_attribute("src")
        box = chart.bounding_box()
        assert box["width"] > 100 and box["height"] > 40 and box["x"] >= 0 and box["x"] + box["width"] <= width

    assert axe_counts(f"operator overview at {width}", page)["rules"] == []  # not even a moderate one
    sideways = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert sideways[0] <= sideways[1], f"at {width} px the page is {sideways[0]} px wide"
    context.close()
