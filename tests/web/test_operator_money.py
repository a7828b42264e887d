"""Money an operator can count: the CSV's amounts in major units (paid, refunded, dispute, net, payer) and the
list's count of the registrations its filters match."""

import csv
import io
import re
from datetime import datetime

from paygate.web.operator.export import CSV_COLUMNS, major
from tests.helpers.licences import buy
from tests.helpers.operators import seed
from tests.helpers.webhooks import send

MONEY_COLUMNS = ["amount_major", "currency_code", "refunded_major", "dispute", "net_major", "payer_name"]
# Added after the money columns, at the end, so that scripts reading columns by position keep working.
LICENCE_COLUMNS = ["key_hint", "pilot_ends_at", "licence_platforms"]


def exported(ops, **args) -> tuple[list[str], dict[int, dict]]:
    response = ops.get("/operator/registrations.csv", query_string=args)
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    return rows[0], {int(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


def money_of(row: dict) -> list[str]:
    return [row[c] for c in MONEY_COLUMNS]


def test_the_money_columns_come_after_every_column_outside_scripts_read(ops):
    header, _ = exported(ops)
    assert header == list(CSV_COLUMNS)
    assert header[: header.index("standing") + 1] == [
        c for c in CSV_COLUMNS if c not in MONEY_COLUMNS + LICENCE_COLUMNS
    ]
    assert header[-9:] == MONEY_COLUMNS + LICENCE_COLUMNS
    assert header[:3] == ["id", "created_at", "state"] and header[9:11] == ["amount_paid", "currency_paid"]


def test_a_paid_registration_counts_what_was_paid(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    _, rows = exported(ops)
    assert money_of(rows[pk])[:5] == ["49.00", "USD", "0.00", "", "49.00"]


def test_a_partial_refund_then_a_lost_dispute_nets_to_nothing(ops, stripe_api, ltiaas_api):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"], amount=1000)
    send(ops, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    assert money_of(exported(ops)[1][pk])[:5] == ["49.00", "USD", "10.00", "", "39.00"]
    dispute = stripe_api.open_dispute(session["payment_intent"])
    send(ops, stripe_api, "charge.dispute.created", dispute)
    assert exported(ops)[1][pk]["dispute"] in ("needs_response", "warning_needs_response")
    send(ops, stripe_api, "charge.dispute.closed", stripe_api.close_dispute(dispute["id"], "lost"))
    # The bank took back what was not refunded already: nothing is left.
    assert money_of(exported(ops)[1][pk])[:5] == ["49.00", "USD", "10.00", "lost", "0.00"]


def test_zero_decimal_currencies_have_no_decimals(app, ops):
    (yen,) = seed(app, amount=4900, currency="jpy", amount_paid=4900, currency_paid="jpy")
    row = exported(ops)[1][yen]
    assert money_of(row)[:5] == ["4900", "JPY", "0", "", "4900"]
    assert (major(5, "usd"), major(123456, "usd"), major(7, "krw"), major(None, "usd")) == (
        "0.05",
        "1234.56",
        "7",
        None,
    )


def test_a_registration_refunded_before_licences_counts_its_refund(app, ops):
    (pk,) = seed(app, amount_paid=4900, currency_paid="eur", refunded_at=datetime(2026, 1, 2))
    assert money_of(exported(ops)[1][pk])[:5] == ["49.00", "EUR", "49.00", "", "0.00"]


def test_nothing_paid_leaves_the_money_empty(app, ops):
    (pk,) = seed(app, state="awaiting_payment")
    assert money_of(exported(ops)[1][pk]) == ["", "", "", "", "", ""]


def test_the_payer_name_cannot_run_as_a_formula(app, ops):
    (pk,) = seed(app, amount_paid=4900, currency_paid="usd", payer_name='=HYPERLINK("https://evil.example")')
    row = exported(ops)[1][pk]
    assert row["payer_name"] == '\'=HYPERLINK("https://evil.example")'
    assert row["amount_major"] == "49.00"  # a number of ours, kept a number


def test_the_list_says_how_many_registrations_its_filters_match(app, ops):
    seed(app, 3, lms_family="moodle")
    seed(app, 2)
    assert re.search(r'id="total">\s*5 registrations\s*<', ops.get("/operator/").text)
    assert re.search(r'id="total">\s*3 registrations\s*<', ops.get("/operator/?family=moodle").text)
    (one,) = seed(app, lms_family="sakai")
    assert re.search(r'id="total">\s*1 registration\s*<', ops.get("/operator/?family=sakai").text)
    assert re.search(r'id="total">\s*0 registrations\s*<', ops.get("/operator/?family=schoology").text)
    assert one


def test_every_page_of_the_list_counts_them_all(app, ops):
    seed(app, 55)
    first = ops.get("/operator/").text
    assert re.search(r'id="total">\s*55 registrations\s*<', first)
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    assert re.search(r'id="total">\s*55 registrations\s*<', ops.get(older).text)
