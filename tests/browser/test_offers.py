"""An LMS admin in Spanish chooses the per-student offer among three, types 120 students, sees the total in
Spanish, pays in the Checkout popup and sees the LMS dialog close. The LMS page (localhost) and the service
(127.0.0.1) are different sites; the service runs with its built-in stand-ins and their three offers."""

import pytest

from paygate.core.db import db
from tests.helpers.browser import finish

pytestmark = pytest.mark.browser

THREE = "price_local_seats_yearly,price_local_registration,price_local_tiered"


def test_an_admin_buys_120_seats_in_spanish_and_the_dialog_closes(browser, start_service, tmp_path):
    app, port = start_service(stripe_price_id=THREE)
    context = browser.new_context(locale="es-ES")
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms?lms=canvas")
    page.click("#register")
    frame = page.frame_locator("#registration")
    frame.locator("#offers").wait_for()
    assert frame.locator("html").get_attribute("lang") == "es"
    assert frame.locator("#offers input[name=offer]").count() == 3
    assert frame.locator("#offer-1").is_checked()  # the first offer is chosen at first
    # The keyboard chooses another offer and comes back: arrow keys move within the radio group.
    frame.locator("#offer-1").focus()
    page.keyboard.press("ArrowDown")
    assert frame.locator("#offer-2").is_checked()
    frame.locator("#seats-area").wait_for(state="hidden")
    page.keyboard.press("ArrowUp")
    frame.locator("#seats-area").wait_for(state="visible")

    seats = frame.locator("#seats")
    assert seats.input_value() == "10"
    seats.fill("2.5")
    frame.locator("#pay").click()  # refused in the frame: no popup, nothing at Stripe
    frame.locator("#seats-error").filter(has_text="número de estudiantes").wait_for()
    seats.fill("120")
    frame.locator("#quote").filter(has_text="120 estudiantes × 3,00 USD = 360,00 USD al año").wait_for()
    assert frame.locator("#seats-error").is_hidden()
    assert frame.locator("#pay").inner_text() == "Pagar 360,00 USD al año con tarjeta"
    page.screenshot(path=str(tmp_path / "offers-es.png"))

    with page.expect_popup() as popup_info:
        frame.locator("#pay").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.locator("#quantity").inner_text().strip().startswith("120")
    assert "360.00" in popup.locator("#amount").inner_text()
    popup.click("#pay")
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    assert page.locator("#registration").count() == 0  # the LMS closed the dialog

    with app.app_context():
        from paygate.core.models import Licence

        licence = db.session.scalars(db.select(Licence)).one()
        assert (licence.price_id, licence.quantity, licence.seat_unit) == ("price_local_seats_yearly", 120, "student")
        assert licence.organisation == "Springfield Elementary"
    context.close()
