"""Pay by invoice cannot be turned into a mailer: anyone with an LMS registration could make the vendor's
Stripe account e-mail an invoice to any address, with their own text in it ("URGENT: pay at
https://evil.example"). Organisation and PO number refuse web addresses, e-mail addresses and phone
numbers (one sentence per field, in the admin's language), and each billing e-mail domain gets at most
INVOICE_REQUESTS_PER_DOMAIN_PER_DAY invoice requests a day (3 by default); a refused request makes nothing
at Stripe."""

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from paygate.core.config import ConfigError, load_settings
from paygate.core.db import db
from paygate.core.models import Licence, Registration
from tests.helpers.apps import BASE_CONFIG

ANSWERS = {
    "billing_email": "finance@school.example",
    "organisation": "Springfield Elementary",
    "po_number": "PO-2024-117",
}
SPANISH, FRENCH = "es-ES,es;q=0.9", "fr-FR,fr;q=0.9"
CONTACT = {
    "organisation": {
        None: "The name of your school or organisation cannot contain a web address, an e-mail address or a phone "
        "number.",
        SPANISH: "El nombre de su centro educativo u organización no puede contener una dirección web, una "
        "dirección de correo electrónico ni un número de teléfono.",
        FRENCH: "Le nom de votre établissement ou organisation ne peut pas contenir d'adresse web, d'adresse "
        "e-mail ni de numéro de téléphone.",
    },
    "po_number": {
        None: "The purchase-order number cannot contain a web address, an e-mail address or a phone number.",
        SPANISH: "El número de orden de compra no puede contener una dirección web, una dirección de correo "
        "electrónico ni un número de teléfono.",
        FRENCH: "Le numéro de bon de commande ne peut pas contenir d'adresse web, d'adresse e-mail ni de numéro "
        "de téléphone.",
    },
}
CAPPED = (
    "Too many invoices were requested today for e-mail addresses at school.example. Pay by card, or try again tomorrow."
)


# Helpers


def text_of(page_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


def invoice_error(page_text: str) -> str | None:
    found = re.search(r'<p class="error" id="invoice-error"[^>]*>(.*?)</p>', page_text, re.S)
    return text_of(found.group(1)) if found else None


_ADDRESSES = iter(range(1, 10_000))


def open_frame(client, ltiaas_api):
    registration_id = ltiaas_api.add()
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    return registration_id, token, page


def ask_invoice(client, token, page_text, language=None, address=None, **answers):
    form = re.search(
        r'<form method="post" action="/flow/' + re.escape(token) + r'/invoice".*?</form>', page_text, re.S
    ).group(0)
    data = {**ANSWERS, "form_id": re.search(r'name="form_id" value="([^"]+)"', form).group(1), **answers}
    headers = {"Accept-Language": language} if language else {}
    # Each request from its own address: the per-address rate is not what is tested here.
    environ = {"REMOTE_ADDR": address or f"10.9.{next(_ADDRESSES) // 250}.{next(_ADDRESSES) % 250 + 1}"}
    return client.post(f"/flow/{token}/invoice", data=data, headers=headers, environ_base=environ)


def invoiced(client, ltiaas_api, **answers):
    registration_id, token, page = open_frame(client, ltiaas_api)
    return registration_id, token, ask_invoice(client, token, page.text, **answers)


def made_at_stripe(stripe_api) -> tuple[int, int, int]:
    return len(stripe_api.customers), len(stripe_api.invoices), len(stripe_api.sent_invoices)


def licence_of(app, registration_id) -> Licence | None:
    with app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        return reg.licence


# Organisation and PO number: no way to reach anyone

CONTACTS = [
    ("organisation", "URGENT: pay at https://evil.example"),
    ("organisation", "Springfield http://evil.example/pay"),
    ("organisation", "Visit www.evil.example now"),
    ("organisation", "Pay at evil.example today"),
    ("organisation", "Pay at EVIL.COM/x"),
    ("organisation", "Write to refunds@evil.example"),
    ("organisation", "Call +1 555 123 4567"),
    ("organisation", "Springfield (555) 123-4567"),
    ("organisation", "Springfield 555-123-4567"),
    ("organisation", "Springfield 0049 30 1234567"),
    ("po_number", "PO-1 https://evil.example"),
    ("po_number", "evil.example"),
    ("po_number", "PO-1 pay@evil.example"),
    ("po_number", "PO-1 call +44 20 7946 0958"),
    ("po_number", "PO-1 tel. 020 7946 0958"),
    ("po_number", "(555) 123-4567"),
    ("po_number", "555.123.4567"),
]


@pytest.mark.parametrize("field, value", CONTACTS)
def test_organisation_and_po_number_refuse_web_addresses_emails_and_phone_numbers(
    inv_client, stripe_api, ltiaas_api, field, value
):
    _, token, page = open_frame(inv_client, ltiaas_api)
    answer = ask_invoice(inv_client, token, page.text, **{field: value})
    assert answer.status_code == 400, (field, value)
    assert invoice_error(answer.text) == CONTACT[field][None]
    assert re.search(r'id="' + field + r'"[^>]*aria-invalid="true"', answer.text, re.S)
    assert made_at_stripe(stripe_api) == (0, 0, 0) and ltiaas_api.complete_calls == []
    assert licence_of(inv_client.application, _registration_id(inv_client, token)) is None


@pytest.mark.parametrize("language", [SPANISH, FRENCH])
@pytest.mark.parametrize(
    "field, value", [("organisation", "Pay at https://evil.example"), ("po_number", "call +1 555 123 4567")]
)
def test_the_refusal_is_in_the_admins_language(inv_client, stripe_api, ltiaas_api, language, field, value):
    _, token, page = open_frame(inv_client, ltiaas_api)
    answer = ask_invoice(inv_client, token, page.text, language=language, **{field: value})
    assert answer.status_code == 400
    assert invoice_error(answer.text) == CONTACT[field][language]
    assert made_at_stripe(stripe_api) == (0, 0, 0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("organisation", "St. Mary's School"),
        ("organisation", "Springfield School District 186"),
        ("organisation", "École Jules-Ferry, Lyon"),
        ("organisation", "U.S. Department of Education"),
        ("organisation", "Springfield Elementary (Building 2)"),
        ("po_number", "PO-2024-117"),
        ("po_number", "4500012345"),
        ("po_number", "2024/0117"),
        ("po_number", "PO 123 456"),
        ("po_number", "PO#2024.11.7"),
    ],
)
def test_ordinary_names_and_po_numbers_are_taken(inv_client, stripe_api, ltiaas_api, field, value):
    registration_id, _, answer = invoiced(inv_client, ltiaas_api, **{field: value})
    assert answer.status_code == 303, invoice_error(answer.text)
    assert getattr(licence_of(inv_client.application, registration_id), field) == value
    assert made_at_stripe(stripe_api) == (1, 1, 1)


