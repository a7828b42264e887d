"""Billing in a real browser: a yearly subscription paid in the Checkout popup, and pay by invoice in the
LMS frame; then the platform's access at LTIaaS follows what Stripe says (clicked in the stand-in's
dashboard, delivered as signed webhooks).

As in test_browser_flow.py: the LMS page (localhost) and the service (127.0.0.1) are different sites,
so the frame's cookies are third-party and blocked; the popup blocker is on; the service runs with its
built-in stand-ins (APP_ENV=local). The stand-in dashboard and the operator pages are the vendor's, so
they open in a browser context of their own.
"""

import re
import time

import pytest
import requests
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, Registration, StripeEvent
from tests.helpers.browser import finish, open_checkout_popup
from tests.helpers.operators import EMAIL, PASSWORD, add_operator

pytestmark = pytest.mark.browser

LTIAAS_KEY = "local-standin-api-key"
CLOSED = "Registration complete: the LMS received org.imsglobal.lti.close"

# Records every text the registration frame's #status shows, from the server-rendered one on: the
# frame is removed by the LMS as soon as it receives the close message, too soon to read it after.
STATUS_RECORDER = """
(() => {
  if (window.top === window) { return; }
  const report = (text) => { try { window.paygateFrameStatus(text); } catch (e) { /* not ours */ } };
  document.addEventListener('DOMContentLoaded', () => {
    const status = document.getElementById('status');
    if (!status) { return; }
    report(status.textContent);
    new MutationObserver(() => report(status.textContent))
      .observe(status, {childList: true, characterData: true, subtree: true});
  });
})();
"""


def open_lms(browser, port):
    """The LMS page on another site (localhost), the registration frame open, and what its #status showed."""
    context = browser.new_context()
    shown: list[str] = []
    context.expose_binding("paygateFrameStatus", lambda source, text: shown.append(" ".join(text.split())))
    context.add_init_script(STATUS_RECORDER)
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms")
    page.click("#register")
    frame = page.frame_locator("#registration")
    frame.locator("#price").wait_for()
    return context, page, frame, shown


