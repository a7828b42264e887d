"""An operator in a real browser: sign in, find a paid registration by payer e-mail, refund it,
see the refund and who made it in the timeline. Stripe and LTIaaS are faked by `responses`, which
patches `requests` for the whole process, the server thread included."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.apps import make_app
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, paid_registration
from tests.helpers.servers import free_port, serving

pytestmark = pytest.mark.browser


@pytest.fixture
def operator_service(tmp_path, stripe_api, ltiaas_api):
    port = free_port()
    app = make_app(f"sqlite:///{tmp_path / 'operator-browser.sqlite'}", public_url=f"http://127.0.0.1:{port}")
    add_operator(app)
    seeding = app.test_client()
    others = [
        paid_registration(seeding, stripe_api, ltiaas_api, email=f"someone{i}@elsewhere.example") for i in range(3)
    ]
    target = paid_registration(
        seeding,
        stripe_api,
        ltiaas_api,
        email="billing@school.example",
        url="https://canvas.school.example",
        family="canvas",
    )
    with serving(app, port):
        yield app, port, target, others
    with app.app_context():
        db.engine.dispose()


def test_operator_finds_and_refunds_a_paid_registration(browser, operator_service, stripe_api, tmp_path):
    app, port, target, others = operator_service
    print(f"\nbrowser version: {browser.version}")
    base = f"http://127.0.0.1:{port}"
    context = browser.new_context()
    page = context.new_page()

    page.goto(f"{base}/operator/")
    assert page.url.startswith(f"{base}/operator/sign-in")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/operator/")
    assert page.locator("#operator-email").inner_text() == EMAIL

    page.fill("#q", "Billing@School.example")
    page.click("#apply")
    page.wait_for_url("**/operator/?*q=Billing*")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 1
    assert "billing@school.example" in rows.first.inner_text()
    assert "completed" in rows.first.inner_text()
    rows.first.locator("a.reg-link").click()
    page.wait_for_url(f"{base}/operator/registrations/{target}")

    page.click("#refund-start")
    page.wait_for_url(f"{base}/operator/registrations/{target}/refund")
    assert "49.00 USD" in page.locator("#refund-amount").inner_text()
    assert page.locator("#refund-payer").inner_text() == "billing@school.example"
    assert page.locator("#platform-warning").is_visible()
    page.click("#confirm-refund")
    page.wait_for_url(f"{base}/operator/registrations/{target}")

    assert "Refunded 49.00 USD" in page.locator(".flash-ok").inner_text()
    assert "refunded" in page.locator("#state").inner_text()
    last_state = page.locator("#timeline tr.kind-state").last
    assert "refunded" in last_state.inner_text() and f"operator {EMAIL}" in last_state.inner_text()
    page.screenshot(path=str(tmp_path / "operator-refunded.png"), full_page=True)

    # The second look: nothing more to refund, and Stripe was asked once.
    assert page.locator("#refund-start").count() == 0
    assert len([c for c in stripe_api.calls if c[0] == "refund"]) == 1
    with app.app_context():
        states = dict(db.session.execute(select(Registration.id, Registration.state)).all())
    assert states[target] == "refunded" and all(states[pk] == "completed" for pk in others)
    context.close()
