"""What a Price read from Stripe offers: per unit or by tiers, once or per seat, and which Prices are not sold."""

import pytest

from paygate.gateways.payments.catalogue import price_view
from paygate.sales import offers


def price(**fields) -> dict:
    return {"id": "price_x", "currency": "usd", "active": True, "unit_amount": 300, "metadata": {}, **fields}


def tiered(mode: str, **fields) -> dict:
    tiers = [
        {"up_to": 10, "unit_amount": 2000, "flat_amount": None},
        {"up_to": 50, "unit_amount": 1500, "flat_amount": 500},
        {"up_to": None, "unit_amount": 1000, "flat_amount": None},
    ]
    return price(billing_scheme="tiered", tiers_mode=mode, unit_amount=None, tiers=tiers, **fields)


@pytest.mark.parametrize(
    "quantity, volume, graduated",
    [(1, 2000, 2000), (10, 20000, 20000), (11, 17000, 22000), (50, 75500, 80500), (51, 51000, 81500)],
)
def test_tiers_are_billed_as_stripe_bills_them(quantity, volume, graduated):
    # volume: every unit at the tier the quantity falls in (and that tier's flat amount);
    # graduated: each tier's part at its own rate, each tier reached adds its flat amount.
    assert price_view(tiered("volume")).total(quantity) == volume
    assert price_view(tiered("graduated")).total(quantity) == graduated


def test_seats_metadata_makes_a_per_seat_offer_with_its_unit():
    offer = offers.offer_of(price_view(price(metadata={"seats": "10-5000", "seat_unit": "Student"})))
    assert (offer.min_seats, offer.max_seats, offer.seat_unit, offer.first_quantity) == (10, 5000, "student", 10)
    assert offers.offer_of(price_view(price())).per_seat is False


@pytest.mark.parametrize(
    "fields",
    [
        {"active": False},
        {"unit_amount": 0},
        {"metadata": {"seats": "lots"}},
        {"metadata": {"seats": "50-10"}},
        {"metadata": {"seats": "0-10"}},
        {"metadata": {"seats": "1-9999999"}},
    ],
)
def test_a_price_that_cannot_be_sold_is_named_and_not_offered(fields, caplog):
    assert offers.offer_of(price_view(price(**fields))) is None
    assert any("price_x" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_tier_in_fractions_of_a_cent_is_not_offered():
    data = tiered("volume")
    data["tiers"][0] = {"up_to": 10, "unit_amount": None, "unit_amount_decimal": "1999.5", "flat_amount": None}
    assert offers.offer_of(price_view(data)) is None


@pytest.mark.parametrize("raw", ["-1", "1e9", "abc", "2.5", "١٢", "x" * 10_000, None, 12, " 12 "[:0]])
def test_only_a_whole_number_in_range_is_a_number_of_seats(raw):
    offer = offers.offer_of(price_view(price(metadata={"seats": "10-5000"})))
    if raw == "":
        assert offers.choose([offer], "price_x", raw).quantity == 10  # absent: the minimum
        return
    with pytest.raises(offers.ChoiceRefused):
        offers.parse_quantity(raw, offer)
