"""The operator's list fits a 1280 px screen: no sideways scrolling of the page, nor of the list itself, with rows
that carry long LMS URLs, payer names, refunds and disputes."""

import pytest

from paygate.core.db import db
from tests.helpers.apps import make_app
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, paid_registration, seed
from tests.helpers.servers import free_port, serving
from tests.helpers.webhooks import send

pytestmark = pytest.mark.browser


@pytest.fixture
def busy_list(tmp_path, stripe_api, ltiaas_api):
    port = free_port()
    app = make_app(f"sqlite:///{tmp_path / 'list-width.sqlite'}", public_url=f"http://127.0.0.1:{port}")
    add_operator(app)
    client = app.test_client()
    for i in range(3):
        paid_registration(
            client,
            stripe_api,
            ltiaas_api,
            email=f"accounts-payable-department{i}@a-rather-long-school-district-name.example",
            url=f"https://canvas.a-rather-long-school-district-name-{i}.example/courses",
        )
    refund = stripe_api.refund_in_dashboard(next(iter(stripe_api.sessions.values()))["payment_intent"], amount=1000)
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    seed(app, 5, payer_name="Springfield Unified School District Finance Office", attention="completion_refused")
    with serving(app, port):
        yield port
    with app.app_context():
        db.engine.dispose()


def test_the_list_fits_1280_px_without_sideways_scrolling(browser, busy_list):
    base = f"http://127.0.0.1:{busy_list}"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{base}/operator/")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/operator/")
    assert page.locator("table.list tbody tr").count() >= 8
    widths = page.evaluate(
        """() => ({
            page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
            lists: [...document.querySelectorAll('table.list')].map(t => [t.parentElement.scrollWidth,
                                                                           t.parentElement.clientWidth]),
        })"""
    )
    assert widths["page"][0] <= widths["page"][1], widths
    for scroll, client in widths["lists"]:
        assert scroll <= client, widths
    context.close()
