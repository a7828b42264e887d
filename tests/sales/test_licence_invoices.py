"""Paying a pilot or a lapsed licence BY INVOICE on its licence page: one invoice made and sent at Stripe for the
licence (its customer reused), the licence turned into an invoice licence with its key and platforms, access that
never flaps for a pilot, bad input that makes nothing, and `invoice.paid` flowing through as for any invoice."""

from datetime import timedelta

import pytest
from flask import render_template

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.licensing import access, keys, platforms, reconciler
from paygate.ops import worker
from paygate.sales import licence_invoicing
from tests.helpers.apps import make_app
from tests.helpers.licences import buy, completed_pilot, licence_of
from tests.helpers.webhooks import send

DAYS = 30
ANSWERS = {"billing_email": "finance@school.example", "organisation": "Springfield Elementary", "po_number": "PO-7"}


def _app(database_url, **settings):
    return make_app(database_url, **{"pilot_days": 30, "invoice_days_until_due": DAYS, **settings})


@pytest.fixture
def app_(database_url):
    app = _app(database_url)
    yield app
    with app.app_context():
        db.engine.dispose()


def _reg(app, pk: int) -> Registration:
    with app.app_context():
        reg = db.session.get(Registration, pk)
        _ = reg.timeline
        db.session.expunge_all()
        return reg


def _form_id(app, pk: int) -> str:
    with app.test_request_context():
        return licence_invoicing.new_form_id(db.session.get(Licence, licence_of(app, pk).id))


def _ask(client, key: str, form_id: str, **answers):
    data = {**ANSWERS, "form_id": form_id, **answers}
    return client.post(f"/licence/{key}/invoice", data={k: v for k, v in data.items() if v is not None})


def _made(stripe_api) -> tuple[int, int, int]:
    return len(stripe_api.customers), len(stripe_api.invoices), len(stripe_api.sent_invoices)


def _writes(stripe_api) -> list[str]:
    """The Stripe operations that made or changed something (reads of Prices are no such thing)."""
    return [op for op, _ in stripe_api.calls if op not in ("price", "price_retrieve")]


def test_a_pilot_paid_by_invoice_becomes_an_invoice_licence_with_its_key_and_platforms(
    app_, stripe_api, ltiaas_api, mocked
):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api)
    pilot = licence_of(app_, pk)
    answer = _ask(client, key, _form_id(app_, pk))
    assert answer.status_code == 303, answer.text
    assert "/licence/m/" in answer.location and answer.location.endswith("?notice=invoice")
    assert key not in answer.location

    assert _made(stripe_api) == (1, 1, 1)
    customer = next(iter(stripe_api.customers.values()))
    assert (customer["email"], customer["name"]) == (ANSWERS["billing_email"], ANSWERS["organisation"])
    invoice = next(iter(stripe_api.invoices.values()))
    assert invoice["customer"] == customer["id"] and invoice["collection_method"] == "send_invoice"
    assert invoice["custom_fields"] == [{"name": "PO number", "value": "PO-7"}]
    with app_.app_context():
        origin = db.session.get(Registration, pk)
        assert invoice["metadata"]["registration_pk"] == str(origin.id)
        assert invoice["metadata"]["registration_id"] == origin.registration_id
    assert invoice["metadata"]["licence"] == str(pilot.id)
    assert stripe_api.sent_invoices == [invoice["id"]]

    paid = licence_of(app_, pk)
    assert (paid.kind, paid.status, paid.invoice_id, paid.invoice_number) == (
        "invoice",
        "open",
        invoice["id"],
        invoice["number"],
    )
    assert paid.key_hash == pilot.key_hash and paid.pilot_ends_at == pilot.pilot_ends_at
    assert [p.id for p in paid.platforms] == [pk] and paid.payment_pending_until is None
    assert paid.customer_id == customer["id"] and paid.hosted_invoice_url and paid.amount_due == 4900
    assert abs(paid.due_at - (utcnow() + timedelta(days=DAYS))) < timedelta(minutes=5)
    reg = _reg(app_, pk)
    assert reg.state == "completed" and reg.access_wanted is True
    assert any("Pay by invoice requested on the licence page" in e.message for e in reg.timeline)
    assert any(e.message.startswith(f"Invoice {invoice['number']}") for e in reg.timeline)

    # The licence page says where the invoice went; it offers nothing more to pay.
    with app_.test_request_context("/?notice=invoice"):
        page = render_template("_licence_pay.html", licence=db.session.get(Licence, paid.id), base=f"/licence/{key}")
    assert "was sent to finance@school.example" in page and invoice["number"] in page
    assert 'id="licence-pay"' not in page

    # Past the pilot's end the invoice holds the access: LTIaaS is never told to deactivate.
    with app_.app_context():
        reconciler.sync_pending(now=pilot.pilot_ends_at + timedelta(days=1))
    assert ltiaas_api.calls_for(platform_id) == []
    # No licence key in anything sent to Stripe.
    sent = " ".join(f"{c.request.url} {c.request.body or ''}" for c in mocked.calls if "stripe" in c.request.url)
    assert keys.normal(key) not in sent.upper() and key not in sent and key.replace("-", "") not in sent


