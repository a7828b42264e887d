"""Events for the vendor's systems (paygate/licensing/vendor_events.py): written to the outbox in the transaction of
the change they report, once per change, in the order the vendor should read them; never a key or a secret. Only
what is written is checked here: delivering it is paygate/ops/vendor_outbox.py's (tests/ops/test_vendor_outbox.py)."""

import json
import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration, VendorMessage
from paygate.licensing import access, keys, platforms, reconciler
from tests.fakes import Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.licences import buy, completed_pilot
from tests.helpers.webhooks import deliver, send
from tests.sales.test_invoicing import GRACE, invoiced
from tests.sales.test_offers import OFFERS, SEATS, add_offers

URL = "https://vendor.example/paygate-events"
SECRET = "whsec_dGVzdC12ZW5kb3Itc2lnbmluZy1zZWNyZXQtMzJieXRlcw=="
VENDOR = {"vendor_webhook_url": URL, "vendor_webhook_secret": SECRET}


@pytest.fixture
def make(database_url):
    """make(**settings): an app on the test's database that tells the vendor's systems, disposed after."""
    apps = []

    def factory(**settings):
        app = make_app(database_url, **{**VENDOR, **settings})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def rows(app) -> list[VendorMessage]:
    with app.app_context():
        found = db.session.scalars(select(VendorMessage).order_by(VendorMessage.id)).all()
        db.session.expunge_all()
        return found


def messages(app, after: int = 0) -> list[tuple[str, dict]]:
    """The messages written (after the first `after`), in delivery order: (type, body)."""
    return [(m.type, json.loads(m.payload)) for m in rows(app)[after:]]


def registration(app, pk: int) -> Registration:
    with app.app_context():
        reg = db.session.get(Registration, pk)
        db.session.expunge(reg)
        return reg


def licence_body(app, pk: int, status: str, platforms_active: list[bool], **changed) -> dict:
    """The licence as the vendor reads it, for registration `pk`'s licence, from its stored facts."""
    with app.app_context():
        reg = db.session.get(Registration, pk)
        licence = db.session.get(Licence, reg.licence_pk)
        held = db.session.scalars(
            select(Registration.platform_id)
            .where(Registration.licence_pk == licence.id, Registration.platform_id.is_not(None))
            .order_by(Registration.id)
        ).all()
        body = {
            "status": status,
            "kind": licence.kind,
            "price_id": licence.price_id,
            "product": licence.registration.product_name,
            "quantity": licence.quantity,
            "seat_unit": licence.seat_unit,
            "ends_at": None,
            "platforms": [{"id": p, "active": a} for p, a in zip(held, platforms_active, strict=True)],
        }
    return {**body, **changed}


def iso(at) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%S}Z"


def recent(stamp: str) -> bool:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    return abs(utcnow() - utcnow().fromisoformat(stamp[:-1])) < timedelta(minutes=2)


