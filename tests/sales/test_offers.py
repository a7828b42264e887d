"""Several offers, seats and tiers: what the admin sees and chooses in the frame, and what Checkout, the licence
and operators then carry. The Stripe stand-in sells three Prices: per student and year, once, per teacher (tiers)."""

import re

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, Registration
from paygate.standins.stripe.state import make_price, make_product
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import registration, send

SEATS, ONCE, TIERED = "price_seats_yearly", "price_registration", "price_teachers"
OFFERS = f"{SEATS},{ONCE},{TIERED}"


def add_offers(stripe_api) -> None:
    """The stand-in's catalogue: 3.00 USD per student per year (10-5000), 49.00 USD once, per teacher by tiers."""
    state = stripe_api.state
    state.products["prod_seats"] = make_product("prod_seats", "Tool licence per student", "Every student, a year")
    state.products["prod_teachers"] = make_product("prod_teachers", "Tool licence per teacher", None)
    state.prices[SEATS] = make_price(
        SEATS, "prod_seats", 300, interval="year", metadata={"seats": "10-5000", "seat_unit": "student"}
    )
    state.prices[TIERED] = make_price(
        TIERED,
        "prod_teachers",
        metadata={"seats": "1-500", "seat_unit": "teacher"},
        tiers_mode="graduated",
        tiers=[
            {"up_to": 10, "unit_amount": 2000, "flat_amount": None},
            {"up_to": 50, "unit_amount": 1500, "flat_amount": None},
            {"up_to": None, "unit_amount": 1000, "flat_amount": None},
        ],
    )


@pytest.fixture
def shop(make, database_url, stripe_api, ltiaas_api):
    """An app selling the three offers, with promotion codes; its client."""
    add_offers(stripe_api)
    app = make(database_url, stripe_price_id=OFFERS, promotion_codes=True)
    return app.test_client()


def creates(stripe_api) -> list:
    return [c for c in stripe_api.calls if c[0] == "checkout_create"]


def test_the_frame_offers_each_price_as_a_choice_the_first_chosen(shop, ltiaas_api):
    _, _, page = open_frame(shop, ltiaas_api)
    radios = re.findall(r'<input type="radio" name="offer" id="offer-(\d)" value="([^"]+)"( checked)?', page.text)
    assert [(value, bool(checked)) for _, value, checked in radios] == [(SEATS, True), (ONCE, False), (TIERED, False)]
    assert "<legend>Choose what to buy</legend>" in page.text
    assert "Tool licence per student" in page.text and "Every student, a year" in page.text
    assert "3.00 USD per student per year (10 to 5,000 students)" in page.text
    assert "from 20.00 USD per teacher, paid once (1 to 500 teachers)" in page.text
    assert 'id="seats" name="seats" type="number"' in page.text and 'value="10"' in page.text
    assert "10 students × 3.00 USD = 30.00 USD per year" in page.text
    assert "Renews automatically (per year) until cancelled" in page.text  # the terms, before paying