def test_the_pilots_pay_form_offers_the_invoice_beside_the_card(app_, stripe_api, ltiaas_api):
    pk, _, _ = completed_pilot(app_, ltiaas_api)
    with app_.test_request_context():
        page = render_template("_licence_pay.html", licence=db.session.get(Licence, licence_of(app_, pk).id), base="/b")
    assert 'id="licence-pay-card"' in page and 'formaction="/b/invoice"' in page
    assert 'name="billing_email"' in page and 'name="form_id"' in page and 'name="seats"' in page


def test_a_lapsed_licence_paid_by_invoice_is_active_again_on_its_customer(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, _ = buy(client, stripe_api, ltiaas_api)
    first = licence_of(app_, pk)
    with app_.app_context():
        reg = db.session.get(Registration, pk)
        platform_id, key = reg.platform_id, keys.shown(platforms.key_of(reg))
    refund = stripe_api.refund_in_dashboard(first.payments[0].payment_intent_id)
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]

    answer = _ask(client, key, _form_id(app_, pk))
    assert answer.status_code == 303, answer.text
    assert len(stripe_api.customers) == 1  # the licence's own customer, no new one
    invoice = next(iter(stripe_api.invoices.values()))
    assert invoice["customer"] == first.customer_id and stripe_api.sent_invoices == [invoice["id"]]
    again = licence_of(app_, pk)
    assert again.kind == "invoice" and again.status == "open" and again.key_hash == first.key_hash
    assert again.customer_id == first.customer_id
    with app_.app_context():
        reconciler.sync_pending()
        assert access.current_payment(db.session.get(Licence, again.id)) is None  # the refunded one is history
    assert _reg(app_, pk).access_wanted is True
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]


def test_a_double_submit_makes_one_invoice_and_invoice_paid_then_marks_it_paid(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api)
    form_id = _form_id(app_, pk)
    for _ in range(2):
        answer = _ask(client, key, form_id)
        assert answer.status_code == 303 and answer.location.endswith("?notice=invoice")
    # A reloaded page's form, once the invoice is sent: nothing to pay, nothing made.
    assert _ask(client, key, _form_id(app_, pk)).status_code == 409
    assert _made(stripe_api) == (1, 1, 1)
    assert len(stripe_api.invoice_items) == 1

    lic = licence_of(app_, pk)
    paid = stripe_api.pay_invoice(lic.invoice_id)
    assert send(client, stripe_api, "invoice.paid", paid).startswith("invoice paid")
    lic = licence_of(app_, pk)
    assert lic.status == "paid" and lic.first_paid_at is not None and len(lic.payments) == 1
    with app_.app_context():
        reconciler.sync_pending(now=lic.pilot_ends_at + timedelta(days=400))
    assert _reg(app_, pk).access_wanted is True and ltiaas_api.calls_for(platform_id) == []


