"""The payment window never holds a handle on the LMS frame (noopener): Checkout, on another site, cannot
reach the frame through window.opener. Nothing needs it: the frame learns the outcome from the server,
and the cancel return closes its own window (the paid return stays: it shows the licence key). In Debian's
chromium, popup blocker on."""

import pytest

from tests.helpers.browser import finish, open_checkout_popup, open_lms

pytestmark = pytest.mark.browser


def _frame(page):
    return next(f for f in page.frames if "/pre-approval" in f.url)


def test_the_payment_popup_has_no_opener_and_closes_itself_only_when_cancelled(browser, local_service):
    _, port = local_service
    context, page, frame = open_lms(browser, port)
    frame.locator("#pay").wait_for()
    assert frame.locator("#pay-area").get_attribute("rel") == "noopener"
    assert frame.locator("#blocked a").get_attribute("rel") == "noopener"

    popup = open_checkout_popup(page, frame)
    assert "/_local/stripe/checkout/" in popup.url
    assert popup.evaluate("window.opener") is None
    popup.click("text=Back")
    popup.wait_for_url("**/cancel")
    assert popup.evaluate("window.opener") is None
    popup.wait_for_event("close", timeout=10000)  # the return page still closes its own window

    popup = open_checkout_popup(page, frame)
    assert popup.evaluate("window.opener") is None
    popup.click("#pay")
    popup.wait_for_url("**/paid?session_id=*")
    assert popup.evaluate("window.opener") is None
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    popup.wait_for_timeout(4500)  # past the cancel page's 4 s: the paid page keeps the key on screen
    assert not popup.is_closed() and popup.locator("#licence-key").inner_text().startswith("PG-")
    context.close()


def test_the_blocked_popup_link_opens_checkout_without_an_opener(browser, local_service):
    _, port = local_service
    context, page, frame = open_lms(browser, port)
    frame.locator("#pay").wait_for()
    _frame(page).evaluate("window.open = function () { return null; }")  # as a popup blocker answers
    frame.locator("#pay").click()
    link = frame.locator("#blocked a")
    link.wait_for()
    with context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert "/_local/stripe/checkout/" in tab.url
    assert tab.evaluate("window.opener") is None
    tab.click("#pay")
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    context.close()
