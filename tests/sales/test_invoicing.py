"""Pay by invoice (paygate/sales/invoicing.py): the admin's form in the frame, what is
made at Stripe (once, whatever is clicked twice or fails halfway), completion at LTIaaS, access that
follows the invoice, hostile input, a card payment and an invoice never both, and what operators see."""

import csv
import html
import io
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from tests.fakes import CLOSE_HTML
from tests.helpers.flow import open_frame, status
from tests.helpers.operators import add_operator, form_id, sign_in
from tests.helpers.webhooks import deliver

ANSWERS = {
    "billing_email": "finance@school.example",
    "organisation": "Springfield Elementary",
    "po_number": "PO-2024-117",
}
DAYS = 30
GRACE = 14  # LICENCE_GRACE_DAYS' default
INVOICE_SENTENCE = "An invoice due in 30 days is e-mailed to your finance office; the tool is registered now."
RETRY_SENTENCE = (
    "We could not reach the payment service to make your invoice. Send the form again in a moment: "
    "nothing is made twice."
)
EXPIRED_FORM = "This form has expired. Reload the page and send it again."


# Helpers


def text_of(page_html: str) -> str:
    """What a reader sees of some html: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


def invoice_form(page_text: str, token: str) -> str | None:
    """The invoice form of a frame page, or None."""
    found = re.search(
        r'<form method="post" action="/flow/' + re.escape(token) + r'/invoice".*?</form>', page_text, re.S
    )
    return found.group(0) if found else None


def invoice_form_id(page_text: str, token: str) -> str:
    return form_id(page_text, f"/flow/{token}/invoice")


def invoice_error(page_text: str) -> str | None:
    found = re.search(r'<p class="error" id="invoice-error"[^>]*>(.*?)</p>', page_text, re.S)
    return text_of(found.group(1)) if found else None


def one_sentence(sentence: str | None) -> bool:
    return bool(sentence) and sentence.endswith(".") and ". " not in sentence


def ask_invoice(client, token, page_text, **answers):
    """The admin fills in the invoice form of `page_text` and sends it."""
    data = {**ANSWERS, "form_id": invoice_form_id(page_text, token), **answers}
    data = {k: v for k, v in data.items() if v is not None}
    return client.post(f"/flow/{token}/invoice", data=data)


def invoiced(client, ltiaas_api, **answers):
    """Open the frame and ask for an invoice. Returns (registration_id, token, answer)."""
    registration_id, token, page = open_frame(client, ltiaas_api)
    return registration_id, token, ask_invoice(client, token, page.text, **answers)


def registration(app, registration_id=None) -> Registration:
    with app.app_context():
        stmt = select(Registration)
        if registration_id is not None:
            stmt = stmt.where(Registration.registration_id == registration_id)
        reg = db.session.scalars(stmt).one()
        _ = reg.timeline, reg.checkout_sessions, reg.licence and reg.licence.payments  # loaded before the context ends
        return reg


def licence(app, registration_id=None) -> Licence | None:
    return registration(app, registration_id).licence


def ops(stripe_api, name) -> list[str]:
    """The idempotency keys of the calls to one Stripe operation, in order."""
    return [key for op, key in stripe_api.calls if op == name]


def made_at_stripe(stripe_api) -> tuple[int, int, int, int]:
    return (
        len(stripe_api.customers),
        len(stripe_api.invoices),
        len(stripe_api.invoice_items),
        len(stripe_api.subscriptions),
    )


def send(client, stripe_api, kind, obj):
    """A signed webhook event about `obj`, delivered as Stripe does; returns its outcome."""
    response = deliver(client, stripe_api, stripe_api.object_event(kind, obj))
    assert response.status_code == 200, response.text
    return response.get_json()["result"]


def near(moment, expected, slack=timedelta(minutes=2)) -> bool:
    return moment is not None and abs(moment - expected) <= slack


# 1. The offer


def test_without_a_payment_term_there_is_no_invoice_form_and_a_post_is_refused(client, stripe_api, ltiaas_api):
    _registration_id, token, page = open_frame(client, ltiaas_api)
    assert invoice_form(page.text, token) is None
    assert "invoice" not in text_of(page.text).lower()
    answer = client.post(f"/flow/{token}/invoice", data={**ANSWERS, "form_id": "whatever"})
    assert answer.status_code == 400
    assert "Paying by invoice is not offered for this tool." in text_of(answer.text)
    assert ops(stripe_api, "customer_create") == [] and made_at_stripe(stripe_api) == (0, 0, 0, 0)
    reg = registration(client.application)
    assert reg.state == "pending" and reg.licence is None
    assert status(client, token)["phase"] == "pay"


def test_with_a_payment_term_the_frame_offers_the_invoice_form(inv_client, stripe_api, ltiaas_api):
    _, token, page = open_frame(inv_client, ltiaas_api)
    assert INVOICE_SENTENCE in text_of(page.text)
    form = invoice_form(page.text, token)
    assert form is not None
    names = re.findall(r'name="([^"]+)"', form)
    # The offer and seats chosen above travel with it (the only offer here: once, one seat).
    assert sorted(names) == ["billing_email", "form_id", "offer", "organisation", "po_number", "seats"]
    assert re.search(r'<input type="hidden" name="form_id" value="[^"]{20,}">', form)
    assert "csrf_token" not in page.text
    assert "Set-Cookie" not in page.headers
    # The card stays offered beside it.
    assert f'href="/flow/{token}/pay"' in page.text and status(inv_client, token)["phase"] == "pay"


# 2. A valid request


def test_a_valid_request_makes_one_invoice_sends_it_and_registers_now(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, token, answer = invoiced(inv_client, ltiaas_api)
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/pre-approval?registrationId={registration_id}")
    assert "Set-Cookie" not in answer.headers
    reg = registration(inv_app)
    ref = {"registration_pk": str(reg.id), "registration_id": registration_id}

    # At Stripe: one customer, one invoice billed by e-mail, one item for the Price; finalised and sent.
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0)
    customer = next(iter(stripe_api.customers.values()))
    assert (customer["email"], customer["name"]) == ("finance@school.example", "Springfield Elementary")
    assert customer["metadata"] == ref
    assert customer["invoice_settings"]["custom_fields"] == [{"name": "PO number", "value": "PO-2024-117"}]
    invoice = next(iter(stripe_api.invoices.values()))
    assert invoice["customer"] == customer["id"] and invoice["collection_method"] == "send_invoice"
    assert invoice["_days_until_due"] == DAYS
    assert invoice["custom_fields"] == [{"name": "PO number", "value": "PO-2024-117"}]
    assert invoice["metadata"] == ref and invoice["parent"] is None
    assert invoice["status"] == "open" and invoice["amount_due"] == 4900
    assert abs(invoice["due_date"] - (time.time() + DAYS * 86400)) < 120
    item = next(iter(stripe_api.invoice_items.values()))
    assert (item["invoice"], item["customer"]) == (invoice["id"], customer["id"])
    assert item["pricing"]["price_details"]["price"] == "price_registration" and item["amount"] == 4900
    assert stripe_api.sent_invoices == [invoice["id"]]
    # Every call once, each with its own key derived from the registration.
    steps = ["customer_create", "invoice_create", "invoiceitem_create", "invoice_finalize", "invoice_send"]
    keys = [ops(stripe_api, step) for step in steps]
    assert all(len(k) == 1 for k in keys), keys
    keys = [k[0] for k in keys]
    assert len(set(keys)) == len(keys)
    assert all(key and registration_id in key and str(reg.id) in key for key in keys), keys
    assert ops(stripe_api, "create") == []  # no Checkout Session

    # At LTIaaS: completed once, active now.
    assert ltiaas_api.complete_calls == [registration_id]
    assert ltiaas_api.complete_bodies == [{"autoActivate": True}]

    # In the frame: the pre-approval page, whose status runs the close html and names the billing e-mail.
    page = inv_client.get(answer.headers["Location"])
    assert page.status_code == 200 and invoice_form(page.text, token) is None
    frame = status(inv_client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
    assert "finance@school.example" in frame["message"] and invoice["number"] in frame["message"]
    assert "Set-Cookie" not in page.headers

    reg = registration(inv_app)
    assert reg.state == "completed" and reg.platform_id and reg.platform_active is True
    lic = reg.licence
    assert (lic.kind, lic.status, lic.invoice_id, lic.invoice_number) == (
        "invoice",
        "open",
        invoice["id"],
        invoice["number"],
    )
    assert (lic.billing_email, lic.organisation, lic.po_number) == tuple(ANSWERS.values())
    assert near(lic.due_at, utcnow() + timedelta(days=DAYS))
    assert lic.hosted_invoice_url == invoice["hosted_invoice_url"] and lic.hosted_invoice_url.startswith("https://")
    assert lic.amount_due == 4900 and lic.customer_id == customer["id"]


def test_the_po_number_is_optional(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, _, answer = invoiced(inv_client, ltiaas_api, po_number="")
    assert answer.status_code == 303
    customer = next(iter(stripe_api.customers.values()))
    invoice = next(iter(stripe_api.invoices.values()))
    assert not customer["invoice_settings"]["custom_fields"] and not invoice["custom_fields"]
    assert ltiaas_api.complete_calls == [registration_id]
    assert licence(inv_app).po_number is None


# 3. Access on payment


def test_access_on_payment_waits_for_the_invoice_to_be_paid(make, database_url, stripe_api, ltiaas_api):
    app = make(database_url, invoice_access="on_payment")
    client = app.test_client()
    registration_id, token, answer = invoiced(client, ltiaas_api)
    assert answer.status_code == 303 and status(client, token)["phase"] == "done"
    assert ltiaas_api.complete_calls == [registration_id]
    assert ltiaas_api.complete_bodies == [{"autoActivate": False}]
    reg = registration(app)
    assert reg.state == "completed" and reg.platform_active is False and reg.access_wanted is False
    assert ltiaas_api.platform_calls == []

    paid = stripe_api.pay_invoice(reg.licence.invoice_id)
    assert send(client, stripe_api, "invoice.paid", paid).startswith("invoice paid")
    reg = registration(app)
    assert ltiaas_api.calls_for(reg.platform_id) == ["activate"]
    assert reg.platform_active is True and reg.licence.status == "paid"
    # Delivered again: no second call.
    send(client, stripe_api, "invoice.paid", paid)
    assert ltiaas_api.calls_for(reg.platform_id) == ["activate"]


# 4. Overdue, paid late, void, uncollectible


def test_unpaid_past_the_grace_the_worker_deactivates_and_a_late_payment_reactivates(
    inv_app, inv_client, stripe_api, ltiaas_api
):
    from paygate.ops import worker

    invoiced(inv_client, ltiaas_api)
    reg = registration(inv_app)
    due, platform_id = reg.licence.due_at, reg.platform_id
    assert reg.platform_active is True
    with inv_app.app_context():  # no invoice.overdue event at all: the clock alone decides
        worker.run_once(now=due + timedelta(days=GRACE - 1))
    assert ltiaas_api.calls_for(platform_id) == [] and registration(inv_app).platform_active is True
    with inv_app.app_context():
        worker.run_once(now=due + timedelta(days=GRACE + 1))
        worker.run_once(now=due + timedelta(days=GRACE + 2))  # a later pass changes nothing more
    reg = registration(inv_app)
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]
    assert reg.platform_active is False and reg.access_wanted is False
    assert any("Access should be inactive" in e.message for e in reg.timeline)

    paid = stripe_api.pay_invoice(reg.licence.invoice_id)
    send(inv_client, stripe_api, "invoice.paid", paid)
    reg = registration(inv_app)
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]
    assert reg.platform_active is True and reg.licence.status == "paid"
    with inv_app.app_context():  # paid: the due date no longer matters
        worker.run_once(now=due + timedelta(days=GRACE + 30))
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]


@pytest.mark.parametrize("event", ["invoice.voided", "invoice.marked_uncollectible"])
def test_a_void_or_uncollectible_invoice_ends_access(inv_app, inv_client, stripe_api, ltiaas_api, event):
    invoiced(inv_client, ltiaas_api)
    reg = registration(inv_app)
    invoice_id = reg.licence.invoice_id
    changed = (
        stripe_api.void_invoice(invoice_id) if event == "invoice.voided" else stripe_api.mark_uncollectible(invoice_id)
    )
    send(inv_client, stripe_api, event, changed)
    reg = registration(inv_app)
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]
    assert reg.platform_active is False and reg.licence.status == changed["status"]


# 5. Twice, reloaded, failing halfway


def test_the_same_form_twice_and_a_reloaded_form_make_one_invoice(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, token, first = open_frame(inv_client, ltiaas_api)
    reloaded = inv_client.get(f"/pre-approval?registrationId={registration_id}")  # a second tab, or a reload
    assert invoice_form_id(first.text, token) != invoice_form_id(reloaded.text, token)
    answers = [
        ask_invoice(inv_client, token, first.text),
        ask_invoice(inv_client, token, first.text),
        ask_invoice(inv_client, token, reloaded.text),
    ]
    assert [a.status_code for a in answers] == [303, 303, 303]
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0)
    assert stripe_api.sent_invoices == [next(iter(stripe_api.invoices))]
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(inv_client, token)["phase"] == "done"


@pytest.mark.parametrize("resume", ["send again", "worker"])
@pytest.mark.parametrize("step", ["invoice_create", "invoice_finalize", "invoice_send"])
def test_a_stripe_failure_halfway_is_said_once_and_resumes_without_duplicates(
    inv_app, inv_client, stripe_api, ltiaas_api, step, resume
):
    from paygate.ops import worker

    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    stripe_api.fail_next[step] = [500]
    answer = ask_invoice(inv_client, token, page.text)
    assert answer.status_code == 503
    assert invoice_error(answer.text) == RETRY_SENTENCE
    assert len(stripe_api.customers) == 1 and ltiaas_api.complete_calls == []
    assert invoice_form(answer.text, token) is not None  # the frame offers the form again
    frame = status(inv_client, token)
    assert frame["phase"] == "invoice" and "Send the invoice form again" in frame["message"]

    if resume == "send again":
        again = ask_invoice(inv_client, token, answer.text)
        assert again.status_code == 303, invoice_error(again.text)
    else:
        with inv_app.app_context():
            worker.run_once()
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0)
    assert len(stripe_api.sent_invoices) == 1
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(inv_client, token)["phase"] == "done"
    lic = licence(inv_app)
    assert lic.status == "open" and lic.invoice_sent_at is not None and lic.invoicing_error is None


def test_stripe_busy_halfway_resumes_from_the_step_that_failed(inv_app, inv_client, stripe_api, ltiaas_api):
    """A 429 is not kept under its idempotency key: the same keys go on where the first try stopped."""
    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    stripe_api.fail_next["invoice_finalize"] = [429]
    answer = ask_invoice(inv_client, token, page.text)
    assert answer.status_code == 503 and invoice_error(answer.text) == RETRY_SENTENCE
    assert ask_invoice(inv_client, token, answer.text).status_code == 303
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0)
    assert len(ops(stripe_api, "customer_create")) == 1 and len(ops(stripe_api, "invoice_create")) == 1
    assert ltiaas_api.complete_calls == [registration_id]


# 6. Hostile input

LONG = "x" * 10240
HOSTILE = {
    "organisation of 10 kB": ({"organisation": LONG}, "organisation", "too long"),
    "control character": ({"organisation": "Spring\x07field"}, "organisation", "control characters"),
    "bidi override": ({"organisation": "Springfield \u202eEvil"}, "organisation", "control characters"),
    "markup": ({"organisation": "<script>alert(1)</script>"}, "organisation", "< and >"),
    "e-mail with a header": ({"billing_email": "a@b.example\nBcc: x@y"}, "billing_email", "e-mail"),
    "invalid e-mail": ({"billing_email": "not an address"}, "billing_email", "e-mail"),
    "e-mail with markup": ({"billing_email": '"><img src=x onerror=alert(1)>@b.example'}, "billing_email", "e-mail"),
    "missing e-mail": ({"billing_email": ""}, "billing_email", "e-mail"),
    "missing organisation": ({"organisation": "   "}, "organisation", "organisation"),
    "PO number of 141 characters": ({"po_number": "P" * 141}, "po_number", "at most 140 characters"),
}


def nothing_made(app, stripe_api, ltiaas_api, token, client):
    assert ops(stripe_api, "customer_create") == [] and made_at_stripe(stripe_api) == (0, 0, 0, 0)
    assert ltiaas_api.complete_calls == []
    reg = registration(app)
    assert reg.state == "pending" and reg.licence is None
    assert status(client, token)["phase"] == "pay"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_refused_with_one_sentence_and_makes_nothing(
    inv_app, inv_client, stripe_api, ltiaas_api, caplog, case
):
    answers, field, words = HOSTILE[case]
    _, token, page = open_frame(inv_client, ltiaas_api)
    with caplog.at_level(logging.DEBUG):
        answer = ask_invoice(inv_client, token, page.text, **answers)
    assert answer.status_code == 400
    sentence = invoice_error(answer.text)
    assert one_sentence(sentence) and words in sentence, sentence
    assert re.search(r'id="' + field + r'"[^>]*aria-invalid="true"', answer.text, re.S), field
    for value in answers.values():
        if value.strip():
            assert value not in answer.text or html.escape(value) == value, "shown unescaped"
    assert LONG not in answer.text
    assert not any(LONG in r.getMessage() for r in caplog.records)
    assert invoice_form(answer.text, token) is not None  # the admin can correct it
    nothing_made(inv_app, stripe_api, ltiaas_api, token, inv_client)


def test_markup_is_shown_back_as_text(inv_client, stripe_api, ltiaas_api):
    _, token, page = open_frame(inv_client, ltiaas_api)
    answer = ask_invoice(inv_client, token, page.text, organisation="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text


def test_a_form_without_its_id_or_with_a_forged_one_is_refused(inv_app, inv_client, stripe_api, ltiaas_api):
    _, token, page = open_frame(inv_client, ltiaas_api)
    genuine = invoice_form_id(page.text, token)
    forged = [
        None,
        "",
        "forged",
        genuine[:-3] + ("abc" if genuine[-3:] != "abc" else "abd"),
        genuine.split(".")[0] + ".AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]
    for value in forged:
        data = {**ANSWERS, **({"form_id": value} if value is not None else {})}
        answer = inv_client.post(f"/flow/{token}/invoice", data=data)
        assert answer.status_code == 400, value
        assert invoice_error(answer.text) == EXPIRED_FORM, value
    nothing_made(inv_app, stripe_api, ltiaas_api, token, inv_client)


def test_another_registrations_form_id_is_refused(inv_app, inv_client, stripe_api, ltiaas_api):
    _, other_token, other_page = open_frame(inv_client, ltiaas_api)
    _registration_id, token, _ = open_frame(inv_client, ltiaas_api)
    answer = inv_client.post(
        f"/flow/{token}/invoice", data={**ANSWERS, "form_id": invoice_form_id(other_page.text, other_token)}
    )
    assert answer.status_code == 400 and invoice_error(answer.text) == EXPIRED_FORM
    assert ops(stripe_api, "customer_create") == [] and made_at_stripe(stripe_api) == (0, 0, 0, 0)
    with inv_app.app_context():
        assert db.session.scalars(select(Licence)).all() == []
    assert status(inv_client, token)["phase"] == "pay" and status(inv_client, other_token)["phase"] == "pay"


def test_an_expired_form_id_is_refused(inv_app, inv_client, stripe_api, ltiaas_api, monkeypatch):
    from itsdangerous.timed import TimestampSigner

    _, token, page = open_frame(inv_client, ltiaas_api)
    later = int(time.time()) + 2 * 3600  # the LMS token's hour is long over
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    answer = ask_invoice(inv_client, token, page.text)
    monkeypatch.undo()
    assert answer.status_code == 400 and invoice_error(answer.text) == EXPIRED_FORM
    assert ops(stripe_api, "customer_create") == [] and made_at_stripe(stripe_api) == (0, 0, 0, 0)
    assert licence(inv_app) is None


# 7. A card payment and an invoice, never both


def test_after_an_invoice_request_the_card_is_refused(inv_app, inv_client, stripe_api, ltiaas_api):
    _, token, answer = invoiced(inv_client, ltiaas_api)
    assert answer.status_code == 303
    popup = inv_client.get(f"/flow/{token}/pay")
    assert popup.status_code == 409
    assert "An invoice was requested for this registration, so no card payment is taken." in text_of(popup.text)
    assert ops(stripe_api, "create") == [] and stripe_api.sessions == {}


def test_while_the_invoice_is_being_made_the_card_is_refused(inv_app, inv_client, stripe_api, ltiaas_api):
    _, token, page = open_frame(inv_client, ltiaas_api)
    stripe_api.fail_next["invoice_create"] = [503]
    assert ask_invoice(inv_client, token, page.text).status_code == 503
    popup = inv_client.get(f"/flow/{token}/pay")
    assert popup.status_code == 409
    assert "An invoice was requested for this registration, so no card payment is taken." in text_of(popup.text)
    assert ops(stripe_api, "create") == [] and stripe_api.sessions == {}


def test_an_open_checkout_session_is_expired_when_the_invoice_is_requested(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    assert inv_client.get(f"/flow/{token}/pay").status_code == 303  # the admin opened Checkout, then changed mind
    session = stripe_api.only_session()
    answer = ask_invoice(inv_client, token, page.text)
    assert answer.status_code == 303
    assert len(ops(stripe_api, "session_expire")) == 1
    assert stripe_api.sessions[session["id"]]["status"] == "expired"
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0) and ltiaas_api.complete_calls == [registration_id]
    reg = registration(inv_app)
    assert [s.status for s in reg.checkout_sessions] == ["expired"]
    assert reg.licence.kind == "invoice" and reg.payment_intent_id is None


def test_a_card_payment_made_just_before_the_invoice_form_wins(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    inv_client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])  # paid in the popup; neither the return nor the webhook has arrived yet
    answer = ask_invoice(inv_client, token, page.text)
    assert answer.status_code == 400
    shown = text_of(answer.text)  # the admin learns that the card payment counts, and no invoice comes
    assert "A card payment was just made" in shown or "Payment received and the tool is registered" in shown
    assert "Invoice " not in shown
    # The only customer is the card payment's own (Checkout makes one for every payment): no invoice, no item.
    assert ops(stripe_api, "customer_create") == [] and made_at_stripe(stripe_api) == (1, 0, 0, 0)
    assert ltiaas_api.complete_calls == [registration_id]
    reg = registration(inv_app)
    assert reg.state == "completed" and reg.payment_intent_id
    assert reg.licence.kind == "payment" and reg.licence.billing_email is None
    assert status(inv_client, token)["phase"] == "done"


# 8. A recurring Price


def test_a_recurring_price_makes_a_subscription_billed_by_invoice(inv_app, inv_client, stripe_api, ltiaas_api):
    stripe_api.set_price(recurring="year")
    registration_id, token, page = open_frame(inv_client, ltiaas_api)
    assert "49.00 USD per year" in page.text
    answer = ask_invoice(inv_client, token, page.text)
    assert answer.status_code == 303
    assert made_at_stripe(stripe_api) == (1, 1, 0, 1)
    assert ops(stripe_api, "invoice_create") == [] and ops(stripe_api, "invoiceitem_create") == []
    sub = next(iter(stripe_api.subscriptions.values()))
    reg = registration(inv_app)
    assert sub["collection_method"] == "send_invoice" and sub["days_until_due"] == DAYS
    assert sub["metadata"] == {"registration_pk": str(reg.id), "registration_id": registration_id}
    invoice = stripe_api.invoices[sub["latest_invoice"]]
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert invoice["status"] == "open" and stripe_api.sent_invoices == [invoice["id"]]
    assert invoice["custom_fields"] == [{"name": "PO number", "value": "PO-2024-117"}]  # from the customer
    assert len(ops(stripe_api, "invoice_finalize")) == 1 and len(ops(stripe_api, "invoice_send")) == 1
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(inv_client, token)["phase"] == "done"
    lic = reg.licence
    assert (lic.kind, lic.subscription_id, lic.invoice_id, lic.status) == ("invoice", sub["id"], invoice["id"], "open")
    assert near(lic.due_at, utcnow() + timedelta(days=DAYS)) and reg.platform_active is True


# 9. Invoices of others


def test_an_invoice_event_of_no_registration_changes_nothing(inv_app, inv_client, stripe_api, ltiaas_api):
    registration_id, _, _ = invoiced(inv_client, ltiaas_api)
    reg = registration(inv_app)
    before = (reg.licence.status, reg.licence.updated_at, reg.platform_active, len(reg.timeline))
    calls = len(stripe_api.calls)
    others = [
        {"id": "in_other1", "object": "invoice", "status": "paid", "parent": None, "metadata": {"shop": "x"}},
        {
            "id": "in_other2",
            "object": "invoice",
            "status": "void",
            "parent": None,
            "metadata": {"registration_pk": str(reg.id), "registration_id": "someone-else"},
        },
        {
            "id": "in_other3",
            "object": "invoice",
            "status": "paid",
            "parent": None,
            "metadata": {"registration_pk": "999999", "registration_id": registration_id},
        },
    ]
    for kind, obj in zip(["invoice.paid", "invoice.voided", "invoice.paid"], others, strict=True):
        assert send(inv_client, stripe_api, kind, obj) == "foreign invoice"
    assert len(stripe_api.calls) == calls  # nobody at Stripe was asked
    reg = registration(inv_app)
    assert (reg.licence.status, reg.licence.updated_at, reg.platform_active, len(reg.timeline)) == before
    assert ltiaas_api.platform_calls == []


# 10. Operators


def test_operators_see_the_invoice_on_the_detail_page(inv_app, inv_client, stripe_api, ltiaas_api):
    invoiced(inv_client, ltiaas_api)
    reg = registration(inv_app)
    lic = reg.licence
    add_operator(inv_app)
    assert sign_in(inv_client).status_code == 303
    page = inv_client.get(f"/operator/registrations/{reg.id}")
    assert page.status_code == 200
    shown = text_of(page.text)
    for value in (
        "Springfield Elementary",
        "finance@school.example",
        "PO-2024-117",
        lic.invoice_number,
        lic.due_at.strftime("%Y-%m-%d"),
        "49.00 USD",
    ):
        assert value in shown, value
    assert re.search(r'id="licence-kind">invoice<', page.text)
    assert re.search(r'id="licence-status"><span[^>]*>invoice open, due', page.text)
    assert f'href="https://dashboard.stripe.com/test/invoices/{lic.invoice_id}"' in page.text
    assert f'href="{lic.hosted_invoice_url}"' in page.text
    assert lic.invoice_id.startswith("in_")


def test_operators_filter_export_and_read_invoices(inv_app, inv_client, stripe_api, ltiaas_api):
    from tests.helpers.operators import api_ids, paid_registration

    pks = {}
    for name in ("open", "overdue", "paid"):
        registration_id, _, answer = invoiced(
            inv_client, ltiaas_api, organisation=f"School {name}", billing_email=f"{name}@school.example"
        )
        assert answer.status_code == 303
        pks[name] = registration(inv_app, registration_id).id
    overdue = licence(inv_app, _rid(inv_app, pks["overdue"]))
    send(inv_client, stripe_api, "invoice.overdue", stripe_api.make_overdue(overdue.invoice_id, days=3))
    paid = licence(inv_app, _rid(inv_app, pks["paid"]))
    send(inv_client, stripe_api, "invoice.paid", stripe_api.pay_invoice(paid.invoice_id))
    card = paid_registration(inv_client, stripe_api, ltiaas_api)  # paid by card: in no invoice filter

    add_operator(inv_app)
    assert sign_in(inv_client).status_code == 303
    assert set(api_ids(inv_client, licence="invoice_open")) == {pks["open"], pks["overdue"]}
    assert api_ids(inv_client, licence="invoice_overdue") == [pks["overdue"]]
    assert api_ids(inv_client, licence="invoice_paid") == [pks["paid"]]
    assert card not in api_ids(inv_client, licence="invoice_open")

    export = inv_client.get("/operator/registrations.csv")
    assert export.status_code == 200
    rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(export.text))}
    row = rows[pks["open"]]
    lic = licence(inv_app, _rid(inv_app, pks["open"]))
    assert (row["organisation"], row["billing_email"], row["po_number"]) == (
        "School open",
        "open@school.example",
        "PO-2024-117",
    )
    assert (row["invoice_number"], row["invoice_status"], row["invoice_amount_due"]) == (
        lic.invoice_number,
        "open",
        "4900",
    )
    assert row["invoice_due_date"].startswith(lic.due_at.strftime("%Y-%m-%d"))
    assert row["hosted_invoice_url"] == lic.hosted_invoice_url and row["licence_kind"] == "invoice"
    assert rows[pks["paid"]]["invoice_status"] == "paid"
    assert rows[card]["invoice_number"] == "" and rows[card]["organisation"] == ""

    body = inv_client.get(f"/operator/api/registrations/{pks['open']}").get_json()
    assert body["licence"]["kind"] == "invoice" and body["licence"]["status"] == "open"
    assert body["licence"]["due_date"].startswith(lic.due_at.strftime("%Y-%m-%d"))
    assert body["licence"]["invoice"]["number"] == lic.invoice_number
    assert body["licence"]["invoice_id"] == lic.invoice_id
    assert body["licence"]["invoice"]["billing_email"] == "open@school.example"


def _rid(app, pk) -> str:
    with app.app_context():
        return db.session.get(Registration, pk).registration_id


# 11. Many submissions at once, on PostgreSQL


@pytest.mark.postgres
@pytest.mark.parametrize("forms", ["same form", "different forms"])
def test_eight_simultaneous_submissions_make_one_invoice(make, pg_url, stripe_api, ltiaas_api, forms):
    app = make(pg_url)
    client = app.test_client()
    registration_id, token, page = open_frame(client, ltiaas_api)
    pages = (
        [page.text] * 8
        if forms == "same form"
        else [client.get(f"/pre-approval?registrationId={registration_id}").text for _ in range(8)]
    )
    assert len({invoice_form_id(p, token) for p in pages}) == (1 if forms == "same form" else 8)
    stripe_api.probe = lambda op: time.sleep(0.02) if op.startswith(("customer", "invoice")) else None
    ltiaas_api.complete_delay = 0.1  # widen the windows in which a second caller could slip through
    barrier = threading.Barrier(8)

    def submit(page_text):
        own_client = app.test_client()  # each thread: its own client, app context and database session
        barrier.wait()
        return ask_invoice(own_client, token, page_text)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, pages))
    for answer in answers:
        assert answer.status_code == 303 or (answer.status_code < 500 and "being prepared" in answer.text), (
            answer.status_code,
            invoice_error(answer.text),
        )
    assert made_at_stripe(stripe_api) == (1, 1, 1, 0)
    assert len(ops(stripe_api, "customer_create")) == 1 and len(stripe_api.sent_invoices) == 1
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    # Operators read one request, one invoice sent and one completion in the timeline.
    timeline = [e.message for e in registration(app).timeline]
    assert len([m for m in timeline if m.startswith("Pay by invoice requested")]) == 1, timeline
    assert len([m for m in timeline if m.startswith("Invoice ") and "sent to" in m]) == 1, timeline
