"""Operator statuses never contradict the money: every badge and box of the list and the detail page says what
the licence's payments and the access decision say (refunded, dispute lost, cancelled, paid by invoice)."""

import csv
import html
import io
import re
from datetime import datetime

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.licences import buy, load
from tests.helpers.operators import add_operator, form_id, post, seed, sign_in
from tests.helpers.webhooks import send


def text_of(page_html: str) -> str:
    """What a reader sees of some html: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


def row(page: str, pk: int) -> tuple[str, list[str]]:
    """Registration `pk`'s row in the list: its class and its cells as text."""
    found = next(m for m in re.finditer(r"<tr class=\"([^\"]*)\">(.*?)</tr>", page, re.S) if f">{pk}</a>" in m.group(2))
    return found.group(1), [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", found.group(2), re.S)]


def dd(page: str, element_id: str) -> str:
    """The text of the detail page's element `element_id`."""
    return text_of(re.search(r'id="' + element_id + r'"[^>]*>(.*?)</dd>', page, re.S).group(1))


STATE, LICENCE, AMOUNT = 1, 10, 5


def test_a_lost_dispute_reads_dispute_lost_and_needs_attention(ops, stripe_api, ltiaas_api):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session["payment_intent"])
    send(ops, stripe_api, "charge.dispute.created", dispute)
    send(ops, stripe_api, "charge.dispute.closed", stripe_api.close_dispute(dispute["id"], "lost"))
    page = ops.get("/operator/").text
    css, cells = row(page, pk)
    assert "needs-attention" in css
    assert "dispute lost" in cells[STATE] and "dispute lost" in cells[LICENCE]
    assert "state-completed" not in page  # not the green "completed" of a registration in good standing
    detail = ops.get(f"/operator/registrations/{pk}").text
    assert "dispute lost" in dd(detail, "licence-status") and "dispute lost" in dd(detail, "state-standing")


def test_a_refunded_row_reads_refunded_with_the_amount(ops, stripe_api, ltiaas_api):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    send(ops, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    _, cells = row(ops.get("/operator/").text, pk)
    assert "refunded 49.00 USD" in cells[LICENCE] and "succeeded" not in cells[LICENCE]
    assert "refunded" in cells[AMOUNT]
    body = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert body["licence"]["standing"] == {"label": "refunded 49.00 USD", "active": False}
    exported = list(csv.DictReader(io.StringIO(ops.get("/operator/registrations.csv").get_data(as_text=True))))
    assert exported[0]["standing"] == "refunded 49.00 USD"


def test_a_partial_refund_reads_paid_with_the_part_refunded(ops, stripe_api, ltiaas_api):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"], amount=1000)
    send(ops, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    _, cells = row(ops.get("/operator/").text, pk)
    assert "paid" in cells[LICENCE] and "10.00 USD refunded" in cells[LICENCE]


@pytest.mark.parametrize(
    ("status", "event", "reads"),
    [
        ("canceled", "customer.subscription.deleted", "cancelled (ended "),
        ("unpaid", "customer.subscription.updated", "unpaid"),
    ],
)
def test_a_lapsed_subscription_is_not_shown_valid_until_its_period_end(
    ops, stripe_api, ltiaas_api, yearly, status, event, reads
):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    send(ops, stripe_api, event, stripe_api.set_subscription_status(session["subscription"], status))
    _, cells = row(ops.get("/operator/").text, pk)
    assert reads in cells[LICENCE] and "until" not in cells[LICENCE]
    detail = ops.get(f"/operator/registrations/{pk}").text
    assert reads in dd(detail, "licence-status") and "until" not in dd(detail, "licence-status")


def test_an_active_subscription_reads_until_its_period_end(ops, stripe_api, ltiaas_api, yearly):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    end = load(ops, pk).licence.period_end
    _, cells = row(ops.get("/operator/").text, pk)
    assert f"active until {end:%Y-%m-%d}" in cells[LICENCE]


@pytest.fixture
def invoicing(database_url, stripe_api, ltiaas_api):
    """A client of an app that offers pay by invoice, with an operator signed in."""
    app = make_app(database_url, invoice_days_until_due=30)
    add_operator(app)
    client = app.test_client()
    sign_in(client)
    yield client
    with app.app_context():
        db.engine.dispose()


def test_a_paid_invoice_shows_its_paid_date_and_amount(invoicing, stripe_api, ltiaas_api):
    _, token, page = open_frame(invoicing, ltiaas_api)
    answers = {"billing_email": "finance@school.example", "organisation": "Springfield Elementary"}
    data = {**answers, "form_id": form_id(page.text, f"/flow/{token}/invoice")}
    assert invoicing.post(f"/flow/{token}/invoice", data=data).status_code == 303
    pk = only_pk(invoicing)
    send(invoicing, stripe_api, "invoice.paid", stripe_api.pay_invoice(load(invoicing, pk).licence.invoice_id))
    licence = load(invoicing, pk).licence
    paid_at = licence.payments[0].paid_at
    detail = invoicing.get(f"/operator/registrations/{pk}").text
    assert dd(detail, "paid") == f"49.00 USD on {paid_at:%Y-%m-%d %H:%M:%S} UTC"
    assert f"invoice paid {paid_at:%Y-%m-%d}" in dd(detail, "licence-status")
    _, cells = row(invoicing.get("/operator/").text, pk)
    assert f"invoice paid {paid_at:%Y-%m-%d}" in cells[LICENCE]


def only_pk(client) -> int:
    with client.application.app_context():
        return db.session.scalars(select(Registration.id)).one()


def test_right_after_an_operator_refund_the_licence_reads_refunded(ops, stripe_api, ltiaas_api, yearly):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    assert post(ops, f"/operator/registrations/{pk}/refund").status_code == 303
    detail = ops.get(f"/operator/registrations/{pk}").text
    status = dd(detail, "licence-status")
    assert status.startswith("refunded 49.00 USD") and "active" not in status
    assert "Stripe status" not in text_of(detail)


def test_the_needs_attention_box_follows_the_filters(app, ops):
    canvas = seed(app, state="needs_attention", attention="completion_refused", created_at=datetime(2026, 1, 1))[0]
    moodle = seed(
        app,
        state="needs_attention",
        attention="completion_expired",
        lms_family="moodle",
        created_at=datetime(2026, 1, 2),
    )[0]
    page = ops.get("/operator/", query_string={"family": "moodle"}).text
    box = page.split('id="attention-section"')[1].split("All registrations")[0]
    assert f"/operator/registrations/{moodle}" in box and f"/operator/registrations/{canvas}" not in box
    assert "Needs attention (1)" in box
    page = ops.get("/operator/", query_string={"family": "sakai"}).text
    assert 'id="attention-section"' not in page


def test_the_dispute_deadline_is_shown_whole_in_the_detail(ops, stripe_api, ltiaas_api):
    pk, session = buy(ops, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session["payment_intent"])
    send(ops, stripe_api, "charge.dispute.created", dispute)
    due = load(ops, pk).licence.payments[0].dispute_due_by
    detail = ops.get(f"/operator/registrations/{pk}").text
    # In the licence's facts (which wrap), not only in the payments table, which scrolls sideways.
    assert f"evidence due {due:%Y-%m-%d %H:%M:%S} UTC" in dd(detail, "licence-status")
    _, cells = row(ops.get("/operator/").text, pk)
    assert f"evidence due {due:%Y-%m-%d}" in cells[LICENCE]
