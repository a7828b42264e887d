"""Paying a pilot or a lapsed licence on its licence page: card through Checkout, applied to that licence once,
its key and platforms kept, LTIaaS told once per real change, and a pilot paid while its end passes never flaps."""

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import LicencePayment, Registration, TimelineEntry
from paygate.licensing import keys, platforms, reconciler
from paygate.sales.reconcile import reconcile
from tests.fakes import Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.licences import buy, completed_pilot, licence_of
from tests.helpers.webhooks import send


def _app(database_url, **settings):
    return make_app(database_url, **settings)


@pytest.fixture
def app_(database_url):
    app = _app(database_url, pilot_days=30)
    yield app
    with app.app_context():
        db.engine.dispose()


def _pay_page(client, key: str, stripe_api, **form) -> dict:
    """The admin presses Pay on the licence page; returns the Checkout Session it was sent to."""
    before = set(stripe_api.sessions)
    answer = client.post(f"/licence/{key}/pay", data=form)
    assert answer.status_code == 303, answer.text
    new = [s for sid, s in stripe_api.sessions.items() if sid not in before]
    session = new[0] if new else next(s for s in stripe_api.sessions.values() if s["url"] == answer.location)
    assert answer.location == session["url"]
    return session


def _return(client, session: dict):
    url = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def test_a_pilot_paid_by_card_becomes_a_payment_with_its_key_and_platforms(app_, stripe_api, ltiaas_api, mocked):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api)
    pilot = licence_of(app_, pk)
    session = _pay_page(client, key, stripe_api)
    assert session["mode"] == "payment" and session["customer_creation"] == "always"
    assert session["metadata"]["licence"] == str(pilot.id)
    assert licence_of(app_, pk).payment_pending_until is not None  # the pilot holds while it is being paid
    stripe_api.pay(session["id"])
    back = _return(client, session)
    assert back.status_code == 303 and "/licence/m/" in back.location and back.location.endswith("?notice=paid")
    assert client.get(urlsplit(back.location).path).status_code in (200, 404)  # the page is the page helper's
    paid = licence_of(app_, pk)
    assert paid.kind == "payment" and paid.status == "succeeded"
    assert paid.key_hash == pilot.key_hash and paid.pilot_ends_at == pilot.pilot_ends_at
    assert [p.id for p in paid.platforms] == [pk] and paid.payment_pending_until is None
    assert paid.customer_id and paid.customer_id == stripe_api.sessions[session["id"]]["customer"]
    assert [p.payment_intent_id for p in paid.payments] == [session["payment_intent"]]
    with app_.app_context():
        reg = db.session.get(Registration, pk)
        assert reg.state == "completed" and reg.access_wanted is True
        assert any("Licence paid on its licence page" in e.message for e in reg.timeline)
    # Past the pilot's end the worker finds a paid licence: LTIaaS is never told to deactivate.
    with app_.app_context():
        reconciler.sync_pending(now=pilot.pilot_ends_at + timedelta(days=1))
    assert ltiaas_api.calls_for(platform_id) == []
    # No licence key in anything sent to Stripe (URLs, bodies, metadata).
    sent = " ".join(f"{c.request.url} {c.request.body or ''}" for c in mocked.calls if "stripe" in c.request.url)
    normal = keys.normal(key)
    assert normal not in sent.upper() and key not in sent and key.replace("-", "") not in sent


def test_a_refunded_licence_paid_again_is_active_again_on_the_same_customer(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, _ = buy(client, stripe_api, ltiaas_api)
    first = licence_of(app_, pk)
    with app_.app_context():
        reg = db.session.get(Registration, pk)
        platform_id, key = reg.platform_id, keys.shown(platforms.key_of(reg))
    refund = stripe_api.refund_in_dashboard(first.payments[0].payment_intent_id)
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]
    session = _pay_page(client, key, stripe_api)
    assert session["customer"] == first.customer_id and session["customer_creation"] is None
    stripe_api.pay(session["id"])
    for _ in range(2):  # the webhook twice and the return twice: one payment, one activate
        assert send(client, stripe_api, "checkout.session.completed", stripe_api.sessions[session["id"]]) in (
            "licence paid",
            "already paid",
        )
        assert _return(client, session).status_code == 303
    again = licence_of(app_, pk)
    assert again.kind == "payment" and again.customer_id == first.customer_id and again.key_hash == first.key_hash
    assert len(again.payments) == 2 and ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]
    assert len(stripe_api.customers) == 1
    with app_.app_context():
        entries = db.session.scalars(
            select(TimelineEntry).where(TimelineEntry.message.like("Licence paid on its licence page%"))
        ).all()
        assert len(entries) == 1
        assert db.session.get(Registration, pk).state == "refunded"  # no registration state change


