"""Accessibility in a real browser (docs/accessibility.md): axe-core on every admin and operator page,
at 1280 and at 320 CSS px wide; the Pay button by keyboard; a live status region that speaks only when
its sentence changes; the payment window's button; a blocked payment window.

axe-core comes from the axe-playwright-python package (its bundled axe.min.js); the browser is
Debian's chromium with the popup blocker on (tests/browser/conftest.py). One local service (built-in stand-ins,
SQLite) serves the whole module; each page is set up once.
"""

import collections
import json
import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from sqlalchemy import select, update

from paygate.application import create_app
from paygate.core.db import db, utcnow
from paygate.core.models import Registration
from tests.helpers.apps import empty
from tests.helpers.browser import finish
from tests.helpers.operators import EMAIL, PASSWORD, add_operator
from tests.helpers.servers import free_port, serving

pytestmark = pytest.mark.browser

AXE = Axe()
NARROW = 320
# Every rule axe-core runs by default: WCAG 2.0, 2.1 and 2.2 A and AA, and its best practices.
BLOCKING = ("critical", "serious")
REPORT: dict[str, dict] = {}


def axe_counts(name: str, target) -> dict:
    """Run axe-core on a page or frame; record and return its violations by impact."""
    results = AXE.run(target)
    violations = results.response["violations"]
    counts = collections.Counter(v["impact"] for v in violations)
    summary = {
        "critical": counts["critical"],
        "serious": counts["serious"],
        "other": sum(n for impact, n in counts.items() if impact not in BLOCKING),
        "rules": sorted(f"{v['id']} ({v['impact']})" for v in violations),
        # What axe could not decide alone (e.g. contrast over an image): reviewed by hand.
        "review": sorted({v["id"] for v in results.response.get("incomplete", [])}),
    }
    REPORT[name] = summary
    print(f"axe {name}: {json.dumps(summary)}")
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"{name}:\n{results.generate_report()}"
    return summary


def scroll_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


# ---------------------------------------------------------------------------------------------------
# One service, its registrations in every phase, and signed-in operator contexts.


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    port = free_port()
    path = tmp_path_factory.mktemp("a11y") / "a11y.sqlite"
    app = create_app(
        {
            "app_env": "local",
            "database_url": f"sqlite:///{path}",
            "public_url": f"http://127.0.0.1:{port}",
            "secret_key": "a11y-test",
        }
    )
    empty(app)
    from paygate.standins import reset

    reset()
    add_operator(app)
    with serving(app, port):
        yield app, port
    with app.app_context():
        db.engine.dispose()


def start_registration(page, base) -> str:
    """A new registration opened standalone (as a Brightspace tab would): its LTIaaS id."""
    page.goto(
        f"{base}/_local/ltiaas/lti/register?openid_configuration={base}/_local/lms/openid-configuration"
        "&registration_token=local-token-a11y"
    )
    page.locator("#status").wait_for()
    return re.search(r"registrationId=([^&]+)", page.url).group(1)


def set_state(app, registration_id: str, **values) -> int:
    with app.app_context():
        db.session.execute(update(Registration).where(Registration.registration_id == registration_id).values(**values))
        db.session.commit()
        return db.session.scalars(select(Registration.id).where(Registration.registration_id == registration_id)).one()


def open_lms(browser, port, context=None):
    context = context or browser.new_context()
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms")
    page.click("#register")
    frame = page.frame_locator("#registration")
    frame.locator("#status").wait_for()
    return context, page, frame


def frame_of(page):
    return page.locator("#registration").element_handle().content_frame()


@pytest.fixture(scope="module")
def world(browser, service):
    """Registrations in each phase, set up once: the paid one through the real frame and popup."""
    app, port = service
    base = f"http://127.0.0.1:{port}"
    context, page, frame = open_lms(browser, port)
    with page.expect_popup() as popup_info:
        frame.locator("#pay").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    popup.click("#pay")
    popup.wait_for_url("**/paid?session_id=*")
    paid_path = popup.url.split(base, 1)[1]
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    with app.app_context():
        done = db.session.scalars(select(Registration).where(Registration.state == "completed")).one()
        done = {"registration_id": done.registration_id, "pk": done.id, "token": done.flow_token}
    page.close()

    page = context.new_page()
    attention = start_registration(page, base)
    attention_pk = set_state(
        app,
        attention,
        state="needs_attention",
        attention="completion_refused",
        amount_paid=4900,
        currency_paid="usd",
        payer_email="billing@school.example",
        paid_at=utcnow(),
    )
    stopped = start_registration(page, base)
    set_state(app, stopped, state="abandoned")
    unknown = start_registration(page, base)
    unknown_pk = set_state(
        app,
        unknown,
        state="completed",
        platform_id="Punknown0001",
        platform_active=None,
        access_wanted=True,
        access_reason="paid",
        completed_at=utcnow(),
        payment_session_id="cs_test_unknown",
        payer_email="other@school.example",
    )
    pending = start_registration(page, base)
    with app.app_context():
        pending_token = db.session.scalars(
            select(Registration.flow_token).where(Registration.registration_id == pending)
        ).one()
    context.close()
    return {
        "base": base,
        "port": port,
        "paid_path": paid_path,
        "done": done,
        "attention": attention,
        "attention_pk": attention_pk,
        "stopped": stopped,
        "unknown_pk": unknown_pk,
        "pending": pending,
        "pending_token": pending_token,
    }