def test_the_quote_shows_unit_price_number_and_total_in_the_admins_language(shop, ltiaas_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    quote = shop.get(f"/flow/{token}/quote?offer={SEATS}&seats=1200").get_json()
    assert quote["breakdown"] == "1,200 students × 3.00 USD = 3,600.00 USD per year"
    assert quote["pay_label"] == "Pay 3,600.00 USD per year by card"
    spanish = shop.get(f"/flow/{token}/quote?offer={SEATS}&seats=1200", headers={"Accept-Language": "es"}).get_json()
    assert spanish["breakdown"] == "1.200 estudiantes × 3,00 USD = 3.600,00 USD al año"


def test_a_tiered_price_shows_the_total_stripe_will_charge(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    quote = shop.get(f"/flow/{token}/quote?offer={TIERED}&seats=60").get_json()
    # graduated: 10 x 20.00 + 40 x 15.00 + 10 x 10.00
    assert quote["breakdown"] == "60 teachers: 900.00 USD, paid once"
    assert shop.get(f"/flow/{token}/pay?offer={TIERED}&seats=60").status_code == 303
    session = stripe_api.only_session()
    assert session["amount_subtotal"] == 90000 and session["amount_total"] == 90000


@pytest.mark.parametrize("seats", ["-1", "1e9", "abc", "2.5", "9", "5001", "x" * 10_000, " ", "0x10", "١٢"])
def test_a_seat_count_that_cannot_be_sold_gets_a_sentence_and_makes_nothing_at_stripe(
    shop, ltiaas_api, stripe_api, seats
):
    _, token, _ = open_frame(shop, ltiaas_api)
    quote = shop.get(f"/flow/{token}/quote", query_string={"offer": SEATS, "seats": seats})
    assert quote.status_code == 400
    assert quote.get_json()["error"].startswith(("Enter the number of students", "The number of students"))
    popup = shop.get(f"/flow/{token}/pay", query_string={"offer": SEATS, "seats": seats})
    assert popup.status_code == 400 and "students" in popup.text
    assert creates(stripe_api) == []


def test_an_offer_not_on_sale_is_refused(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    answer = shop.get(f"/flow/{token}/pay?offer=price_someone_elses&seats=10")
    assert answer.status_code == 400 and "This offer is not on sale" in answer.text
    assert creates(stripe_api) == []


def test_checkout_carries_the_seats_chosen_and_the_licence_stores_them(shop, ltiaas_api, stripe_api):
    registration_id, token, _ = open_frame(shop, ltiaas_api)
    assert shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120").status_code == 303
    session = stripe_api.only_session()
    assert session["mode"] == "subscription" and session["amount_subtotal"] == 36000
    stripe_api.pay(session["id"])
    shop.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert status(shop, token)["phase"] == "done"
    assert ltiaas_api.complete_calls == [registration_id]
    with shop.application.app_context():
        licence = db.session.scalars(select(Licence)).one()
        assert (licence.kind, licence.price_id, licence.quantity, licence.seat_unit) == (
            "subscription",
            SEATS,
            120,
            "student",
        )
        assert (licence.amount, licence.currency, licence.tax, licence.promotion_code) == (36000, "usd", None, None)


def test_the_same_choice_twice_reuses_its_session_and_another_choice_replaces_it(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    first = shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120").headers["Location"]
    again = shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120").headers["Location"]
    assert first == again and len(stripe_api.sessions) == 1
    other = shop.get(f"/flow/{token}/pay?offer={ONCE}").headers["Location"]
    assert other != first
    old, new = sorted(stripe_api.sessions.values(), key=lambda s: s["created"] + s["_seq"] / 1e6)
    assert old["status"] == "expired" and new["status"] == "open"  # one registration is never paid twice
    assert new["amount_total"] == 4900 and new["mode"] == "payment"
    with shop.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert (reg.price_id, reg.quantity, reg.amount) == (ONCE, 1, 4900)


def test_a_session_for_another_quantity_is_not_fulfilled(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")
    session = stripe_api.sessions[stripe_api.only_session()["id"]]
    # Someone changed the quantity at Stripe (adjustable quantity, a crafted session): 12 seats paid, not 120.
    session["_chosen"] = [(price, 12) for price, _ in session["_chosen"]]
    for item in session["_line_items"]:
        item.update(quantity=12, amount_subtotal=3600, amount_total=3600)
    session["amount_subtotal"] = session["amount_total"] = 3600
    stripe_api.pay(session["id"])
    assert stripe_api.sessions[session["id"]]["amount_total"] == 3600
    send(shop, stripe_api, "checkout.session.completed", stripe_api.sessions[session["id"]])
    reg = registration(shop)
    assert reg.state == "needs_attention" and reg.attention == "payment_mismatch"
    assert ltiaas_api.complete_calls == []


def test_an_unsellable_price_among_the_offers_is_named_and_not_offered(
    make, database_url, stripe_api, ltiaas_api, caplog
):
    add_offers(stripe_api)
    stripe_api.state.prices[TIERED]["metadata"]["seats"] = "lots"
    app = make(database_url, stripe_price_id=f"{SEATS},price_gone,{TIERED}")
    client = app.test_client()
    _, _, page = open_frame(client, ltiaas_api)
    assert re.findall(r'type="hidden" name="offer" value="([^"]+)"', page.text) == [SEATS]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("price_gone" in e for e in errors) and any(TIERED in e and "seats" in e for e in errors)


def test_the_start_up_check_names_each_unsellable_price(stripe_api, caplog):
    from paygate.core.config import load_settings
    from paygate.sales import offers
    from tests.helpers.apps import BASE_CONFIG

    add_offers(stripe_api)
    stripe_api.state.prices[SEATS]["active"] = False
    settings = load_settings({**BASE_CONFIG, "stripe_price_id": f"{SEATS},{ONCE},price_unknown"})
    assert offers.check_at_startup(settings) == [ONCE]
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert SEATS in errors and "archived" in errors and "price_unknown" in errors


def test_checkout_uses_the_payment_method_parameter_stripe_still_knows(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    assert shop.get(f"/flow/{token}/pay?offer={ONCE}").status_code == 303  # the stand-in refuses unknown ones
    session = stripe_api.only_session()
    assert session["custom_fields"][0]["key"] == "organisation" and not session["custom_fields"][0]["optional"]
    assert session["allow_promotion_codes"] is True


def test_a_new_choice_never_leaves_the_previous_session_payable(shop, ltiaas_api, stripe_api):
    _, token, _ = open_frame(shop, ltiaas_api)
    shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")
    first = stripe_api.only_session()["id"]
    stripe_api.pay(first)  # paid in the first window a moment ago; no webhook yet
    answer = shop.get(f"/flow/{token}/pay?offer={ONCE}")
    assert answer.status_code == 409 and "still being processed" in answer.text
    assert len(stripe_api.sessions) == 1  # no second session to pay
    with shop.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert (reg.price_id, reg.quantity) == (SEATS, 120)  # the choice that was paid stays the registration's


def test_a_paid_registrations_page_shows_what_was_bought_without_asking_stripe(shop, ltiaas_api, stripe_api):
    registration_id, token, _ = open_frame(shop, ltiaas_api)
    shop.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    shop.get(f"/flow/{token}/paid?session_id={session_id}")
    for price in stripe_api.state.prices.values():
        price["active"] = False  # the vendor archived every Price since
    stripe_api.state.calls.clear()
    page = shop.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200 and "120 students: 360.00 USD per year" in page.text
    assert [c for c in stripe_api.calls if c[0] == "price"] == []
