"""A newcomer's first hour, in a browser: the LMS stand-in's Brightspace tab, and its timed-out and
needs-attention registrations (the local run itself: tests/system/test_local_run.py)."""

import pytest

from paygate.application import create_app
from paygate.core.db import db
from tests.helpers.apps import empty
from tests.helpers.browser import finish, open_checkout_popup
from tests.helpers.servers import free_port, serving


@pytest.fixture
def local_service(tmp_path):
    port = free_port()
    app = create_app(
        {
            "app_env": "local",
            "database_url": f"sqlite:///{tmp_path / 'standin.sqlite'}",
            "public_url": f"http://127.0.0.1:{port}",
            "secret_key": "local-run-test-" + "k" * 20,
        }
    )
    empty(app)
    from paygate.standins import reset

    reset()
    with serving(app, port):
        yield app, port
    with app.app_context():
        db.engine.dispose()


@pytest.mark.browser
def test_the_brightspace_stand_in_registers_in_a_new_tab(browser, local_service):
    _, port = local_service
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms?lms=brightspace")
    assert page.locator("#mode-tab").is_checked()
    with page.expect_popup() as tab_info:  # Brightspace opens the registration in a tab, not a frame
        page.click("#register")
    tab = tab_info.value
    tab.locator("#pay").wait_for()
    assert tab.locator("#lms").get_attribute("data-family") == "desire2learn"
    assert tab.evaluate("window.opener !== null && window.parent === window")
    with tab.expect_popup() as popup_info:
        tab.click("#pay")
    checkout = popup_info.value
    checkout.wait_for_load_state()
    checkout.click("#pay")
    finish(tab)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    for _ in range(50):  # the LMS closes its tab, as Brightspace does
        if tab.is_closed():
            break
        page.wait_for_timeout(100)
    assert tab.is_closed()
    assert page.locator("#registration").count() == 0
    context.close()


@pytest.mark.browser
def test_the_stand_in_reaches_the_timed_out_and_needs_attention_screens(browser, local_service):
    app, port = local_service
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms")

    page.click("#register-timed-out")
    frame = page.frame_locator("#registration")
    frame.locator('#flow[data-phase="stop"]').wait_for()
    assert frame.locator("#pay-area").is_hidden()
    assert "timed out" in frame.locator("#status").inner_text()

    page.click("#register-needs-attention")
    frame = page.frame_locator("#registration")
    popup = open_checkout_popup(page, frame)
    popup.click("#pay")
    frame.locator('#flow[data-state="needs_attention"]').wait_for(timeout=15000)
    assert frame.locator("#pay-area").is_hidden()
    from paygate.core.models import Registration

    with app.app_context():
        states = dict(db.session.execute(db.select(Registration.state, Registration.attention)).all())
    assert states == {"pending": None, "needs_attention": "completion_refused"}
    context.close()