def signed_in(browser, base, width: int):
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.goto(f"{base}/operator/sign-in")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/operator/overview")  # where signing in leads
    page.close()
    return context


@pytest.fixture(scope="module")
def contexts(browser, world):
    """(width -> browser context with an operator signed in)."""
    made = {width: signed_in(browser, world["base"], width) for width in (1280, NARROW)}
    yield made
    for context in made.values():
        context.close()


# ---------------------------------------------------------------------------------------------------
# Every page, at two widths


def _pre_approval(registration_id):
    return lambda page, w: page.goto(f"{w['base']}/pre-approval?registrationId={registration_id}")


def _invoice_open(page, w):
    _pre_approval(w["pending"])(page, w)
    page.click("#invoice-option summary")
    page.locator("#billing_email").wait_for()


def _invoice_refused(page, w):
    _invoice_open(page, w)
    page.fill("#billing_email", "finance@school")  # passes the browser's check, not the server's
    page.fill("#organisation", "Springfield School District")
    page.click("#send-invoice")
    page.locator("#invoice-error").wait_for()


def _sign_in_failed(page, w):
    page.goto(f"{w['base']}/operator/sign-in")
    page.fill("#email", EMAIL)
    page.fill("#password", "not the password")
    page.click("#sign-in")
    page.locator("#sign-in-error").wait_for()


ADMIN_PAGES = {
    "pre-approval standalone, pay": lambda page, w: _pre_approval(w["pending"])(page, w),
    "pre-approval, invoice form": _invoice_open,
    "pre-approval, invoice refused": _invoice_refused,
    "pre-approval, wait (needs attention)": lambda page, w: _pre_approval(w["attention"])(page, w),
    "pre-approval, done": lambda page, w: _pre_approval(w["done"]["registration_id"])(page, w),
    "pre-approval, stop (expired)": lambda page, w: _pre_approval(w["stopped"])(page, w),
    "message, link not valid (400)": lambda page, w: page.goto(f"{w['base']}/pre-approval"),
    "message, registration expired (410)": lambda page, w: page.goto(
        f"{w['base']}/pre-approval?registrationId=gone0000000000"
    ),
    "message, unknown link (404)": lambda page, w: page.goto(f"{w['base']}/flow/{'x' * 40}/pay"),
    "message, already paid (409)": lambda page, w: page.goto(f"{w['base']}/flow/{w['done']['token']}/pay"),
    "popup return, paid": lambda page, w: page.goto(w["base"] + w["paid_path"]),
    "popup return, cancelled": lambda page, w: page.goto(f"{w['base']}/flow/{w['pending_token']}/cancel"),
}
OPERATOR_PAGES = {
    "operator sign-in": lambda page, w: page.goto(f"{w['base']}/operator/sign-in"),
    "operator sign-in, failed": _sign_in_failed,
    "operator list": lambda page, w: page.goto(f"{w['base']}/operator/"),
    "operator list, filtered, empty": lambda page, w: page.goto(f"{w['base']}/operator/?q=nobody%40nowhere.example"),
    "operator detail, completed": lambda page, w: page.goto(f"{w['base']}/operator/registrations/{w['done']['pk']}"),
    "operator detail, needs attention": lambda page, w: page.goto(
        f"{w['base']}/operator/registrations/{w['attention_pk']}"
    ),
    "operator detail, access unknown": lambda page, w: page.goto(
        f"{w['base']}/operator/registrations/{w['unknown_pk']}"
    ),
    "operator refund confirmation": lambda page, w: page.goto(
        f"{w['base']}/operator/registrations/{w['done']['pk']}/refund"
    ),
    "operator, no such registration (404)": lambda page, w: page.goto(f"{w['base']}/operator/registrations/999999"),
}


@pytest.mark.parametrize("width", [1280, NARROW])
@pytest.mark.parametrize("name", list(ADMIN_PAGES) + list(OPERATOR_PAGES))
def test_every_page_passes_axe_and_fits_the_width(browser, world, contexts, name, width):
    signed_out = name.startswith("operator sign-in")
    context = (
        browser.new_context(viewport={"width": width, "height": 800})
        if signed_out or name in ADMIN_PAGES
        else contexts[width]
    )
    page = context.new_page()
    try:
        (ADMIN_PAGES.get(name) or OPERATOR_PAGES[name])(page, world)
        page.wait_for_load_state()
        axe_counts(f"{name} @{width}", page)
        if width == NARROW:
            assert scroll_width(page) <= NARROW, f"{name} scrolls sideways at {NARROW} px"
    finally:
        page.close()
        if context not in contexts.values():
            context.close()


