"""Issue 9 in a real browser: the vendor, the product and the support contact on the pre-approval and
error pages, and the whole flow in Spanish and French (the browser's language, no cookie), with
Checkout opened in the same language. The LMS page (localhost) and the service (127.0.0.1) are
different sites; the service runs with its built-in stand-ins."""

import re

import pytest

from paygate.application import create_app
from paygate.core.db import db
from tests.helpers.apps import empty
from tests.helpers.browser import finish, open_checkout_popup
from tests.helpers.servers import free_port, serving

pytestmark = pytest.mark.browser

VENDOR, SUPPORT = "Acme Learning", "help@acme.example"
PRODUCT, DESCRIPTION = "Tool registration", "Registers the tool in your LMS for one institution."  # the stand-in's


@pytest.fixture
def service(tmp_path):
    started = []

    def start(**settings):
        port = free_port()
        app = create_app(
            {
                "app_env": "local",
                "database_url": f"sqlite:///{tmp_path}/browser-{port}.sqlite",
                "public_url": f"http://127.0.0.1:{port}",
                "secret_key": "browser-test",
                "vendor_name": VENDOR,
                "support_contact": SUPPORT,
                "stripe_price_id": "price_local_registration",
                **settings,
            }
        )
        empty(app)
        from paygate.standins import reset

        reset()
        server = serving(app, port)
        server.__enter__()
        started.append((app, server))
        return app, port

    yield start
    for app, server in started:
        server.__exit__(None, None, None)
        with app.app_context():
            db.engine.dispose()


def open_lms(browser, port, locale=None, lms="canvas"):
    context = browser.new_context(locale=locale) if locale else browser.new_context()
    page = context.new_page()
    page.goto(f"http://localhost:{port}/_local/lms?lms={lms}")
    page.click("#register")
    return context, page, page.frame_locator("#registration")


def checkout_locales(app) -> list:
    return [record["locale"] for record in app.extensions["standins"].stripe.stores["checkout.session"].values()]


def test_the_pre_approval_page_names_vendor_product_and_support(browser, service):
    _, port = service()
    context, _page, frame = open_lms(browser, port, lms="moodle")
    frame.locator("#price").wait_for()
    assert frame.locator("html").get_attribute("lang") == "en"
    assert frame.locator("#vendor").inner_text() == VENDOR
    assert frame.locator("#product-name").inner_text() == PRODUCT
    assert frame.locator("#product-description").inner_text() == DESCRIPTION
    assert frame.locator("#price").inner_text() == "49.00 USD, paid once"
    assert frame.locator("#lms-name").inner_text() == "Moodle 4.4.1+"
    link = frame.locator("#support-link")
    assert link.inner_text() == SUPPORT and link.get_attribute("href") == f"mailto:{SUPPORT}"
    assert frame.locator("#pay").inner_text() == "Pay 49.00 USD by card"
    context.close()


def test_error_pages_name_the_vendor_and_the_support_contact(browser, service):
    _, port = service(stripe_price_id="price_local_archived")  # a Price that cannot be sold
    context, _page, frame = open_lms(browser, port)
    frame.locator("#message").wait_for()
    assert frame.locator("h1").inner_text() == "Not available"
    assert "Please contact the vendor." in frame.locator("#message").inner_text()
    assert frame.locator("#support").inner_text() == f"Need help? Contact {VENDOR}: {SUPPORT}"
    assert frame.locator("#support-link").get_attribute("href") == f"mailto:{SUPPORT}"
    assert frame.locator("#vendor").inner_text() == VENDOR
    assert frame.locator("#product-name").inner_text() == PRODUCT

    damaged = context.new_page()
    damaged.goto(f"http://127.0.0.1:{port}/pre-approval?registrationId=damaged!", wait_until="load")
    assert damaged.locator("h1").inner_text() == "Registration link not valid"
    assert damaged.locator("#support-link").inner_text() == SUPPORT
    assert damaged.locator("#vendor").inner_text() == VENDOR
    context.close()


