"""The tests' Stripe (tests/fakes.Stripe): `pay()` with a promotion code, custom fields, an address and a tax ID,
as a payer fills in Checkout's page."""

import time

import pytest
import responses
import stripe

from tests.fakes import Stripe
from tests.helpers.apps import BASE_CONFIG

ORGANISATION = {
    "key": "organisation",
    "label": {"type": "custom", "custom": "School"},
    "type": "text",
    "text": {"maximum_length": 200},
}


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Stripe(rsps, BASE_CONFIG)


@pytest.fixture
def api():
    return stripe.StripeClient(api_key=BASE_CONFIG["stripe_secret_key"], max_network_retries=0).v1


def session(api, **extra) -> str:
    params = {
        "mode": "payment",
        "line_items": [{"price": BASE_CONFIG["stripe_price_id"], "quantity": 3}],
        "success_url": "http://paygate.test/ok",
        "expires_at": int(time.time()) + 3600,
        "custom_fields": [ORGANISATION],
        "automatic_tax": {"enabled": True},
        "allow_promotion_codes": True,
        **extra,
    }
    return api.checkout.sessions.create(params=params).id


def test_pay_fills_in_what_the_page_asks_with_defaults(fake, api):
    paid = fake.pay(session(api))
    assert paid["custom_fields"][0]["text"]["value"] == "Springfield Elementary"
    assert paid["customer_details"]["address"]["postal_code"] == "94105"
    assert (paid["amount_subtotal"], paid["total_details"]["amount_tax"], paid["payment_status"]) == (14700, 0, "paid")


def test_pay_with_a_code_fields_an_address_and_a_tax_id(fake, api):
    paid = fake.pay(
        session(api, tax_id_collection={"enabled": True}),
        promotion_code="school20",
        fields={"organisation": "Lycée Voltaire"},
        address={"country": "FR", "postal_code": "75011"},
        tax_id="FR12345678901",
    )
    assert paid["custom_fields"][0]["text"]["value"] == "Lycée Voltaire"
    assert (paid["total_details"]["amount_discount"], paid["total_details"]["amount_tax"]) == (2940, 2352)
    assert paid["amount_total"] == 14700 - 2940 + 2352
    assert paid["customer_details"]["tax_ids"] == [{"type": "eu_vat", "value": "FR12345678901"}]
    assert fake.state.promotion_codes["promo_local_school20"]["times_redeemed"] == 1


def test_pay_with_a_code_checkout_would_refuse_raises_and_pays_nothing(fake, api):
    session_id = session(api)
    with pytest.raises(ValueError, match=r"This code is invalid\."):
        fake.pay(session_id, promotion_code="SPRING2025")
    assert fake.sessions[session_id]["status"] == "open" and fake.payment_intents == {}
