"""The second factor in a real browser (OPERATOR_2FA=required): enrolment at the first sign-in (the secret read from
the page, its codes computed as an authenticator app does), then signing in with a code, the same code replayed and
refused, and a recovery code that signs in once."""

import pyotp
import pytest

from paygate.core.db import db
from tests.helpers.apps import make_app
from tests.helpers.factors import NOW, stop_clock
from tests.helpers.operators import EMAIL, PASSWORD, add_operator
from tests.helpers.servers import free_port, serving

pytestmark = pytest.mark.browser


@pytest.fixture
def service(tmp_path, monkeypatch):
    # The server runs in a thread of this process: the codes are checked against the tests' clock, which moves a step
    # only when the test says so (no test waits 30 seconds for the next code).
    stop_clock(monkeypatch)
    port = free_port()
    app = make_app(
        f"sqlite:///{tmp_path / 'factors-browser.sqlite'}",
        public_url=f"http://127.0.0.1:{port}",
        operator_2fa="required",
    )
    add_operator(app)
    with serving(app, port):
        yield f"http://127.0.0.1:{port}"
    with app.app_context():
        db.engine.dispose()


def password(page, base):
    page.goto(f"{base}/operator/")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")


def sign_out(page, base):
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{base}/operator/sign-in")


def test_enrol_sign_in_with_a_code_once_and_a_recovery_code_once(browser, service, monkeypatch, tmp_path):
    base = service
    context = browser.new_context()
    page = context.new_page()

    # First sign-in: the password, then enrolment.
    password(page, base)
    page.wait_for_url(f"{base}/operator/sign-in/enrol**")
    assert page.locator("#qr svg").is_visible()
    page.screenshot(path=str(tmp_path / "enrolment.png"), full_page=True)
    secret = page.locator("#secret").inner_text().replace(" ", "")
    app = pyotp.TOTP(secret)  # what the operator's authenticator app computes
    first = app.at(NOW)
    page.fill("#code", first)
    page.click("#confirm")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    page.screenshot(path=str(tmp_path / "recovery-codes.png"), full_page=True)
    page.click("#continue")
    page.wait_for_url(f"{base}/operator/")
    assert page.locator("#operator-email").inner_text() == EMAIL

    # The code that confirmed the enrolment is spent: replayed, it is refused; the app's next code signs in.
    sign_out(page, base)
    password(page, base)
    page.wait_for_url(f"{base}/operator/sign-in/code**")
    page.fill("#code", first)
    page.click("#verify")
    assert "Wrong code, or a code already used." in page.locator("#code-error").inner_text()
    stop_clock(monkeypatch, NOW + 30)
    page.fill("#code", app.at(NOW + 30))
    page.click("#verify")
    page.wait_for_url(f"{base}/operator/")

    # A recovery code signs in once.
    sign_out(page, base)
    password(page, base)
    page.wait_for_url(f"{base}/operator/sign-in/code**")
    page.fill("#code", codes[0])
    page.click("#verify")
    page.wait_for_url(f"{base}/operator/")
    sign_out(page, base)
    password(page, base)
    page.wait_for_url(f"{base}/operator/sign-in/code**")
    page.fill("#code", codes[0])
    page.click("#verify")
    assert "Wrong code, or a code already used." in page.locator("#code-error").inner_text()
    assert page.url.startswith(f"{base}/operator/sign-in/code")
    context.close()