def test_a_paid_registration_completing_tells_completed_then_the_licence(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    pk, _ = buy(client, stripe_api, ltiaas_api)
    reg = registration(app, pk)
    licence = licence_body(app, pk, "active", [True])
    assert licence["kind"] == "payment" and licence["price_id"] == "price_registration" and licence["quantity"] == 1
    written = messages(app)
    assert [t for t, _ in written] == ["registration.completed", "licence.updated"]
    (_, completed), (_, updated) = written
    assert recent(completed["timestamp"]) and recent(updated["timestamp"])
    assert completed == {
        "type": "registration.completed",
        "timestamp": completed["timestamp"],
        "data": {
            "registration_id": reg.registration_id,
            "platform_id": reg.platform_id,
            "licence": licence,
            "platform": {"id": reg.platform_id, "active": True},
        },
    }
    assert updated == {
        "type": "licence.updated",
        "timestamp": updated["timestamp"],
        "data": {"registration_id": reg.registration_id, "platform_id": reg.platform_id, "licence": licence},
    }
    stored = rows(app)
    assert all(m.status == "pending" and m.licence_pk == reg.licence_pk and m.registration_pk == pk for m in stored)
    assert all(re.fullmatch(r"msg_[A-Za-z0-9_-]{20,}", m.message_id) for m in stored)
    assert len({m.message_id for m in stored}) == 2
    # the body is sent byte for byte as stored: compact JSON, and nothing the vendor must not see
    with app.app_context():
        key = platforms.key_of(db.session.get(Registration, pk))
    for m in stored:
        assert m.payload == json.dumps(json.loads(m.payload), separators=(",", ":"), ensure_ascii=False)
        for secret in (key, keys.shown(key), SECRET, BASE_CONFIG["stripe_secret_key"], "manage_url", reg.flow_token):
            assert secret not in m.payload
    assert reg.vendor_access is True


def test_a_refund_at_stripe_tells_the_licence_and_the_platform_once(make, stripe_api, ltiaas_api):
    app = make()
    client = app.test_client()
    pk, session = buy(client, stripe_api, ltiaas_api)
    before = len(rows(app))
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    event = stripe_api.object_event("charge.refunded", stripe_api.charges[refund["charge"]])
    assert deliver(client, stripe_api, event).status_code == 200
    reg = registration(app, pk)
    assert reg.state == "refunded"
    assert messages(app, before) == [
        (
            "licence.updated",
            {
                "type": "licence.updated",
                "timestamp": messages(app, before)[0][1]["timestamp"],
                "data": {
                    "registration_id": reg.registration_id,
                    "platform_id": reg.platform_id,
                    "licence": licence_body(app, pk, "inactive", [False]),
                },
            },
        ),
        (
            "platform.access_changed",
            {
                "type": "platform.access_changed",
                "timestamp": messages(app, before)[1][1]["timestamp"],
                "data": {
                    "registration_id": reg.registration_id,
                    "platform_id": reg.platform_id,
                    "licence": licence_body(app, pk, "inactive", [False]),
                    "platform": {"id": reg.platform_id, "active": False},
                },
            },
        ),
    ]
    # The same event again, and another event about the same refund: nothing new to tell.
    assert deliver(client, stripe_api, event).status_code == 200
    send(client, stripe_api, "refund.created", refund)
    assert len(rows(app)) == before + 2


def test_an_operator_override_tells_the_platform_only(make, stripe_api, ltiaas_api):
    app = make()
    pk, _ = buy(app.test_client(), stripe_api, ltiaas_api)
    before = len(rows(app))
    with app.app_context():
        assert access.set_override(db.session.get(Registration, pk), False, "operator a@vendor.example", "paused")
        db.session.commit()
    written = messages(app, before)
    assert [t for t, _ in written] == ["platform.access_changed"]
    data = written[0][1]["data"]
    platform_id = registration(app, pk).platform_id
    assert data["platform"] == {"id": platform_id, "active": False}
    assert data["licence"] == licence_body(app, pk, "active", [True])  # the licence itself is unchanged
    with app.app_context():
        assert access.set_override(db.session.get(Registration, pk), None, "operator a@vendor.example", "")
        db.session.commit()
    assert [(t, b["data"]["platform"]) for t, b in messages(app, before + 1)] == [
        ("platform.access_changed", {"id": platform_id, "active": True})
    ]


def test_a_seat_change_tells_the_new_quantity(make, stripe_api, ltiaas_api):
    add_offers(stripe_api)
    app = make(stripe_price_id=OFFERS)
    client = app.test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay?offer={SEATS}&seats=120")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert status(client, token)["phase"] == "done"
    written = messages(app)
    assert [t for t, _ in written] == ["registration.completed", "licence.updated"]
    assert written[1][1]["data"]["licence"]["quantity"] == 120
    assert written[1][1]["data"]["licence"]["seat_unit"] == "student"
    sub_id = stripe_api.sessions[session["id"]]["subscription"]
    stripe_api.change_quantity(sub_id, 150)
    send(client, stripe_api, "customer.subscription.updated", stripe_api.subscriptions[sub_id])
    later = messages(app, 2)
    assert [t for t, _ in later] == ["licence.updated"]
    assert later[0][1]["data"]["licence"]["quantity"] == 150
    assert later[0][1]["data"]["licence"]["status"] == "active"


def test_a_pilots_end_is_told_by_the_workers_review(make, stripe_api, ltiaas_api):
    app = make(pilot_days=30)
    pk, platform_id, key = completed_pilot(app, ltiaas_api)
    written = messages(app)
    assert [t for t, _ in written] == ["registration.completed", "licence.updated"]
    with app.app_context():
        ends = db.session.get(Licence, registration(app, pk).licence_pk).pilot_ends_at
    assert written[1][1]["data"]["licence"] == licence_body(app, pk, "pilot", [True], ends_at=iso(ends))
    with app.app_context():
        reconciler.review_due(ends - timedelta(minutes=1))
    assert len(rows(app)) == 2  # not yet
    with app.app_context():
        reconciler.review_due(ends + timedelta(seconds=1))
        reconciler.review_due(ends + timedelta(hours=1))  # a later pass tells nothing more
    later = messages(app, 2)
    assert [t for t, _ in later] == ["licence.updated", "platform.access_changed"]
    assert later[0][1]["data"]["licence"] == licence_body(app, pk, "inactive", [False], ends_at=iso(ends))
    assert later[0][1]["timestamp"] == iso(ends + timedelta(seconds=1))  # when the clock changed it
    assert later[1][1]["data"]["platform"] == {"id": platform_id, "active": False}
    assert key not in json.dumps(later)


def test_an_unpaid_invoice_turns_to_grace_at_its_due_date_by_the_clock(make, stripe_api, ltiaas_api):
    app = make(invoice_days_until_due=30)
    client = app.test_client()
    invoiced(client, ltiaas_api)
    with app.app_context():
        pk = db.session.scalar(select(Registration.id))
        due = db.session.scalar(select(Licence.due_at))
    written = messages(app)
    assert [t for t, _ in written] == ["registration.completed", "licence.updated"]
    assert written[1][1]["data"]["licence"] == licence_body(app, pk, "active", [True], ends_at=iso(due))
    with app.app_context():
        reconciler.review_due(due + timedelta(hours=1))
    later = messages(app, 2)
    assert [t for t, _ in later] == ["licence.updated"]  # still active at LTIaaS: money is owed
    assert later[0][1]["data"]["licence"] == licence_body(app, pk, "grace", [True], ends_at=iso(due))
    with app.app_context():
        reconciler.review_due(due + timedelta(days=GRACE + 1))
    assert [t for t, _ in messages(app, 3)] == ["licence.updated", "platform.access_changed"]
    assert messages(app, 3)[0][1]["data"]["licence"]["status"] == "inactive"


def test_without_a_vendor_url_nothing_is_written(database_url, stripe_api, ltiaas_api):
    app = make_app(database_url)
    try:
        client = app.test_client()
        pk, session = buy(client, stripe_api, ltiaas_api)
        refund = stripe_api.refund_in_dashboard(session["payment_intent"])
        send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
        assert registration(app, pk).state == "refunded"
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(VendorMessage)) == 0
            assert db.session.scalar(select(Licence.vendor_state)) is None
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.postgres
def test_one_change_applied_twice_at_the_same_moment_is_told_once(pg_url, mocked):
    """PostgreSQL: two deliveries of one Stripe event, released together, write one message of each kind."""
    app = make_app(pg_url, **VENDOR)
    stripe_api, ltiaas_api = Stripe(mocked, BASE_CONFIG), Ltiaas(mocked, BASE_CONFIG)
    client = app.test_client()
    pk, session = buy(client, stripe_api, ltiaas_api)
    before = len(rows(app))
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    body, headers = stripe_api.signed(stripe_api.object_event("charge.refunded", stripe_api.charges[refund["charge"]]))
    barrier, errors, codes = threading.Barrier(2), [], []

    def webhook():
        try:
            own = app.test_client()
            barrier.wait(timeout=10)
            codes.append(own.post("/webhooks/stripe", data=body, headers=headers).status_code)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=webhook) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and codes == [200, 200]
    assert registration(app, pk).state == "refunded"
    later = rows(app)[before:]
    assert sorted(m.type for m in later) == ["licence.updated", "platform.access_changed"]
    assert len({m.message_id for m in later}) == 2
    with app.app_context():
        db.engine.dispose()