def test_without_a_support_contact_the_page_says_so(browser, service):
    _, port = service(support_contact=None, vendor_name=None)
    context, _page, frame = open_lms(browser, port)
    frame.locator("#support").wait_for()
    assert frame.locator("#support").inner_text() == "Not given by the vendor"
    assert frame.locator("#vendor").inner_text() == PRODUCT  # no VENDOR_NAME: the Product's name
    context.close()


@pytest.mark.parametrize(
    "locale, lang, expect",
    [
        (
            "es-ES",
            "es",
            {
                "h1": "Registre esta herramienta en su LMS",
                "price": "49,00 USD, pago único",
                "pay": "Pagar 49,00 USD con tarjeta",
                "support": "Soporte",
                "lms": "Canvas (en la nube)",
                "status": "Pague para terminar de registrar",
                "waiting": "Complete el pago en la ventana de pago",
                "paid": "Gracias: hemos recibido su pago.",
            },
        ),
        (
            "fr-FR",
            "fr",
            {
                "h1": "Enregistrer cet outil dans votre LMS",
                "price": "49,00 USD, paiement unique",
                "pay": "Payer 49,00 USD par carte",
                "support": "Assistance",
                "lms": "Canvas (version cloud)",
                "status": "Payez pour terminer l'enregistrement",
                "waiting": "Effectuez le paiement",
                "paid": "Merci\u00a0: votre paiement a bien été reçu.",
            },
        ),
    ],
)
def test_the_flow_in_the_admins_language_with_checkout_in_it_too(browser, service, tmp_path, locale, lang, expect):
    app, port = service()
    context, page, frame = open_lms(browser, port, locale=locale)
    frame.locator("#price").wait_for()
    assert frame.locator("html").get_attribute("lang") == lang
    assert frame.locator("h1").inner_text() == expect["h1"]
    assert frame.locator("#price").inner_text() == expect["price"]
    assert frame.locator("#pay").inner_text() == expect["pay"]
    assert frame.locator("#lms-name").inner_text() == expect["lms"]
    assert frame.locator("#vendor").inner_text() == VENDOR and frame.locator("#support-link").inner_text() == SUPPORT
    assert frame.locator("dt", has_text=expect["support"]).count() == 1
    assert frame.locator("#status").inner_text().startswith(expect["status"])
    assert context.cookies(f"http://127.0.0.1:{port}") == []  # the language is the browser's, not a cookie's

    popup = open_checkout_popup(page, frame)
    assert popup.locator("#locale").inner_text() == lang  # the stand-in shows what Checkout was given
    assert checkout_locales(app) == [lang]  # and what Stripe's API received
    # The frame's poll (a fetch: the browser's Accept-Language, no cookie) answers in the page's language.
    frame.locator("#status").filter(has_text=expect["waiting"]).wait_for(timeout=10000)

    popup.click("#pay")
    popup.wait_for_url("**/paid?session_id=*")
    assert popup.locator("html").get_attribute("lang") == lang
    assert expect["paid"] in popup.locator("#message").inner_text()
    finish(frame)  # the confirmation stays until the admin presses Finish
    page.locator("#lms-status").filter(has_text="org.imsglobal.lti.close").wait_for(timeout=15000)
    page.screenshot(path=str(tmp_path / f"lms-{lang}-closed.png"))
    context.close()


def test_a_language_the_service_lacks_is_served_in_english(browser, service):
    app, port = service()
    context, page, frame = open_lms(browser, port, locale="de-DE")
    frame.locator("#price").wait_for()
    assert frame.locator("html").get_attribute("lang") == "en"
    assert re.match(r"Pay to finish", frame.locator("#status").inner_text())
    open_checkout_popup(page, frame)
    assert checkout_locales(app) == ["en"]  # the pages' language, so that Checkout says the same
    context.close()
