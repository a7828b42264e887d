"""A pilot in a real browser: the admin starts a free pilot in the LMS frame, keeps the key, presses Finish; later
the school pays for it by card on its licence page, and its platform is never deactivated on the way."""

import re

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration, TimelineEntry
from tests.helpers.browser import open_lms, platform_at_ltiaas, press_finish

pytestmark = pytest.mark.browser

CLOSED = "org.imsglobal.lti.close"


def test_a_pilot_started_in_the_frame_is_paid_on_its_licence_page_and_never_deactivated(browser, local_service):
    app, port = local_service
    context, page, frame = open_lms(browser, port, "?lms=moodle")  # one school's own LMS URL
    frame.locator("#start-pilot").click()
    frame.locator("#finish").wait_for(timeout=15000)
    key = frame.locator("#licence-key").inner_text()
    link = frame.locator("#licence-link").get_attribute("href")
    assert re.fullmatch(r"PG(-[0-9A-HJKMNP-TV-Z]{4}){4}", key) and link.endswith(f"/licence/{key}")
    assert "pilot" in frame.locator("#confirm-bought").inner_text().lower()
    press_finish(frame)
    page.locator("#lms-status").filter(has_text=CLOSED).wait_for(timeout=15000)
    with app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.state == "completed" and reg.licence.kind == "pilot"
        platform_id = reg.platform_id
    assert platform_at_ltiaas(port, platform_id)["active"] is True

    # Weeks later, the school's licence page (a top-level tab): it says pilot, and pays by card in Checkout there.
    licence_page = context.new_page()
    licence_page.goto(link)
    assert "pilot" in licence_page.locator("body").inner_text().lower()
    licence_page.locator("#licence-pay-card").click()
    licence_page.wait_for_url("**/_local/stripe/checkout/**")
    assert key not in licence_page.url
    licence_page.click("#pay")
    licence_page.wait_for_url(re.compile(r".*/licence/m/[^?]+\?notice=paid"), timeout=15000)
    assert key not in licence_page.url  # Stripe came back with the one-hour link, never the key
    context.close()

    with app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.licence.kind == "payment" and reg.licence.status == "succeeded"
        assert reg.access_wanted is True and reg.platform_active is True
        told = db.session.scalars(
            select(TimelineEntry.message).where(TimelineEntry.registration_pk == reg.id, TimelineEntry.kind == "access")
        ).all()
        assert not [m for m in told if "deactivate" in m], told  # never deactivated on the way
    assert platform_at_ltiaas(port, platform_id)["active"] is True