def test_pre_approval_in_the_lms_frame_passes_axe(browser, world):
    context, page, frame = open_lms(browser, world["port"])
    axe_counts("pre-approval in the LMS frame, pay", frame_of(page))
    with page.expect_popup() as popup_info:
        frame.locator("#pay").click()
    popup = popup_info.value
    frame.locator("#pay").filter(has_text="Reopen the payment window").wait_for()
    axe_counts("pre-approval in the LMS frame, payment window open", frame_of(page))
    popup.close()
    context.close()


# ---------------------------------------------------------------------------------------------------
# The Pay control, the live region, the payment window, a blocked window


def test_pay_is_a_button_that_enter_and_space_open_synchronously(browser, world):
    context, page, frame = open_lms(browser, world["port"])
    pay = frame.locator("#pay")
    assert pay.evaluate("el => el.tagName") == "BUTTON"
    label = pay.inner_text()
    assert label.startswith("Pay ") and " USD" in label and label.endswith("by card")

    pay.focus()
    with page.expect_popup() as popup_info:  # the popup blocker is on: only a synchronous open passes
        page.keyboard.press("Enter")
    popup = popup_info.value
    # While it is open, the button says so, and pressing it again opens no second window.
    frame.locator("#pay").filter(has_text="Reopen the payment window").wait_for()
    assert "Pay " not in pay.inner_text()
    pages = len(context.pages)
    pay.focus()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert len(context.pages) == pages

    popup.close()
    frame.locator("#pay").filter(has_text=label).wait_for(timeout=5000)
    pay.focus()
    with page.expect_popup() as popup_info:
        page.keyboard.press("Space")
    popup_info.value.close()
    context.close()


def test_the_live_region_changes_only_when_its_sentence_changes(browser, world):
    context, page, frame = open_lms(browser, world["port"])
    polls = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/status") else None)
    target = frame_of(page)
    target.evaluate("""() => {
        window.__statusMutations = 0;
        new MutationObserver(records => { window.__statusMutations += records.length; })
            .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true,
                                                          attributes: true});
    }""")
    start = len(polls)
    deadline = 15_000
    while len(polls) - start < 4 and deadline > 0:
        page.wait_for_timeout(250)
        deadline -= 250
    assert len(polls) - start >= 4, "the frame did not poll"
    assert target.evaluate("window.__statusMutations") == 0
    assert frame.locator("#status").get_attribute("role") == "status"

    # A real change is written once: the admin leaves Checkout without paying.
    with page.expect_popup() as popup_info:
        frame.locator("#pay").click()
    popup = popup_info.value
    frame.locator("#status").filter(has_text="Complete the payment").wait_for()
    popup.click("text=Back")
    frame.locator("#status").filter(has_text="cancelled").wait_for(timeout=10000)
    written = target.evaluate("window.__statusMutations")
    seen = len(polls)
    while len(polls) - seen < 3:
        page.wait_for_timeout(250)
    assert target.evaluate("window.__statusMutations") == written
    context.close()


def test_a_blocked_payment_window_is_announced_with_a_prominent_link(browser, world):
    context = browser.new_context()
    context.add_init_script("window.open = function () { return null; };")  # as a strict popup blocker does
    context, page, frame = open_lms(browser, world["port"], context)
    frame.locator("#pay").click()
    blocked = frame.locator("#blocked")
    blocked.wait_for()
    status = frame.locator("#status").inner_text()
    assert "blocked the payment window" in status and "link below" in status
    assert frame.locator("#blocked-link").evaluate("el => el === document.activeElement")
    assert frame.locator("#pay").inner_text().startswith("Pay ")  # nothing is open to reopen
    target = frame_of(page)
    axe_counts("pre-approval in the LMS frame, payment window blocked", target)
    # The next polls keep the sentence: the server has nothing new to say.
    page.wait_for_timeout(3200)
    assert "blocked the payment window" in frame.locator("#status").inner_text()
    # The fallback link opens the payment page in a tab, and the sentence follows.
    with page.expect_popup() as popup_info:
        frame.locator("#blocked-link").click()
    popup_info.value.close()
    frame.locator("#status").filter(has_text="Complete the payment").wait_for()
    context.close()


def test_report(capsys):
    """Prints the pages checked with their counts (docs/accessibility.md takes them from here)."""
    with capsys.disabled():
        print("\naxe-core results (critical / serious / other):")
        for name, counts in sorted(REPORT.items()):
            print(
                f"  {name}: {counts['critical']} / {counts['serious']} / {counts['other']}"
                + (f"  {', '.join(counts['rules'])}" if counts["rules"] else "")
                + (f"  (to review: {', '.join(counts['review'])})" if counts["review"] else "")
            )
