"""Money an operator can act on: a partial refund (an amount up to what is left, Stripe's reason, a note; once
per form; the access stays), cancelling a subscription at its period's end without a refund (the access stays
until then, then ends), both admin-only; and the list leaving pending-and-never-paid rows out by default."""

import csv
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers.licences import buy, load
from tests.helpers.operators import EMAIL, add_operator, api_ids, csrf_token, seed, sign_in
from tests.helpers.webhooks import send
from tests.web.test_operator_statuses import dd, row, text_of

LICENCE = 10


def refund_form(client, pk: int) -> dict:
    """The refund page's hidden fields: its CSRF token and the form's one-time id."""
    page = client.get(f"/operator/registrations/{pk}/refund").text
    return {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1),
        "form_id": re.search(r'name="form_id" value="([^"]+)"', page).group(1),
    }


def refund(client, pk: int, **fields):
    response = client.post(f"/operator/registrations/{pk}/refund", data={**refund_form(client, pk), **fields})
    assert response.status_code == 303
    return text_of(client.get(response.headers["Location"]).text)


def test_a_partial_refund_keeps_the_access_and_says_so_everywhere(app, ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    page = ops.get(f"/operator/registrations/{pk}/refund").text
    assert "49.00 USD" in dd(page, "refund-amount") and 'id="refund-reason"' in page
    shown = refund(ops, pk, amount="12.50", reason="duplicate", note="charged twice for one class")
    assert "Refunded 12.50 USD" in shown and "The access stays" in shown
    (made,) = stripe_api.refunds.values()
    assert (made["amount"], made["reason"]) == (1250, "duplicate")
    reg = load(ops, pk)
    assert reg.state == "completed" and reg.platform_active is True
    timeline = [e.message for e in reg.timeline]
    assert any("Refund of 12.50 USD asked (duplicate): charged twice for one class" in m for m in timeline)
    _, cells = row(ops.get("/operator/").text, pk)
    assert "paid" in cells[LICENCE] and "12.50 USD refunded" in cells[LICENCE]
    exported = next(csv.DictReader(io.StringIO(ops.get("/operator/registrations.csv").get_data(as_text=True))))
    assert (exported["refunded_major"], exported["net_major"]) == ("12.50", "36.50")
    # What is left is what the page offers next; refunding all of it ends the access.
    assert "36.50 USD" in dd(ops.get(f"/operator/registrations/{pk}/refund").text, "refund-amount")
    shown = refund(ops, pk, amount="36.50", reason="requested_by_customer")
    reg = load(ops, pk)
    assert reg.state == "refunded" and reg.access_wanted is False
    assert len(stripe_api.refunds) == 2


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("49.01", "at most what is left to refund, 49.00 USD"),
        ("0", "more than nothing"),
        ("-5", "must be a number"),
        ("12.345", "at most 2 decimals"),
        ("lots", "must be a number"),
        # A decimal comma is never read as a thousands separator: "12,50" is not 1,250.00.
        ("12,50", "Write decimals with a point"),
        ("1,2,3", "Write decimals with a point"),
    ],
)
def test_a_refund_amount_beyond_what_is_left_refunds_nothing(ops, stripe_api, ltiaas_api, amount, says):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    shown = refund(ops, pk, amount=amount, reason="requested_by_customer")
    assert says in shown and "Nothing was refunded" in shown
    assert stripe_api.refunds == {} and load(ops, pk).state == "completed"


