"""Operators see what was sold: offer, seats, amount after discounts, discount and promotion code, tax, payer
and invoice links, in the JSON API, the list (with a filter by offer), the CSV export and the detail page."""

import csv
import io
import re
from datetime import datetime

import pytest
from sqlalchemy import event

from paygate.core.db import db
from paygate.core.models import Licence
from tests.helpers.operators import api_ids, seed

MINUS = "\u2212"  # a discount is shown as a negative amount
SEATS = {"price_id": "price_seats_yearly", "product_name": "Site licence", "quantity": 120, "seat_unit": "student"}


def licence(app, pk, **fields) -> None:
    """A licence written straight to the database, as the flow leaves it once Stripe says paid."""
    values = {"kind": "payment", "status": "succeeded", "created_at": datetime(2026, 1, 1)}
    values.update(fields)
    with app.app_context():
        db.session.add(Licence(registration_pk=pk, updated_at=values["created_at"], **values))
        db.session.commit()


def seat_sale(app, **fields) -> int:
    """120 students at 30.00 USD, 20 % off with SCHOOL20, 8 % tax, invoiced with the card payment."""
    (pk,) = seed(
        app, amount=360000, amount_paid=311040, currency_paid="usd", payer_email="it@springfield.example", **SEATS
    )
    values = {
        "price_id": "price_seats_yearly",
        "quantity": 120,
        "seat_unit": "student",
        "amount": 288000,
        "discount": 72000,
        "tax": 23040,
        "promotion_code": "SCHOOL20",
        "currency": "usd",
        "organisation": "Springfield Elementary",
        "invoice_pdf": "https://pay.stripe.test/invoice/acct_1/in_1/pdf",
        "hosted_invoice_url": "https://invoice.stripe.test/i/in_1",
    }
    licence(app, pk, **{**values, **fields})
    return pk


