"""The licence key in a real browser: the admin pays, keeps the key the frame shows, presses Finish and the LMS
closes its dialog; a second registration from the same LMS page joins the licence with that key, without paying."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.browser import open_checkout_popup, open_lms, platform_at_ltiaas, press_finish

pytestmark = pytest.mark.browser

CLOSED = "org.imsglobal.lti.close"


def test_pay_keep_the_key_finish_then_register_another_lms_with_it(browser, local_service):
    app, port = local_service
    context, page, frame = open_lms(browser, port)
    popup = open_checkout_popup(page, frame)
    popup.click("#pay")
    popup.wait_for_url("**/paid?session_id=*")
    key = popup.locator("#licence-key").inner_text()
    assert key.startswith("PG-") and popup.locator("#finish").count() == 0
    assert popup.locator("#licence-link").get_attribute("href") == f"http://127.0.0.1:{port}/licence/{key}"

    # The frame shows the same key and waits for Finish: the dialog stays open meanwhile.
    frame.locator("#licence-key").wait_for(timeout=15000)
    assert frame.locator("#licence-key").inner_text() == key
    assert frame.locator("#licence-link").get_attribute("rel") == "noopener noreferrer"
    assert frame.locator("#licence-link").get_attribute("target") == "_blank"
    assert "Finish" in frame.locator("#status").inner_text()
    frame.locator("#copy-key").click()
    frame.locator("#copy-said").filter(has_text="Copied").wait_for(timeout=5000)
    page.wait_for_timeout(1500)  # well past the old automatic close
    assert page.locator("#registration").count() == 1 and CLOSED not in page.locator("#lms-status").inner_text()
    press_finish(frame)
    page.locator("#lms-status").filter(has_text=CLOSED).wait_for(timeout=15000)
    assert page.locator("#registration").count() == 0

    # A second registration from the same LMS page: the admin types the key (any case, spaces), no payment.
    page.click("#register")
    frame = page.frame_locator("#registration")
    frame.locator("#key-option summary").click()
    frame.locator("#licence-key-input").fill(key.lower().replace("-", " "))
    frame.locator("#use-key").click()
    frame.locator("#finish").wait_for(timeout=15000)
    assert frame.locator("#licence-key").inner_text() == key
    assert "No payment was made" in frame.locator("#confirm-reference").inner_text()
    press_finish(frame)
    page.locator("#lms-status").filter(has_text=CLOSED).wait_for(timeout=15000)
    assert page.locator("#registration").count() == 0
    assert "ignored" not in page.locator("#lms-log").inner_text()
    context.close()

    with app.app_context():
        regs = db.session.scalars(select(Registration).order_by(Registration.id)).all()
        assert [r.state for r in regs] == ["completed", "completed"]
        assert regs[0].licence_pk == regs[1].licence_pk and regs[1].payment_session_id is None
        platform_ids = [r.platform_id for r in regs]
    assert all(platform_at_ltiaas(port, p)["active"] is True for p in platform_ids)
