"""An LMS admin's browser: the LMS stand-in's page with the registration frame, and the Checkout popup; and what
the local LTIaaS stand-in holds of a platform."""

import requests


def open_lms(browser, port, query=""):
    """The LMS page on another site (localhost) with the registration frame opened: (context, page, frame)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms{query}")
    page.click("#register")
    return context, page, page.frame_locator("#registration")


def open_checkout_popup(page, frame):
    """Click Pay in the frame: Checkout opens in a top-level popup (it refuses frames)."""
    with page.expect_popup() as popup_info:
        frame.locator("#pay").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    return popup


def finish(frame, timeout=15000):
    """Press Finish in the frame's confirmation (shown once the registration completed); only then does the frame
    run LTIaaS's html, and the LMS close its dialog."""
    frame.locator("#confirmation #licence-key, #confirmation #key-note").first.wait_for(timeout=timeout)
    press_finish(frame, timeout)


def press_finish(frame, timeout=15000):
    """Click Finish. The click runs LTIaaS's html, whose close message makes the LMS remove this very frame: the
    click must not wait for what follows in a frame that is gone (`no_wait_after`), or it may wait out its timeout."""
    frame.locator("#finish").click(timeout=timeout, no_wait_after=True)


def platform_at_ltiaas(port, platform_id) -> dict:
    """The platform as the local run's LTIaaS stand-in holds it (its `active` is what LTIaaS was told last)."""
    answer = requests.get(
        f"http://127.0.0.1:{port}/_local/ltiaas/admin/platforms/{platform_id}",
        headers={"Authorization": "Bearer local-standin-api-key"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()