def cells(page: str, pk: int) -> list[str]:
    """The cells of registration `pk`'s row in the list, as text."""
    row = next(r for r in re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", page, re.S) if f">{pk}</a>" in r)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def export(ops, **args) -> list[dict]:
    response = ops.get("/operator/registrations.csv", query_string=args)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


# The JSON API


def test_a_seat_licence_with_a_code_and_tax_in_the_json(app, ops):
    pk = seat_sale(app)
    for body in (
        ops.get(f"/operator/api/registrations/{pk}").get_json(),
        ops.get("/operator/api/registrations").get_json()["items"][0],
    ):
        lic = body["licence"]
        assert {
            k: lic[k] for k in ("price_id", "quantity", "seat_unit", "amount", "currency", "tax", "promotion_code")
        } == {
            "price_id": "price_seats_yearly",
            "quantity": 120,
            "seat_unit": "student",
            "amount": 288000,
            "currency": "usd",
            "tax": 23040,
            "promotion_code": "SCHOOL20",
        }
        assert (lic["discount"], lic["payer"], lic["product_name"], lic["display"]) == (
            72000,
            "Springfield Elementary",
            "Site licence",
            "2,880.00 USD",
        )
        assert lic["invoice_pdf"].endswith("/pdf") and lic["hosted_invoice_url"] == "https://invoice.stripe.test/i/in_1"
        assert lic["offer_source"] == "licence"
        assert body["offer"] == {
            "price_id": "price_seats_yearly",
            "product_name": "Site licence",
            "quantity": 120,
            "seat_unit": "student",
        }


def test_no_tax_and_no_code_are_null_not_zero(app, ops):
    (pk,) = seed(app, amount_paid=4900, currency_paid="eur")
    licence(app, pk, price_id="price_registration", quantity=1, amount=4900, currency="eur")
    lic = ops.get(f"/operator/api/registrations/{pk}").get_json()["licence"]
    assert (lic["tax"], lic["promotion_code"], lic["discount"], lic["seat_unit"]) == (None, None, None, None)
    assert (lic["amount"], lic["currency"], lic["quantity"]) == (4900, "eur", 1)
    page = ops.get(f"/operator/registrations/{pk}").text
    assert re.search(r'<dd id="offer-tax">\s*—', page) and re.search(r'<dd id="offer-discount">\s*—', page)
    assert 'id="offer-invoice"' not in page and "sold once" in page


def test_a_licence_from_before_offers_reads_as_the_registrations_price_once(app, ops):
    (paid,) = seed(app, amount_paid=4900, currency_paid="usd", product_name="Registration")
    licence(app, paid, currency="usd")  # no Price, quantity or amount: written before migration 0007
    (invoiced,) = seed(app, amount=4500, currency="eur", created_at=datetime(2026, 2, 1))
    licence(app, invoiced, kind="invoice", status="open", amount_due=4500, currency="eur", organisation="Old School")
    lic = ops.get(f"/operator/api/registrations/{paid}").get_json()["licence"]
    assert {
        k: lic[k] for k in ("price_id", "quantity", "seat_unit", "amount", "currency", "tax", "promotion_code")
    } == {
        "price_id": "price_registration",
        "quantity": 1,
        "seat_unit": None,
        "amount": 4900,
        "currency": "usd",
        "tax": None,
        "promotion_code": None,
    }
    assert lic["offer_source"] == "registration" and lic["discount"] is None and lic["product_name"] == "Registration"
    lic = ops.get(f"/operator/api/registrations/{invoiced}").get_json()["licence"]
    assert (lic["amount"], lic["currency"], lic["payer"], lic["quantity"]) == (4500, "eur", "Old School", 1)
    assert 'id="offer-before"' in ops.get(f"/operator/registrations/{paid}").text
    # Without a licence there is none in the JSON; the offer chosen is still there.
    (pending,) = seed(app, state="pending", created_at=datetime(2026, 3, 1), **SEATS)
    body = ops.get(f"/operator/api/registrations/{pending}").get_json()
    assert body["licence"] is None and body["offer"]["quantity"] == 120


# The filter by offer


@pytest.fixture
def offers(app):
    """Two offers sold, one only shown: (seats, once, shown, a Price configured but never chosen)."""
    seats = seat_sale(app)
    (once,) = seed(
        app, product_name="Registration", amount_paid=4900, currency_paid="usd", created_at=datetime(2026, 2, 1)
    )
    (shown,) = seed(
        app, state="pending", price_id="price_tiered", product_name="Teacher pack", created_at=datetime(2026, 3, 1)
    )
    return seats, once, shown


def test_the_list_filters_by_offer_in_the_page_the_json_and_the_csv(app, ops, offers):
    seats, once, shown = offers
    assert api_ids(ops, offer="price_seats_yearly") == [seats]
    assert api_ids(ops, offer="price_registration") == [once]
    assert api_ids(ops, offer="price_never_seen") == []
    assert set(api_ids(ops)) == {seats, once, shown}
    assert [int(r["id"]) for r in export(ops, offer="price_tiered")] == [shown]
    page = ops.get("/operator/", query_string={"offer": "price_registration"}).text
    listed = page.split("All registrations")[-1]
    assert f"/operator/registrations/{once}" in listed and f"/operator/registrations/{seats}" not in listed
    select = re.search(r'<select name="offer" id="offer">(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option value="([^"]*)"\s*(selected)?>([^<]*)</option>', select)
    # The configured Price first (the test settings configure price_registration), then the others seen.
    assert [(v, label) for v, _, label in options] == [
        ("", "any"),
        ("price_registration", "Registration (price_registration)"),
        ("price_seats_yearly", "Site licence (price_seats_yearly)"),
        ("price_tiered", "Teacher pack (price_tiered)"),
    ]
    assert [v for v, selected, _ in options if selected] == ["price_registration"]
    # Kept in the URL, like the other filters: export, JSON and page links carry it.
    assert "/operator/registrations.csv?offer=price_registration" in page
    assert "/operator/api/registrations?offer=price_registration" in page


def test_the_offer_filter_pages_and_refuses_what_is_no_price(app, ops):
    seed(app, 3, price_id="price_other", created_at=datetime(2026, 5, 1))
    pks = seed(app, 5, price_id="price_seats_yearly")
    body = ops.get("/operator/api/registrations", query_string={"offer": "price_seats_yearly", "limit": 2}).get_json()
    assert "offer=price_seats_yearly" in body["next"]
    seen = [i["id"] for i in body["items"]]
    while body["next"]:
        body = ops.get(body["next"]).get_json()
        seen += [i["id"] for i in body["items"]]
    assert seen == sorted(pks, reverse=True)
    older = ops.get("/operator/", query_string={"offer": "price_seats_yearly"}).text
    assert 'id="older"' not in older  # one page of five
    for bad in ("nope", "price_", "price_a b", "price_" + "x" * 250, "price_é"):
        refused = ops.get("/operator/api/registrations", query_string={"offer": bad})
        assert refused.status_code == 400 and "Stripe Price id" in refused.get_json()["message"], bad
        assert ops.get("/operator/registrations.csv", query_string={"offer": bad}).status_code == 400
    assert "Stripe Price id" in ops.get("/operator/?offer=nope").text


def test_the_list_shows_offer_seats_amount_discount_tax_and_payer(app, ops, offers):
    seats, once, shown = offers
    page = ops.get("/operator/?unpaid=show").text  # `shown` was never paid: hidden by default
    header = re.findall(r"<th>([^<]*)</th>", page)[:8]
    assert header == ["#", "State", "LMS", "Paid by", "Offer", "Amount", "Discount", "Tax"]
    lms, paid_by, offer, amount, discount, tax = cells(page, seats)[2:8]
    assert "canvas.instructure.com" in lms and paid_by.startswith("Springfield Elementary")
    assert (offer, amount, discount, tax) == (
        "Site licence 120 students",
        "2,880.00 USD",
        MINUS + "720.00 USD SCHOOL20",
        "230.40 USD",
    )
    assert cells(page, once)[4:8] == ["Registration", "49.00 USD", "", ""]  # no seats for an offer sold once
    assert cells(page, shown)[4:6] == ["Teacher pack", "49.00 USD"]
    assert 'title="the price shown, not paid"' in re.search(rf">{shown}</a>.*?</tr>", page, re.S).group(0)


@pytest.mark.parametrize(
    ("quantity", "unit", "shown"),
    [
        (1, "student", "1 student"),
        (120, "student", "120 students"),
        (3, "class", "3 classes"),
        (2, "faculty", "2 faculties"),
    ],
)
def test_seats_read_as_a_number_of_units(app, ops, quantity, unit, shown):
    (pk,) = seed(app, price_id="price_seats", quantity=quantity, seat_unit=unit)
    assert cells(ops.get("/operator/").text, pk)[4].endswith(shown)


def test_the_list_stays_a_fixed_number_of_queries(app, ops):
    """No query per row: what a row shows is loaded with the page (the licence by one selectin)."""

    def statements(path) -> int:
        counted = []
        with app.app_context():
            engine = db.engine

        def listener(*args):
            counted.append(1)

        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert ops.get(path).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(counted)

    def counts():
        return [statements(p) for p in ("/operator/", "/operator/api/registrations", "/operator/registrations.csv")]

    seat_sale(app)
    few = counts()
    for _ in range(6):
        seat_sale(app)
        seed(app)
    assert counts() == few


# The CSV export


def test_the_csv_has_what_was_sold(app, ops, offers):
    seats, once, shown = offers
    rows = {int(r["id"]): r for r in export(ops)}
    columns = (
        "price_id",
        "product",
        "quantity",
        "seat_unit",
        "amount",
        "currency",
        "discount",
        "tax",
        "promotion_code",
    )
    assert tuple(rows[seats][c] for c in columns) == (
        "price_seats_yearly",
        "Site licence",
        "120",
        "student",
        "288000",
        "usd",
        "72000",
        "23040",
        "SCHOOL20",
    )
    assert rows[seats]["payer"] == "Springfield Elementary"
    assert rows[seats]["invoice_pdf"].endswith("/pdf") and rows[seats]["invoice_hosted_url"].endswith("/in_1")
    assert tuple(rows[once][c] for c in columns) == (
        "price_registration",
        "Registration",
        "1",
        "",
        "4900",
        "usd",
        "",
        "",
        "",
    )
    # Nothing paid: the offer chosen, no amount (the price shown stays in price_amount).
    assert (rows[shown]["price_id"], rows[shown]["amount"], rows[shown]["price_amount"]) == ("price_tiered", "", "4900")


def test_the_csv_keeps_a_payer_or_code_from_becoming_a_formula(app, ops):
    seat_sale(app, organisation='=HYPERLINK("http://evil.example")')
    (row,) = export(ops)
    assert row["payer"] == '\'=HYPERLINK("http://evil.example")'


# The detail page


def test_the_detail_page_has_the_offer_block_and_the_invoice_links(app, ops):
    pk = seat_sale(app)
    page = ops.get(f"/operator/registrations/{pk}").text
    block = re.search(r'<section id="offer">(.*?)</section>', page, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", block).split())
    for fact in (
        "Product Site licence",
        "Price price_seats_yearly",
        "Seats 120 students",
        "Amount 2,880.00 USD after discounts, before tax",
        f"Discount {MINUS}720.00 USD SCHOOL20",
        "Tax 230.40 USD",
        "Payer Springfield Elementary",
        "Invoice invoice page · PDF",
    ):
        assert fact in text, fact
    assert 'href="https://invoice.stripe.test/i/in_1"' in block
    assert 'href="https://pay.stripe.test/invoice/acct_1/in_1/pdf"' in block


def test_an_invoice_link_that_is_no_web_address_is_not_a_link(app, ops):
    pk = seat_sale(app, invoice_pdf="javascript:alert(1)", hosted_invoice_url="data:text/html,hi")
    page = ops.get(f"/operator/registrations/{pk}").text
    assert "javascript:alert" not in page and 'id="offer-invoice"' not in page


HOSTILE = "<b>Evil</b>\u202eloohcS\x1b[31m\x07 Board"  # no NUL: PostgreSQL refuses it in text


def test_a_payer_with_html_or_control_characters_is_shown_escaped(app, ops):
    (pk,) = seed(app, payer_name=HOSTILE, amount_paid=4900, currency_paid="usd", product_name="<i>Product</i>")
    licence(
        app, pk, price_id="price_registration", amount=4900, currency="usd", organisation=HOSTILE, promotion_code="<s>X"
    )
    for path in ("/operator/", f"/operator/registrations/{pk}"):
        page = ops.get(path).text
        for raw in ("<b>", "\u202e", "\x1b", "\x07", "<i>", "<s>"):
            assert raw not in page, (path, raw)
        assert "&lt;b&gt;Evil&lt;/b&gt;\\u202eloohcS\\u001b[31m\\u0007 Board" in page, path
        assert "&lt;i&gt;Product&lt;/i&gt;" in page and "&lt;s&gt;X" in page
    raw_json = ops.get(f"/operator/api/registrations/{pk}").get_data(as_text=True)
    assert "\u202e" not in raw_json and "\x1b" not in raw_json  # JSON writes them as \u escapes
    assert ops.get(f"/operator/api/registrations/{pk}").get_json()["licence"]["payer"] == HOSTILE