def test_a_failure_halfway_is_resumed_by_the_worker_once_while_the_pilot_holds(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api, ends_in=timedelta(minutes=5))
    stripe_api.fail_next["invoice_create"] = [500]
    answer = _ask(client, key, _form_id(app_, pk))
    assert answer.status_code == 503 and "nothing is made twice" in answer.text
    held = licence_of(app_, pk)
    assert held.kind == "invoice" and held.invoice_sent_at is None and held.payment_pending_until is not None
    assert _made(stripe_api)[0] == 1 and stripe_api.sent_invoices == []
    # The card is not offered beside an invoice being made.
    assert client.post(f"/licence/{key}/pay").status_code == 409
    # The pilot's end passes while the invoice is being made: the hold keeps the platform active.
    with app_.app_context():
        reconciler.sync_pending(now=held.pilot_ends_at + timedelta(minutes=1))
    assert ltiaas_api.calls_for(platform_id) == []
    with app_.app_context():
        worker.run_once()
    assert _made(stripe_api) == (1, 1, 1)
    lic = licence_of(app_, pk)
    assert lic.status == "open" and lic.invoice_sent_at is not None and lic.payment_pending_until is None
    with app_.app_context():
        reconciler.sync_pending(now=held.pilot_ends_at + timedelta(days=1))
    assert ltiaas_api.calls_for(platform_id) == []


def test_on_payment_a_pilot_keeps_its_access_until_its_end_then_waits_for_the_payment(
    database_url, stripe_api, ltiaas_api
):
    app = _app(database_url, invoice_access="on_payment")
    client = app.test_client()
    pk, platform_id, key = completed_pilot(app, ltiaas_api)
    assert _ask(client, key, _form_id(app, pk)).status_code == 303
    lic = licence_of(app, pk)
    assert lic.kind == "invoice" and _reg(app, pk).access_wanted is True  # the pilot runs on
    with app.app_context():
        reconciler.sync_pending(now=lic.pilot_ends_at + timedelta(minutes=1))
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]  # unpaid past the pilot's end
    send(client, stripe_api, "invoice.paid", stripe_api.pay_invoice(lic.invoice_id))
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]
    with app.app_context():
        db.engine.dispose()


BAD = {
    "missing e-mail": {"billing_email": ""},
    "missing organisation": {"organisation": " "},
    "a web address in the organisation": {"organisation": "Pay at https://evil.example"},
    "markup in the PO number": {"po_number": "<b>1</b>"},
    "an offer not on sale": {"offer": "price_elsewhere"},
    "a forged form id": {"form_id": "forged"},
    "no form id": {"form_id": ""},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_sentence_and_makes_nothing(app_, stripe_api, ltiaas_api, case):
    client = app_.test_client()
    pk, _, key = completed_pilot(app_, ltiaas_api)
    answers = dict(BAD[case])
    answer = _ask(client, key, answers.pop("form_id", None) if "form_id" in answers else _form_id(app_, pk), **answers)
    assert answer.status_code == 400, answer.text
    assert _made(stripe_api) == (0, 0, 0) and _writes(stripe_api) == []
    lic = licence_of(app_, pk)
    assert lic.kind == "pilot" and lic.billing_email is None and lic.payment_pending_until is None


def test_another_licences_form_id_and_a_licence_that_stands_are_refused(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    bought, _ = buy(client, stripe_api, ltiaas_api)
    first, _, key = completed_pilot(app_, ltiaas_api)
    with app_.app_context():
        bought_key = keys.shown(platforms.key_of(db.session.get(Registration, bought)))
    made = _made(stripe_api)
    assert _ask(client, key, _form_id(app_, bought)).status_code == 400
    assert _ask(client, bought_key, _form_id(app_, bought)).status_code == 409  # paid and active
    assert _made(stripe_api) == made
    assert licence_of(app_, first).kind == "pilot" and licence_of(app_, bought).kind == "payment"


def test_without_a_payment_term_the_invoice_is_not_offered(database_url, stripe_api, ltiaas_api):
    app = _app(database_url, invoice_days_until_due=0)
    pk, _, key = completed_pilot(app, ltiaas_api)
    with app.test_request_context():
        licence = db.session.get(Licence, licence_of(app, pk).id)
        form_id = licence_invoicing.new_form_id(licence)
        assert 'formaction="/b/invoice"' not in render_template("_licence_pay.html", licence=licence, base="/b")
    assert _ask(app.test_client(), key, form_id).status_code == 400 and _writes(stripe_api) == []
    with app.app_context():
        db.engine.dispose()
