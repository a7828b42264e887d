"""An LMS admin in a real browser: LMS page, registration iframe, pay in the popup, dialog closes.

The LMS page (localhost) and the service (127.0.0.1) are different sites, so the frame's cookies are
third-party and blocked; the popup blocker is on. The service runs with its built-in stand-ins.
"""

import pytest

from paygate.core.db import db
from tests.helpers.browser import finish, open_checkout_popup, open_lms

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("lms", ["canvas", "moodle"])
def test_admin_pays_in_popup_and_lms_receives_close(browser, local_service, lms, tmp_path):
    app, port = local_service
    context, page, frame = open_lms(browser, port, f"?lms={lms}")
    frame.locator("#price").wait_for()
    assert "49.00 USD" in frame.locator("#price").inner_text()
    assert frame.locator("#lms-name").inner_text() == {"canvas": "Canvas (cloud)", "moodle": "Moodle 4.4.1+"}[lms]
    # No cookie was needed, and none could be stored in the cross-site frame.
    assert context.cookies(f"http://127.0.0.1:{port}") == []

    popup = open_checkout_popup(page, frame)
    assert "/_local/stripe/checkout/" in popup.url  # a top-level window: Checkout refuses frames
    frame.locator("#status").filter(has_text="Complete the payment").wait_for()

    popup.click("#pay")
    popup.wait_for_url("**/paid?session_id=*")
    assert "payment was received" in popup.locator("#message").inner_text()

    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    assert page.locator("#registration").count() == 0  # the LMS closed the dialog
    assert "ignored" not in page.locator("#lms-log").inner_text()
    page.screenshot(path=str(tmp_path / f"lms-{lms}-closed.png"))

    with app.app_context():
        from paygate.core.models import Registration

        reg = db.session.scalars(db.select(Registration)).one()
        assert reg.state == "completed" and reg.platform_id and reg.payer_email
    context.close()


def test_cancel_then_pay_again_in_the_same_frame(browser, local_service):
    _, port = local_service
    context, page, frame = open_lms(browser, port)
    popup = open_checkout_popup(page, frame)
    popup.click("text=Back")
    popup.wait_for_url("**/cancel")
    frame.locator("#status").filter(has_text="cancelled").wait_for(timeout=10000)
    popup.wait_for_event("close", timeout=10000)  # the return page closes its own window

    open_checkout_popup(page, frame).click("#pay")
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    context.close()


def test_payment_to_close_median(browser, local_service, capsys):
    """From the admin's click on Pay in Checkout to the LMS closing its dialog, over five payments
    (printed for the record; the target, a median of at most 2 s, is read off this output)."""
    import statistics
    import time

    app, port = local_service
    rounds = []
    for _ in range(5):
        context, page, frame = open_lms(browser, port)
        popup = open_checkout_popup(page, frame)
        started = time.monotonic()
        popup.click("#pay")
        finish(frame)  # the confirmation stays until the admin presses Finish
        page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
        rounds.append(time.monotonic() - started)
        assert page.locator("#registration").count() == 0
        context.close()
    with app.app_context():
        from paygate.core.models import Registration

        states = db.session.scalars(db.select(Registration.state)).all()
    assert states == ["completed"] * 5  # each paid registration completed, none twice or left behind
    with capsys.disabled():
        print(
            f"\npayment-to-close: median {statistics.median(rounds):.2f} s over {len(rounds)} payments "
            f"({', '.join(f'{r:.2f}' for r in rounds)} s)"
        )