def test_a_completion_that_lands_after_its_attempt_was_given_up_is_told_once(make, stripe_api, ltiaas_api, monkeypatch):
    """LTIaaS registers the platform while the registration moved on (refunded meanwhile): a platform all the same."""
    from paygate.gateways import ltiaas
    from paygate.sales import fulfilment

    app = make(pilot_days=30)
    registration_id, _, _ = open_frame(app.test_client(), ltiaas_api, url="https://lms.school.example")
    real = ltiaas.client

    class Late:
        def __getattr__(self, name):
            return getattr(real(), name)

        def complete_registration(self, *args):
            with db.engine.begin() as conn:  # another caller moved it meanwhile
                conn.execute(Registration.__table__.update().values(state="refunded"))
            return real().complete_registration(*args)

    monkeypatch.setattr(ltiaas, "client", Late)
    with app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        assert platforms.start_pilot(reg, "test") is not None
        db.session.commit()
        fulfilment.complete(reg, "test")
        fulfilment.complete(db.session.get(Registration, reg.id), "test")  # nothing more to tell
        reg = db.session.get(Registration, reg.id)
        assert reg.attention == "completion_late" and reg.platform_id
    written = messages(app)
    assert [t for t, _ in written] == ["registration.completed", "licence.updated"]
    assert written[0][1]["data"]["platform"] == {"id": reg.platform_id, "active": True}
