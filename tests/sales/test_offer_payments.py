"""Promotion codes, tax, the payer's name and the card payment's invoice: what Stripe billed is what the licence
says, a discounted or taxed payment is no mismatch, and a code that takes the whole amount completes the
registration without a payment."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import registration, send
from tests.sales.test_offers import OFFERS, ONCE, SEATS, add_offers


@pytest.fixture
def shop_with(make, database_url, stripe_api, ltiaas_api):
    """shop_with(**settings): a client of an app selling the three offers."""
    add_offers(stripe_api)

    def factory(**settings):
        return make(database_url, stripe_price_id=OFFERS, **settings).test_client()

    return factory


def licence_of(client) -> Licence:
    with client.application.app_context():
        licence = db.session.scalars(select(Licence)).one()
        db.session.expunge(licence)
        return licence


def buy(client, stripe_api, ltiaas_api, query: str, **pay):
    """Open the frame, choose, pay in Checkout (with `pay`'s code, address, fields), return from Checkout."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay?{query}").status_code == 303
    session = stripe_api.only_session()
    stripe_api.pay(session["id"], **pay)
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    return registration_id, token, session["id"]


def test_a_promotion_code_in_checkout_is_honoured_and_kept_on_the_licence(shop_with, stripe_api, ltiaas_api):
    client = shop_with(promotion_codes=True)
    registration_id, token, _ = buy(
        client, stripe_api, ltiaas_api, f"offer={SEATS}&seats=120", promotion_code="SCHOOL20"
    )
    assert status(client, token)["phase"] == "done" and ltiaas_api.complete_calls == [registration_id]
    licence = licence_of(client)
    assert (licence.amount, licence.discount, licence.promotion_code) == (28800, 7200, "SCHOOL20")
    assert registration(client).attention is None  # a discounted payment is no mismatch


def test_a_code_that_takes_the_whole_amount_completes_without_a_payment(shop_with, stripe_api, ltiaas_api):
    client = shop_with(promotion_codes=True)
    registration_id, token, session_id = buy(client, stripe_api, ltiaas_api, f"offer={ONCE}", promotion_code="PILOT100")
    assert stripe_api.sessions[session_id]["payment_status"] == "no_payment_required"
    assert stripe_api.sessions[session_id]["payment_intent"] is None
    assert status(client, token)["phase"] == "done" and ltiaas_api.complete_calls == [registration_id]
    licence = licence_of(client)
    assert (licence.kind, licence.amount, licence.promotion_code) == ("payment", 0, "PILOT100")
    reg = registration(client)
    assert reg.platform_active is True and reg.attention is None


def test_without_promotion_codes_a_free_checkout_is_not_honoured(shop_with, stripe_api, ltiaas_api):
    client = shop_with(promotion_codes=False)
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay?offer={ONCE}")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"], promotion_code="PILOT100")  # a code we never offered (a dashboard session)
    send(client, stripe_api, "checkout.session.completed", stripe_api.sessions[session["id"]])
    reg = registration(client)
    assert reg.state == "needs_attention" and ltiaas_api.complete_calls == []


def test_tax_is_computed_by_stripe_stored_and_never_a_mismatch(shop_with, stripe_api, ltiaas_api):
    client = shop_with(stripe_tax=True)
    registration_id, _, session_id = buy(
        client, stripe_api, ltiaas_api, f"offer={SEATS}&seats=100", address={"country": "ES", "postal_code": "28001"}
    )
    session = stripe_api.sessions[session_id]
    assert session["automatic_tax"]["enabled"] is True and session["tax_id_collection"]["enabled"] is True
    assert session["total_details"]["amount_tax"] == 6300  # the stand-in's 21 % for Spain on 300.00 USD
    licence = licence_of(client)
    assert (licence.amount, licence.tax) == (30000, 6300)
    assert ltiaas_api.complete_calls == [registration_id] and registration(client).attention is None


def test_the_payer_names_the_school_in_checkout(shop_with, stripe_api, ltiaas_api):
    client = shop_with()
    buy(client, stripe_api, ltiaas_api, f"offer={ONCE}", fields={"organisation": "Springfield\u202e Elementary\n"})
    assert licence_of(client).organisation == "Springfield Elementary"  # cleaned where it enters


def test_a_card_payment_comes_with_an_invoice_for_the_files(shop_with, stripe_api, ltiaas_api):
    client = shop_with(card_payment_invoice=True)
    _, _, session_id = buy(client, stripe_api, ltiaas_api, f"offer={ONCE}")
    invoice_id = stripe_api.sessions[session_id]["invoice"]
    assert stripe_api.invoices[invoice_id]["status"] == "paid"
    licence = licence_of(client)
    assert licence.invoice_id == invoice_id and licence.hosted_invoice_url and licence.invoice_pdf
    assert licence.kind == "payment" and registration(client).platform_active is True


def test_a_recurring_offer_never_asks_for_a_card_payment_invoice(shop_with, stripe_api, ltiaas_api):
    client = shop_with(card_payment_invoice=True)
    buy(client, stripe_api, ltiaas_api, f"offer={SEATS}&seats=10")  # subscription mode: Stripe bills it anyway
    assert licence_of(client).kind == "subscription"