def test_a_refund_reason_stripe_does_not_know_is_refused(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    shown = refund(ops, pk, amount="10", reason="changed_mind")
    assert "Choose a reason Stripe knows" in shown and stripe_api.refunds == {}


def test_a_refund_form_sent_twice_refunds_once(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    fields = {**refund_form(ops, pk), "amount": "10.00", "reason": "duplicate"}
    ops.post(f"/operator/registrations/{pk}/refund", data=fields)
    again = ops.post(f"/operator/registrations/{pk}/refund", data=fields)
    assert "one refund per form" in text_of(ops.get(again.headers["Location"]).text)
    assert len(stripe_api.refunds) == 1 and load(ops, pk).licence.payments[0].amount_refunded == 1000


def test_a_concurrent_double_submit_of_a_partial_refund_makes_one_refund(pg_app, stripe_api, ltiaas_api):
    add_operator(pg_app)
    client = pg_app.test_client()
    sign_in(client)
    pk, _ = buy(client, stripe_api, ltiaas_api)
    fields = {"amount": "5.00", "reason": "requested_by_customer", **refund_form(client, pk)}
    at_once = 4
    clients = []
    for _ in range(at_once):  # each its own session, signed in, with its own CSRF token: the same form, sent 4 times
        own = pg_app.test_client()
        sign_in(own)
        clients.append((own, csrf_token(own, f"/operator/registrations/{pk}")))
    start = threading.Barrier(at_once)

    def submit(pair):
        own, token = pair
        start.wait()
        return own.post(f"/operator/registrations/{pk}/refund", data={**fields, "csrf_token": token}).status_code

    with ThreadPoolExecutor(at_once) as pool:
        assert list(pool.map(submit, clients)) == [303] * at_once
    assert len(stripe_api.refunds) == 1
    assert load(pg_app, pk).licence.payments[0].amount_refunded == 500


def test_refunds_and_cancelling_are_admin_only(app, client, stripe_api, ltiaas_api, yearly):
    add_operator(app)
    sign_in(client)
    pk, _ = buy(client, stripe_api, ltiaas_api)
    fields = refund_form(client, pk)
    add_operator(app, email="support2@vendor.example", role="support")
    support = app.test_client()
    sign_in(support, email="support2@vendor.example")
    token = csrf_token(support, f"/operator/registrations/{pk}")
    for path in ("refund", "cancel-at-period-end"):
        answer = support.post(
            f"/operator/registrations/{pk}/{path}", data={**fields, "amount": "1", "csrf_token": token}
        )
        assert answer.status_code == 403
    assert stripe_api.refunds == {} and load(app, pk).licence.cancel_at_period_end is False


def test_cancel_at_period_end_keeps_the_access_until_then_and_ends_it_after(app, ops, stripe_api, ltiaas_api, yearly):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    end = load(ops, pk).licence.period_end
    detail = ops.get(f"/operator/registrations/{pk}").text
    form = re.search(r'<form method="post" action="[^"]*cancel-at-period-end".*?</form>', detail, re.S).group(0)
    data = {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', form).group(1),
        "form_id": re.search(r'name="form_id" value="([^"]+)"', form).group(1),
        "note": "school closes in June",
    }
    done = ops.post(f"/operator/registrations/{pk}/cancel-at-period-end", data=data)
    shown = text_of(ops.get(done.headers["Location"]).text)
    assert f"ends on {end:%Y-%m-%d}, not renewed" in shown
    reg = load(ops, pk)
    assert reg.licence.cancel_at_period_end is True and reg.platform_active is True and reg.state == "completed"
    assert f"ends on {end:%Y-%m-%d}, not renewed" in dd(ops.get(f"/operator/registrations/{pk}").text, "licence-status")
    assert any("school closes in June" in e.message for e in reg.timeline)
    assert stripe_api.refunds == {}
    _, cells = row(ops.get("/operator/").text, pk)
    assert f"ends on {end:%Y-%m-%d}, not renewed" in cells[LICENCE]
    assert 'id="cancel-at-period-end"' not in ops.get(f"/operator/registrations/{pk}").text  # done once
    # Stripe's webhook of the change keeps the licence in step; then the period ends and so does the access.
    sub_id = session["subscription"]
    send(ops, stripe_api, "customer.subscription.updated", stripe_api.subscriptions[sub_id])
    assert load(ops, pk).licence.cancel_at_period_end is True
    send(ops, stripe_api, "customer.subscription.deleted", stripe_api.end_period(sub_id))
    reg = load(ops, pk)
    assert reg.licence.status == "canceled" and reg.access_wanted is False
    assert "cancelled (ended" in dd(ops.get(f"/operator/registrations/{pk}").text, "licence-status")


def test_the_list_hides_pending_never_paid_rows_by_default_and_the_api_and_csv_keep_them(app, ops):
    (paid,) = seed(app)
    (pending,) = seed(app, state="pending")
    page = ops.get("/operator/").text
    assert f"/operator/registrations/{paid}" in page and f"/operator/registrations/{pending}" not in page
    assert re.search(r'id="total">\s*1 registration\s*<', page)
    # The list's links to the CSV and JSON carry its choice.
    assert re.search(r'href="[^"]*registrations\.csv\?[^"]*unpaid=hide"', page)
    shown = ops.get("/operator/?unpaid=show").text
    assert f"/operator/registrations/{pending}" in shown and re.search(r'id="total">\s*2 registrations\s*<', shown)
    assert 'value="show" selected' in shown
    assert sorted(api_ids(ops)) == sorted([paid, pending])
    assert api_ids(ops, unpaid="hide") == [paid]
    ids = [r["id"] for r in csv.DictReader(io.StringIO(ops.get("/operator/registrations.csv").get_data(as_text=True)))]
    assert sorted(ids) == sorted([str(paid), str(pending)])
    hidden = ops.get("/operator/registrations.csv?unpaid=hide").get_data(as_text=True)
    assert [r["id"] for r in csv.DictReader(io.StringIO(hidden))] == [str(paid)]
    # Asking for the state, or searching, finds them whatever the default.
    assert f"/operator/registrations/{pending}" in ops.get("/operator/?state=pending").text
    assert ops.get("/operator/api/registrations?unpaid=maybe").status_code == 400


def test_the_operator_email_is_the_refunds_cause(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    refund(ops, pk, amount="1.00", reason="requested_by_customer")
    assert any(
        e.cause == f"operator {EMAIL}" and "Refund of 1.00 USD asked" in e.message for e in load(ops, pk).timeline
    )


def test_a_partial_refund_whose_answer_is_lost_is_counted_before_another(ops, stripe_api, ltiaas_api):
    """Stripe made the refund but its answer never came: the page says it may have been made, and what is left to
    refund counts it (the payment is read again), so a second form cannot refund the same money twice."""
    pk, session = buy(ops, stripe_api, ltiaas_api)
    stripe_api.refund_in_dashboard(session["payment_intent"], amount=1250)  # made, as far as Stripe knows ...
    stripe_api.fail_next_refund.append(requests.ConnectionError("connection reset"))  # ... its answer lost
    shown = refund(ops, pk, amount="12.50", reason="duplicate")
    assert "the refund may have been made" in shown
    assert "36.50 USD" in dd(ops.get(f"/operator/registrations/{pk}/refund").text, "refund-amount")
    assert load(ops, pk).platform_active is True


def test_partial_refunds_that_add_up_to_the_whole_also_cancel_the_subscription(ops, stripe_api, ltiaas_api, yearly):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    paid = load(ops, pk).licence.payments[0].amount
    refund(ops, pk, amount=f"{(paid // 2) / 100:.2f}", reason="requested_by_customer")
    assert stripe_api.subscriptions[session["subscription"]]["status"] != "canceled"
    shown = refund(ops, pk, amount=f"{(paid - paid // 2) / 100:.2f}", reason="requested_by_customer")
    assert f"Subscription {session['subscription']} cancelled" in shown
    assert stripe_api.subscriptions[session["subscription"]]["status"] == "canceled"
    assert load(ops, pk).access_wanted is False