def test_a_licence_that_stands_has_nothing_to_pay(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, _ = buy(client, stripe_api, ltiaas_api)
    with app_.app_context():
        key = keys.shown(platforms.key_of(db.session.get(Registration, pk)))
    sessions = len(stripe_api.sessions)
    answer = client.post(f"/licence/{key}/pay")
    assert answer.status_code == 409 and len(stripe_api.sessions) == sessions


def test_a_choice_that_is_not_on_sale_is_refused_and_makes_nothing(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    _, _, key = completed_pilot(app_, ltiaas_api)
    answer = client.post(f"/licence/{key}/pay", data={"offer": "price_elsewhere"})
    assert answer.status_code == 400 and stripe_api.sessions == {}
    assert client.post("/licence/PG-0000-0000-0000-0000/pay").status_code == 404


def test_a_session_for_another_licence_or_with_tampered_metadata_changes_nothing(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api)
    session = _pay_page(client, key, stripe_api)
    stripe_api.pay(session["id"])
    record = stripe_api.sessions[session["id"]]
    record["metadata"] = {**record["metadata"], "licence": str(int(record["metadata"]["licence"]) + 1)}
    assert send(client, stripe_api, "checkout.session.completed", record) == "foreign session"
    record["metadata"] = {**record["metadata"], "licence": session["metadata"]["licence"], "registration_pk": "999"}
    assert send(client, stripe_api, "checkout.session.completed", record) == "foreign session"
    licence = licence_of(app_, pk)
    assert licence.kind == "pilot" and licence.payments == []
    assert ltiaas_api.calls_for(platform_id) == []


def test_a_return_with_another_licences_session_is_refused(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    bought_pk, _ = buy(client, stripe_api, ltiaas_api)
    _, _, key = completed_pilot(app_, ltiaas_api)
    session = _pay_page(client, key, stripe_api)
    stripe_api.pay(session["id"])
    with app_.app_context():
        reg = db.session.get(Registration, bought_pk)
        link = keys.link_token(reg.licence_pk, reg.licence.key_hash, BASE_CONFIG["secret_key"])
    answer = client.get(f"/licence/paid/{link}?session_id={session['id']}")
    assert answer.status_code == 400
    assert licence_of(app_, bought_pk).payments[-1].payment_intent_id != session["payment_intent"]


def test_an_expired_session_ends_the_pilots_hold(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api, ends_in=timedelta(minutes=5))
    session = _pay_page(client, key, stripe_api)
    ends = licence_of(app_, pk).pilot_ends_at
    with app_.app_context():
        reconciler.sync_pending(now=ends + timedelta(seconds=1))
    assert ltiaas_api.calls_for(platform_id) == []  # held: its payment is under way
    stripe_api.expire(session["id"])
    send(client, stripe_api, "checkout.session.expired", stripe_api.sessions[session["id"]])
    assert licence_of(app_, pk).payment_pending_until is None
    with app_.app_context():
        reconciler.sync_pending(now=ends + timedelta(seconds=2))
    assert ltiaas_api.calls_for(platform_id) == ["deactivate"]


def test_a_pilot_converted_while_its_end_passes_never_flaps(pg_url, mocked):
    """PostgreSQL: the worker reviews the pilot at its end while the payment begun before it is applied."""
    app = _app(pg_url, pilot_days=30)
    stripe_api, ltiaas_api = Stripe(mocked, BASE_CONFIG), Ltiaas(mocked, BASE_CONFIG)
    client = app.test_client()
    pk, platform_id, key = completed_pilot(app, ltiaas_api, ends_in=timedelta(minutes=2))
    session = _pay_page(client, key, stripe_api)  # opened before the end
    stripe_api.pay(session["id"])
    ends = licence_of(app, pk).pilot_ends_at
    event = stripe_api.object_event("checkout.session.completed", stripe_api.sessions[session["id"]])
    body, headers = stripe_api.signed(event)
    barrier, errors, answers = threading.Barrier(2), [], []

    def worker():
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                for step in range(5):  # at and after the end, while the payment lands
                    reconciler.sync_pending(now=ends + timedelta(milliseconds=200 * step))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def webhook():
        try:
            barrier.wait(timeout=10)
            answers.append(app.test_client().post("/webhooks/stripe", data=body, headers=headers).get_json())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker), threading.Thread(target=webhook)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and answers[0]["result"] == "licence paid"
    with app.app_context():
        reconciler.sync_pending(now=ends + timedelta(hours=1))
        reg = db.session.get(Registration, pk)
        assert reg.access_wanted is True and reg.platform_active is True
        assert db.session.scalar(select(LicencePayment.id)) is not None
        db.engine.dispose()
    assert ltiaas_api.calls_for(platform_id) == []  # neither a deactivate nor a second activate


def test_the_return_url_carries_the_one_hour_link_not_the_key(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    _, _, key = completed_pilot(app_, ltiaas_api)
    session = _pay_page(client, key, stripe_api)
    for url in (session["success_url"], session["cancel_url"]):
        assert "/licence/m/" in url or "/licence/paid/" in url
        assert keys.normal(key) not in url.upper().replace("-", "")
    assert parse_qs(urlsplit(session["success_url"]).query)["session_id"] == ["{CHECKOUT_SESSION_ID}"]


def test_reconciliation_finds_a_licence_paid_on_its_page_whose_webhook_was_lost(app_, stripe_api, ltiaas_api):
    client = app_.test_client()
    pk, platform_id, key = completed_pilot(app_, ltiaas_api)
    session = _pay_page(client, key, stripe_api)
    stripe_api.pay(session["id"])  # neither the webhook nor the return arrives
    with app_.app_context():
        first, second = reconcile(), reconcile()
    assert first["fulfilled"] == 1 and second["known"] == 1 and second["fulfilled"] == 0
    paid = licence_of(app_, pk)
    assert paid.kind == "payment" and len(paid.payments) == 1
    assert ltiaas_api.calls_for(platform_id) == []
