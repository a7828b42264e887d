"""Issue 9: every page of the flow names the vendor (VENDOR_NAME, else the Stripe Product's name), what
is bought (the Product's name and description, the price and its period) and, where the admin must
contact the vendor, how (SUPPORT_CONTACT); the LMS is named as admins know it."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from paygate.core.config import ConfigError, load_settings, parse_support
from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, Registration
from paygate.web.identity import lms_name
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.flow import open_frame
from tests.helpers.pages import dd, text_of

PRODUCT, DESCRIPTION = "Tool registration", "One LTI tool registration for one LMS"  # tests/fakes.py


@pytest.fixture
def make(database_url):
    apps = []

    def factory(**overrides):
        app = make_app(database_url, **overrides)
        apps.append(app)
        return app.test_client()

    yield factory
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def _registration(client, token) -> Registration:
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).one()
        db.session.expunge(reg)
        return reg


def _set(client, token, **values):
    with client.application.app_context():
        db.session.execute(update(Registration).where(Registration.flow_token == token).values(**values))
        db.session.commit()


def test_the_pre_approval_page_says_whom_the_admin_pays_and_for_what(make, stripe_api, ltiaas_api):
    client = make(vendor_name="Acme Learning", support_contact="help@acme.example")
    registration_id, token, page = open_frame(client, ltiaas_api)
    assert dd(page.text, "vendor") == "Acme Learning"
    assert dd(page.text, "product") == f"{PRODUCT} {DESCRIPTION}"
    assert dd(page.text, "price") == "49.00 USD, paid once"
    assert '<a id="support-link" href="mailto:help@acme.example">help@acme.example</a>' in page.text
    assert dd(page.text, "lms") == "Canvas (cloud) https://canvas.instructure.com"
    # Stored with the registration when it was opened: a repeat visit shows it without asking Stripe.
    reg = _registration(client, token)
    assert (reg.product_name, reg.product_description) == (PRODUCT, DESCRIPTION)
    calls = len(stripe_api.calls)
    stripe_api.product["name"] = "Renamed since"
    again = client.get(f"/pre-approval?registrationId={registration_id}")
    assert dd(again.text, "product") == f"{PRODUCT} {DESCRIPTION}" and len(stripe_api.calls) == calls


def test_without_vendor_name_the_vendor_is_the_products_name(make, stripe_api, ltiaas_api):
    client = make()
    _, _, page = open_frame(client, ltiaas_api)
    assert dd(page.text, "vendor") == PRODUCT
    assert dd(page.text, "support") == "Not given by the vendor"


def test_a_support_url_opens_beside_the_frame(make, stripe_api, ltiaas_api):
    client = make(support_contact="https://acme.example/help?topic=lms")
    _, _, page = open_frame(client, ltiaas_api)
    assert (
        '<a id="support-link" href="https://acme.example/help?topic=lms" target="_blank" '
        'rel="noopener noreferrer">https://acme.example/help?topic=lms</a>'
    ) in page.text


def test_a_recurring_price_is_shown_with_its_period(make, stripe_api, ltiaas_api):
    client = make()
    stripe_api.set_price(recurring="month")
    _, _, page = open_frame(client, ltiaas_api)
    assert dd(page.text, "price") == "49.00 USD per month"
    assert re.search(r'id="pay">Pay 49.00 USD per month by card<', page.text)


@pytest.mark.parametrize(
    "family, version, shown",
    [
        ("canvas", "cloud", "Canvas (cloud)"),
        ("moodle", "4.4.1+ (Build: 20240705)", "Moodle 4.4.1+"),
        ("desire2learn", "20.24.8", "Brightspace 20.24.8"),
        ("sakai", "", "Sakai"),
        ("acme-lms", "2", "acme-lms 2"),
        ("", "", "An LMS that did not give its name"),
    ],
)
def test_the_lms_is_named_as_admins_know_it(app, family, version, shown):
    class Reg:
        lms_family, lms_version = family, version

    with app.test_request_context("/"):
        assert lms_name(Reg) == shown


def test_error_pages_name_the_vendor_and_how_to_reach_it(make, stripe_api, ltiaas_api):
    client = make(vendor_name="Acme Learning", support_contact="help@acme.example")
    open_frame(client, ltiaas_api)  # the process has read the Price
    stripe_api.price["active"] = False
    client.application.extensions["payments"]._prices.clear()
    page = client.get(f"/pre-approval?registrationId={ltiaas_api.add()}")
    assert page.status_code == 503
    text = text_of(page.text)
    assert "Please contact the vendor." in text
    assert "Need help? Contact Acme Learning: help@acme.example" in text
    assert 'href="mailto:help@acme.example"' in page.text
    assert dd(page.text, "vendor") == "Acme Learning" and dd(page.text, "product").startswith(PRODUCT)


def test_an_error_before_any_price_was_read_names_the_newest_registrations_product(make, stripe_api, ltiaas_api):
    client = make()
    open_frame(client, ltiaas_api)
    client.application.extensions["payments"]._prices.clear()  # a new process: no Price read yet
    ltiaas_api.key = "rotated"  # LTIaaS now refuses our key
    page = client.get(f"/pre-approval?registrationId={ltiaas_api.add()}")
    assert page.status_code == 503
    text = text_of(page.text)
    assert f"{PRODUCT} has not given a support contact." in text  # says so plainly
    assert dd(page.text, "vendor") == PRODUCT and dd(page.text, "product") == PRODUCT


def test_a_fresh_service_with_nothing_known_says_so_without_naming_anyone(make, stripe_api, ltiaas_api):
    client = make()
    page = client.get("/pre-approval?registrationId=not valid!")
    assert page.status_code == 400
    assert "The vendor has not given a support contact." in text_of(page.text)
    assert 'id="vendor"' not in page.text


def test_the_popups_pages_name_the_purchase(make, stripe_api, ltiaas_api):
    client = make(vendor_name="Acme Learning")
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    cancelled = client.get(f"/flow/{token}/cancel")
    assert dd(cancelled.text, "vendor") == "Acme Learning"
    assert dd(cancelled.text, "price") == "49.00 USD, paid once"
    assert 'id="support"' not in cancelled.text  # nothing went wrong: no call for help
    with client.application.app_context():
        session_id = db.session.scalars(select(CheckoutSession.session_id)).one()
    stripe_api.pay(session_id)
    paid = client.get(f"/flow/{token}/paid?session_id={session_id}")
    assert "payment was received" in paid.text and dd(paid.text, "product").startswith(PRODUCT)


@pytest.mark.parametrize("situation", ["needs attention", "timed out"])
def test_where_the_frame_sends_the_admin_to_the_vendor_the_contact_is_on_the_page(
    make, stripe_api, ltiaas_api, situation
):
    client = make(vendor_name="Acme Learning", support_contact="help@acme.example")
    registration_id, token, _ = open_frame(client, ltiaas_api)
    if situation == "needs attention":
        _set(client, token, state="needs_attention", attention="completion_failed")
        expected = "The vendor's support team sees it"
    else:
        _set(client, token, created_at=utcnow() - timedelta(hours=2))
        expected = "This registration has timed out"
    assert expected in client.get(f"/flow/{token}/status").get_json()["message"]
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert expected in text_of(page.text)
    assert dd(page.text, "support") == "help@acme.example" and 'href="mailto:help@acme.example"' in page.text
    if situation == "timed out":
        popup = client.get(f"/flow/{token}/pay")
        assert popup.status_code == 409 and "Need help? Contact Acme Learning" in text_of(popup.text)


def test_a_logo_is_shown_and_allowed_by_the_pages_csp(make, stripe_api, ltiaas_api):
    client = make(vendor_logo_url="https://cdn.acme.example/logo.png")
    _, _, page = open_frame(client, ltiaas_api)
    assert '<img id="vendor-logo" src="https://cdn.acme.example/logo.png" alt=""' in page.text
    assert "img-src 'self' data: https://cdn.acme.example;" in page.headers["Content-Security-Policy"]


def test_without_a_logo_the_csp_allows_no_other_images(make, stripe_api, ltiaas_api):
    client = make()
    _, _, page = open_frame(client, ltiaas_api)
    assert "img-src 'self' data:;" in page.headers["Content-Security-Policy"]
    assert "vendor-logo" not in page.text


@pytest.mark.parametrize(
    "value, href",
    [
        ("help@acme.example", "mailto:help@acme.example"),
        ("mailto:Help@Acme.Example", "mailto:Help@acme.example"),
        ("https://acme.example/support", "https://acme.example/support"),
    ],
)
def test_support_contact_forms(value, href):
    assert parse_support(value).href == href


@pytest.mark.parametrize(
    "name, value",
    [
        ("support_contact", "call us"),
        ("support_contact", "http://acme.example/support"),
        ("support_contact", "javascript:alert(1)"),
        ("support_contact", 'https://acme.example/"><script>'),
        ("vendor_logo_url", "http://cdn.acme.example/logo.png"),
        ("vendor_logo_url", "logo.png"),
    ],
)
def test_a_malformed_identity_setting_stops_start_up_naming_it(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE_CONFIG, "app_env": "production", "secret_key": "k" * 40, name: value})
    assert str(err.value).startswith(f"{name.upper()} is malformed") and value not in str(err.value)


def test_vendor_name_is_one_line():
    assert load_settings({**BASE_CONFIG, "vendor_name": "  Acme\n  Learning  "}).vendor_name == "Acme Learning"
