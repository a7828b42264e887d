"""Pay by invoice for an offer: the seats on the invoice line or the subscription item, a promotion code checked
at Stripe before anything is made, the billing country Stripe Tax needs, and what the licence keeps."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence
from tests.helpers.flow import open_frame
from tests.sales.test_offers import OFFERS, ONCE, SEATS, TIERED, add_offers

FORM = {"billing_email": "finance@school.example", "organisation": "Springfield Elementary"}


@pytest.fixture
def shop_with(make, database_url, stripe_api, ltiaas_api):
    add_offers(stripe_api)

    def factory(**settings):
        return make(database_url, stripe_price_id=OFFERS, **settings).test_client()

    return factory


def form_id(page) -> str:
    import re

    return re.search(r'name="form_id" value="([^"]+)"', page.text).group(1)


def send_form(client, ltiaas_api, **answers):
    _, token, page = open_frame(client, ltiaas_api)
    return client.post(f"/flow/{token}/invoice", data={"form_id": form_id(page), **FORM, **answers})


def only_licence(client) -> Licence | None:
    with client.application.app_context():
        licence = db.session.scalars(select(Licence)).first()
        if licence is not None:
            db.session.expunge(licence)
        return licence


def test_an_invoice_bills_the_seats_chosen(shop_with, stripe_api, ltiaas_api):
    client = shop_with()
    assert send_form(client, ltiaas_api, offer=TIERED, seats="60").status_code == 303
    (item,) = stripe_api.invoice_items.values()
    assert item["quantity"] == 60
    (invoice,) = stripe_api.invoices.values()
    assert invoice["subtotal"] == 90000 and invoice["status"] == "open"
    licence = only_licence(client)
    assert (licence.price_id, licence.quantity, licence.seat_unit, licence.amount) == (TIERED, 60, "teacher", 90000)


def test_a_recurring_offer_by_invoice_is_a_subscription_of_that_many_seats(shop_with, stripe_api, ltiaas_api):
    client = shop_with()
    assert send_form(client, ltiaas_api, offer=SEATS, seats="250").status_code == 303
    (sub,) = stripe_api.subscriptions.values()
    assert sub["items"]["data"][0]["quantity"] == 250
    assert only_licence(client).quantity == 250


def test_a_promotion_code_is_checked_and_applied_as_the_invoices_discount(shop_with, stripe_api, ltiaas_api):
    client = shop_with(promotion_codes=True)
    assert send_form(client, ltiaas_api, offer=ONCE, promotion_code="school20").status_code == 303
    (invoice,) = stripe_api.invoices.values()
    assert invoice["total"] == 3920  # 49.00 less 20 %
    licence = only_licence(client)
    assert (licence.promotion_code, licence.amount, licence.discount) == ("SCHOOL20", 3920, 980)


@pytest.mark.parametrize(
    "code",
    ["NOSUCHCODE", "SPRING2025", "SEATS15", "x" * 10_000, "SCHOOL20\x00", "SCHOOL20\r\nX", "<b>"],
)
def test_a_code_that_cannot_be_used_gets_a_sentence_and_makes_nothing_at_stripe(
    shop_with, stripe_api, ltiaas_api, code
):
    client = shop_with(promotion_codes=True)
    answer = send_form(client, ltiaas_api, offer=ONCE, promotion_code=code)
    assert answer.status_code == 400 and 'id="invoice-error"' in answer.text and "promotion code" in answer.text
    assert stripe_api.customers == {} and stripe_api.invoices == {}
    assert only_licence(client) is None


def test_a_code_that_takes_the_whole_invoice_leaves_it_paid(shop_with, stripe_api, ltiaas_api):
    client = shop_with(promotion_codes=True)
    assert send_form(client, ltiaas_api, offer=ONCE, promotion_code="PILOT100").status_code == 303
    (invoice,) = stripe_api.invoices.values()
    assert invoice["amount_due"] == 0 and invoice["status"] == "paid"


def test_with_tax_the_form_asks_for_the_country_and_stripe_taxes_the_invoice(shop_with, stripe_api, ltiaas_api):
    client = shop_with(stripe_tax=True)
    _, _, page = open_frame(client, ltiaas_api)
    assert '<select id="country" name="country"' in page.text
    missing = send_form(client, ltiaas_api, offer=ONCE)
    assert missing.status_code == 400 and "country" in missing.text and stripe_api.customers == {}
    assert send_form(client, ltiaas_api, offer=ONCE, country="FR", postal_code="75001").status_code == 303
    (customer,) = stripe_api.customers.values()
    assert customer["address"]["country"] == "FR"
    licence = only_licence(client)
    assert (licence.amount, licence.tax) == (4900, 980)  # the stand-in's 20 % for France


def test_a_us_school_must_give_its_postal_code(shop_with, stripe_api, ltiaas_api):
    client = shop_with(stripe_tax=True)
    answer = send_form(client, ltiaas_api, offer=ONCE, country="US")
    assert answer.status_code == 400 and "postal code" in answer.text and stripe_api.customers == {}


@pytest.mark.parametrize("seats", ["-1", "1e9", "abc", "x" * 10_000])
def test_bad_seats_in_the_invoice_form_make_nothing(shop_with, stripe_api, ltiaas_api, seats):
    client = shop_with()
    answer = send_form(client, ltiaas_api, offer=SEATS, seats=seats)
    assert answer.status_code == 400 and "students" in answer.text
    assert stripe_api.customers == {} and only_licence(client) is None


def test_a_finalise_failure_with_a_free_code_never_bills_the_price_twice(shop_with, stripe_api, ltiaas_api):
    from paygate.ops import worker

    client = shop_with(promotion_codes=True)
    stripe_api.fail_next["invoice_finalize"] = [500]  # Stripe keeps this answer under its key: new keys next time
    assert send_form(client, ltiaas_api, offer=ONCE, promotion_code="PILOT100").status_code == 503
    with client.application.app_context():
        worker.run_once()
    (invoice,) = stripe_api.invoices.values()
    assert len(stripe_api.invoice_items) == 1 and invoice["subtotal"] == 4900 and invoice["amount_due"] == 0


def test_a_refused_form_keeps_the_offer_and_seats_the_admin_chose(shop_with, stripe_api, ltiaas_api):
    client = shop_with(stripe_tax=True)
    answer = send_form(client, ltiaas_api, offer=SEATS, seats="250")  # no country: refused
    assert answer.status_code == 400
    assert 'id="invoice-seats" value="250"' in answer.text and f'id="invoice-offer" value="{SEATS}"' in answer.text
    assert 'value="250"' in answer.text.split('id="seats"')[1][:400]  # the seat field too