def eventually(check, what: str, timeout: float = 10.0):
    """Poll `check` until it returns something true; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        time.sleep(0.1)


def unaccepted_events(app, port) -> dict:
    """Events the Stripe stand-in sent that the service has not recorded (it answered them with an error)."""
    sent = {event["id"]: event["type"] for event in stripe_snapshot(port)["events"]}
    with app.app_context():
        recorded = set(db.session.scalars(select(StripeEvent.event_id)))
    return {event_id: kind for event_id, kind in sent.items() if event_id not in recorded}


def assert_every_webhook_accepted(app, port):
    """Each signed event the stand-in delivered was verified and recorded: none was answered 4xx/5xx."""
    try:
        eventually(lambda: not unaccepted_events(app, port), "every webhook accepted", timeout=5)
    except AssertionError:
        raise AssertionError(f"webhooks not accepted by the service: {unaccepted_events(app, port)}") from None


def registration(app) -> Registration:
    """The one registration, read afresh (a new app context is a new session)."""
    with app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        db.session.expunge(reg)
        return reg


def licence(app) -> Licence | None:
    with app.app_context():
        found = db.session.scalars(select(Licence)).first()
        if found is not None:
            db.session.expunge(found)
        return found


def platform_at_ltiaas(port, platform_id) -> dict:
    """The platform as the LTIaaS stand-in's platform API has it."""
    response = requests.get(
        f"http://127.0.0.1:{port}/_local/ltiaas/admin/platforms/{platform_id}",
        headers={"Authorization": f"Bearer {LTIAAS_KEY}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()


def access_is(app, port, active: bool):
    """A check: LTIaaS has the platform `active`, and the service knows it told LTIaaS so."""

    def check():
        reg = registration(app)
        return (
            platform_at_ltiaas(port, reg.platform_id)["active"] is active
            and reg.platform_active is active
            and reg.access_wanted is active
        )

    return check


def stripe_snapshot(port) -> dict:
    response = requests.get(f"http://127.0.0.1:{port}/_local/stripe/dashboard.json", timeout=5)
    assert response.status_code == 200
    return response.json()


def click_in_dashboard(dashboard, port, button_id: str):
    """The vendor clicks a button in the stand-in Stripe dashboard; the page says it was done."""
    dashboard.goto(f"http://127.0.0.1:{port}/_local/stripe/dashboard")
    dashboard.click(f"#{button_id}")
    dashboard.wait_for_url("**/_local/stripe/dashboard?notice=*")
    notice = dashboard.locator("#notice").inner_text()
    assert "done for" in notice, notice


def sign_in_operator(page, base):
    page.goto(f"{base}/operator/")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/operator/")


def test_yearly_subscription_then_access_follows_the_subscription(browser, start_service, tmp_path):
    started = time.monotonic()
    app, port = start_service(stripe_price_id="price_local_yearly")
    base = f"http://127.0.0.1:{port}"
    add_operator(app)
    context, page, frame, shown = open_lms(browser, port)
    assert frame.locator("#price").inner_text() == "49.00 USD per year"
    assert "per year" in frame.locator("#pay").inner_text()

    popup = open_checkout_popup(page, frame)
    assert "/_local/stripe/checkout/" in popup.url
    popup.click("#pay")
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    assert page.locator("#lms-status").inner_text() == CLOSED
    assert page.locator("#registration").count() == 0  # the LMS closed the dialog
    assert "ignored" not in page.locator("#lms-log").inner_text()
    assert any("Payment received and the tool is registered" in text for text in shown), shown
    # No cookie was needed, and none was stored for the service, in the frame or the popup.
    assert context.cookies(base) == []

    reg = registration(app)
    assert reg.state == "completed" and reg.platform_id and reg.price_interval
    lic = licence(app)
    assert (lic.kind, lic.status) == ("subscription", "active") and lic.subscription_id
    eventually(access_is(app, port, True), "the platform active at LTIaaS")
    sub_id = lic.subscription_id

    vendor = browser.new_context()  # the vendor's own browser: Stripe's dashboard and the operator pages
    dashboard = vendor.new_page()
    operator = vendor.new_page()
    sign_in_operator(operator, base)

    # The renewal is not paid and Stripe's retries give up: the subscription is unpaid, access ends.
    click_in_dashboard(dashboard, port, f"sub-unpaid-{sub_id}")
    eventually(access_is(app, port, False), "the platform inactive at LTIaaS after the subscription is unpaid")
    assert licence(app).status == "unpaid"
    operator.goto(f"{base}/operator/registrations/{reg.id}")
    assert operator.locator("#licence-kind").inner_text() == "subscription"
    assert "unpaid" in operator.locator("#licence-status").inner_text()
    assert operator.locator("#access .access-inactive").inner_text() == "inactive"
    assert "subscription unpaid" in operator.locator("#access").inner_text()

    # The customer pays the renewal: the subscription is active again, and so is the platform.
    click_in_dashboard(dashboard, port, f"sub-active-{sub_id}")
    eventually(access_is(app, port, True), "the platform active again after the renewal is paid")
    assert licence(app).status == "active"
    operator.goto(f"{base}/operator/registrations/{reg.id}")
    assert operator.locator("#licence-kind").inner_text() == "subscription"
    assert "active" in operator.locator("#licence-status").inner_text()
    assert operator.locator("#access .access-active").inner_text() == "active"
    assert "pending" not in operator.locator("#access").inner_text()
    timeline = operator.locator("#timeline").inner_text()
    assert "LTIaaS deactivated platform" in timeline and "LTIaaS activated platform" in timeline
    operator.screenshot(path=str(tmp_path / "operator-subscription.png"), full_page=True)
    assert_every_webhook_accepted(app, port)

    assert context.cookies(base) == []
    vendor.close()
    context.close()
    print(f"\nsubscription test body: {time.monotonic() - started:.1f} s")


def open_invoice_option(frame):
    """Open "Pay by invoice instead" unless it is open already (the page reopens it after an error)."""
    option = frame.locator("#invoice-option")
    if not option.evaluate("details => details.open"):
        option.locator("summary").click()
    frame.locator("#billing_email").wait_for(state="visible")


def test_pay_by_invoice_in_the_frame_then_access_follows_the_invoice(browser, start_service, tmp_path):
    started = time.monotonic()
    app, port = start_service(invoice_days_until_due=30, invoice_access="on_payment")
    base = f"http://127.0.0.1:{port}"
    context, page, frame, shown = open_lms(browser, port)
    assert frame.locator("#price").inner_text() == "49.00 USD, paid once"
    open_invoice_option(frame)
    assert "30 days" in frame.locator("#invoice-explained").inner_text()

    # Markup in the organisation: refused with one sentence, echoed as text, nothing made at Stripe.
    frame.locator("#billing_email").fill("finance@school.example")
    frame.locator("#organisation").fill("<b>x</b>")
    frame.locator("#send-invoice").click()
    error = frame.locator("#invoice-error")
    error.wait_for()
    text = error.inner_text()
    assert "organisation" in text and text.endswith(".") and ". " not in text, text
    assert frame.locator("#organisation").get_attribute("aria-invalid") == "true"
    assert frame.locator("#organisation").input_value() == "<b>x</b>"
    assert frame.locator("#invoice-option b").count() == 0  # shown as text, never as markup

    # A line break in the e-mail (a header injection), sent as a hostile page would: refused too.
    open_invoice_option(frame)
    frame.locator("#billing_email").evaluate("""input => {
        const area = document.createElement('textarea');
        area.id = input.id; area.name = input.name;
        area.value = 'finance@school.example\\nBcc: someone@elsewhere.example';
        input.replaceWith(area);
    }""")
    frame.locator("#organisation").fill("Springfield Elementary")
    frame.locator("#send-invoice").click()
    frame.locator("#invoice-error").filter(has_text="e-mail").wait_for()
    text = frame.locator("#invoice-error").inner_text()
    assert text.endswith(".") and ". " not in text, text
    assert frame.locator("#billing_email").get_attribute("aria-invalid") == "true"

    snapshot = stripe_snapshot(port)
    assert snapshot["customer"] == [] and snapshot["invoice"] == [], snapshot
    assert licence(app) is None and registration(app).state == "pending"

    # Now a proper request: the frame posts, comes back to the pre-approval page, and the LMS closes.
    open_invoice_option(frame)
    frame.locator("#billing_email").fill("finance@school.example")
    frame.locator("#organisation").fill("Springfield Elementary")
    frame.locator("#po_number").fill("PO-2024-117")
    with (
        page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/invoice")) as posted,
        page.expect_event("framenavigated", lambda f: "/pre-approval?registrationId=" in f.url),
    ):
        frame.locator("#send-invoice").click()
    assert posted.value.status == 303
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    assert page.locator("#lms-status").inner_text() == CLOSED
    assert page.locator("#registration").count() == 0
    assert "ignored" not in page.locator("#lms-log").inner_text()
    sentence = re.compile(
        r"Invoice \S+ sent to finance@school\.example, due \d{4}-\d{2}-\d{2}, and the tool is "
        r"registered\."
    )
    assert any(sentence.search(text) for text in shown), shown
    assert context.cookies(base) == []

    reg = registration(app)
    lic = licence(app)
    assert reg.state == "completed" and reg.platform_id
    assert (lic.kind, lic.status, lic.billing_email, lic.organisation, lic.po_number) == (
        "invoice",
        "open",
        "finance@school.example",
        "Springfield Elementary",
        "PO-2024-117",
    )
    assert lic.invoice_id and lic.invoice_sent_at is not None
    # Access on payment: registered at LTIaaS, but inactive until the invoice is paid.
    assert platform_at_ltiaas(port, reg.platform_id)["active"] is False
    assert reg.platform_active is False and reg.access_wanted is False
    snapshot = stripe_snapshot(port)
    assert len(snapshot["customer"]) == 1 and len(snapshot["invoice"]) == 1

    vendor = browser.new_context()
    dashboard = vendor.new_page()
    click_in_dashboard(dashboard, port, f"invoice-paid-{lic.invoice_id}")
    eventually(access_is(app, port, True), "the platform active at LTIaaS once the invoice is paid")
    assert licence(app).status == "paid"
    dashboard.screenshot(path=str(tmp_path / "dashboard-invoice-paid.png"), full_page=True)
    assert_every_webhook_accepted(app, port)

    assert context.cookies(base) == []
    vendor.close()
    context.close()
    print(f"\ninvoice test body: {time.monotonic() - started:.1f} s")