def _registration_id(client, token) -> str:
    with client.application.app_context():
        return db.session.scalars(select(Registration.registration_id).where(Registration.flow_token == token)).one()


# At most so many invoice requests per billing e-mail domain a day


def test_the_fourth_invoice_request_of_a_day_for_one_domain_is_refused(inv_client, stripe_api, ltiaas_api):
    for n, email in enumerate(("a@school.example", "B@School.Example", "c@school.example")):
        _, _, answer = invoiced(inv_client, ltiaas_api, billing_email=email)
        assert answer.status_code == 303, invoice_error(answer.text)
        assert made_at_stripe(stripe_api) == (n + 1, n + 1, n + 1)

    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    answer = ask_invoice(inv_client, token, page.text, billing_email="victim@SCHOOL.example")
    assert answer.status_code == 429
    assert invoice_error(answer.text) == CAPPED
    assert re.search(r'id="billing_email"[^>]*aria-invalid="true"', answer.text, re.S)
    assert made_at_stripe(stripe_api) == (3, 3, 3) and len(ltiaas_api.complete_calls) == 3
    assert licence_of(inv_client.application, registration_id) is None
    assert inv_client.get(f"/flow/{token}/status").get_json()["phase"] == "pay"  # the card stays offered
    assert f'href="/flow/{token}/pay"' in answer.text

    # Another domain is not held back by it.
    registration_id, _, answer = invoiced(inv_client, ltiaas_api, billing_email="finance@other.example")
    assert answer.status_code == 303 and made_at_stripe(stripe_api) == (4, 4, 4)


def test_the_cap_counts_a_day_back(inv_client, stripe_api, ltiaas_api):
    for _ in range(3):
        assert invoiced(inv_client, ltiaas_api)[2].status_code == 303
    assert invoiced(inv_client, ltiaas_api)[2].status_code == 429
    with inv_client.application.app_context():
        db.session.execute(update(Licence).values(created_at=Licence.created_at - timedelta(hours=25)))
        db.session.commit()
    _registration_id, _, answer = invoiced(inv_client, ltiaas_api)
    assert answer.status_code == 303, invoice_error(answer.text)
    assert made_at_stripe(stripe_api) == (4, 4, 4)


def test_correcting_the_email_to_a_capped_domain_is_refused(make, database_url, stripe_api, ltiaas_api):
    """Answers may be corrected while nothing was made at Stripe: not into a domain that had its invoices."""
    client = make(database_url, invoice_requests_per_domain_per_day=1).test_client()
    assert invoiced(client, ltiaas_api)[2].status_code == 303
    registration_id, token, page = open_frame(client, ltiaas_api)
    stripe_api.fail_next["customer_create"] = [503]
    failed = ask_invoice(client, token, page.text, billing_email="finance@other.example")
    assert failed.status_code == 503 and made_at_stripe(stripe_api) == (1, 1, 1)
    refused = ask_invoice(client, token, failed.text)  # now to finance@school.example
    assert refused.status_code == 429 and invoice_error(refused.text) == CAPPED
    assert made_at_stripe(stripe_api) == (1, 1, 1)
    assert licence_of(client.application, registration_id).billing_email == "finance@other.example"


def test_the_cap_is_a_setting(make, database_url, stripe_api, ltiaas_api):
    client = make(database_url, invoice_requests_per_domain_per_day=1).test_client()
    assert invoiced(client, ltiaas_api)[2].status_code == 303
    answer = invoiced(client, ltiaas_api, billing_email="other@school.example")[2]
    assert answer.status_code == 429 and invoice_error(answer.text) == CAPPED
    assert made_at_stripe(stripe_api) == (1, 1, 1)


def test_the_cap_setting_is_checked_at_start_up():
    assert load_settings(BASE_CONFIG).invoice_requests_per_domain_per_day == 3
    for bad in (0, -1, "many"):
        with pytest.raises(ConfigError, match=r"^INVOICE_REQUESTS_PER_DOMAIN_PER_DAY is malformed"):
            load_settings({**BASE_CONFIG, "invoice_requests_per_domain_per_day": bad})
