"""Retention (`flask --app wsgi prune`, and the worker hourly): after RETENTION_DAYS, other integrations'
Stripe events and abandoned registrations without money go; every row with money on it stays."""

import json
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import (
    CheckoutSession,
    Licence,
    LicencePayment,
    Registration,
    StripeEvent,
    TimelineEntry,
    VendorMessage,
)
from paygate.ops import worker
from paygate.ops.retention import prune
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.operators import paid_registration
from tests.helpers.vendor import messages as vendor_messages
from tests.helpers.webhooks import deliver

OLD = timedelta(days=91)


def _registration(state="abandoned", age=OLD, **fields) -> Registration:
    then = utcnow() - age
    reg = Registration(
        registration_id="R" + secrets.token_hex(8),
        flow_token=secrets.token_urlsafe(32),
        state=state,
        lms_url="https://canvas.instructure.com",
        lms_family="canvas",
        price_id="price_registration",
        amount=4900,
        currency="usd",
        checkout_generation=1,
        attempt_count=0,
        attempt_uncertain=False,
        created_at=then,
        updated_at=then,
        **fields,
    )
    db.session.add(reg)
    db.session.flush()
    db.session.add(
        TimelineEntry(registration_pk=reg.id, kind="state", to_state=state, cause="test", message="x", at=then)
    )
    return reg


def _session(reg, status="expired", payment_status="unpaid") -> CheckoutSession:
    session = CheckoutSession(
        session_id="cs_" + secrets.token_hex(8),
        registration_pk=reg.id,
        generation=1,
        status=status,
        payment_status=payment_status,
        created_at=reg.created_at,
    )
    db.session.add(session)
    return session


def _event(kind="customer.subscription.updated", reg=None, session_id=None, age=OLD) -> str:
    event_id = "evt_" + secrets.token_hex(8)
    db.session.add(
        StripeEvent(
            event_id=event_id,
            type=kind,
            session_id=session_id,
            registration_pk=reg.id if reg else None,
            received_at=utcnow() - age,
            payload=json.dumps({"id": event_id, "customer_email": "someone@else.example"}),
        )
    )
    return event_id


def _age(model, column: str) -> None:
    """Every row's `column` moved OLD into the past (in Python: SQLite has no date arithmetic)."""
    for row in db.session.scalars(select(model)):
        setattr(row, column, getattr(row, column) - OLD)
    db.session.commit()


def _with_money(kind: str) -> Registration:
    """An old abandoned-looking registration with one kind of money (or of operator interest) on it."""
    if kind in (
        "paid_at",
        "amount_paid",
        "payment_intent_id",
        "payment_session_id",
        "refund_id",
        "platform_id",
        "attention",
    ):
        value = {
            "paid_at": utcnow() - OLD,
            "amount_paid": 4900,
            "payment_intent_id": "pi_kept",
            "payment_session_id": "cs_kept",
            "refund_id": "re_kept",
            "platform_id": "Pkept",
            "attention": "duplicate_payment",
        }[kind]
        return _registration(**{kind: value})
    reg = _registration()
    if kind in ("invoice licence", "licence payment"):
        licence = Licence(
            registration_pk=reg.id,
            kind="invoice",
            status="open",
            invoice_id="in_kept",
            invoicing_attempt=0,
            dispute_open=False,
        )
        db.session.add(licence)
        db.session.flush()
        if kind == "licence payment":
            db.session.add(
                LicencePayment(
                    licence_pk=licence.id,
                    registration_pk=reg.id,
                    payment_intent_id="pi_" + secrets.token_hex(6),
                    amount=4900,
                    amount_refunded=0,
                )
            )
    elif kind == "session processing":
        _session(reg, status="complete", payment_status="unpaid")
    elif kind == "session paid":
        _session(reg, status="complete", payment_status="paid")
    elif kind == "money event":
        _event("charge.refunded", reg=reg)
    return reg


MONEY = (
    "paid_at",
    "amount_paid",
    "payment_intent_id",
    "payment_session_id",
    "refund_id",
    "platform_id",
    "attention",
    "invoice licence",
    "licence payment",
    "session processing",
    "session paid",
    "money event",
)


def test_prune_deletes_old_leftovers_and_keeps_every_row_with_money(app):
    with app.app_context():
        gone = _registration()
        gone_session = _session(gone)
        _event("checkout.session.expired", reg=gone, session_id=gone_session.session_id)
        kept = {kind: _with_money(kind).id for kind in MONEY}
        kept["recent"] = _registration(age=timedelta(days=89)).id
        for state in ("completed", "refunded", "pending", "paid", "needs_attention"):
            kept[state] = _registration(state=state).id
        foreign_old, foreign_recent = _event(), _event(age=timedelta(days=30))
        ours_by_session = _event(
            "checkout.session.completed", session_id=_session(_registration(state="completed")).session_id
        )
        ours_by_registration = _event("invoice.paid", reg=db.session.get(Registration, kept["completed"]))
        gone_pk = gone.id
        db.session.commit()
        rows_before = db.session.scalar(select(db.func.count()).select_from(Registration))

    result = app.test_cli_runner().invoke(args=["prune"])
    assert (
        result.exit_code == 0
        and result.output.strip() == "events=1 registrations=1 vendor_messages=0 (older than 90 days)"
    )

    with app.app_context():
        assert db.session.get(Registration, gone_pk) is None
        for model in (CheckoutSession, TimelineEntry, StripeEvent):
            assert db.session.scalars(select(model).where(model.registration_pk == gone_pk)).all() == []
        assert db.session.scalar(select(db.func.count()).select_from(Registration)) == rows_before - 1
        for kind, pk in kept.items():
            assert db.session.get(Registration, pk) is not None, kind
        assert (
            len(db.session.scalars(select(Licence)).all()) == 2
            and len(db.session.scalars(select(LicencePayment)).all()) == 1
        )
        events = set(db.session.scalars(select(StripeEvent.event_id)))
        assert foreign_old not in events
        assert {foreign_recent, ours_by_session, ours_by_registration} <= events
    # Again: nothing more to do.
    again = app.test_cli_runner().invoke(args=["prune"])
    assert again.output.strip() == "events=0 registrations=0 vendor_messages=0 (older than 90 days)"


def test_an_abandoned_registration_goes_and_a_paid_one_stays(ops, stripe_api, ltiaas_api):
    """Through the admin's flow: one admin walks away from Checkout, one pays; months later the worker
    prunes the first (its link no longer opens anything) and keeps the second with all it had."""
    app = ops.application
    _, walked_away, _ = open_frame(ops, ltiaas_api)
    assert ops.get(f"/flow/{walked_away}/pay").status_code == 303
    paid_pk = paid_registration(ops, stripe_api, ltiaas_api)
    with app.app_context():
        before = {
            model: len(db.session.scalars(select(model).where(model.registration_pk == paid_pk)).all())
            for model in (CheckoutSession, TimelineEntry, StripeEvent)
        }
        _age(Registration, "created_at")
        _age(StripeEvent, "received_at")
        later = utcnow() + timedelta(days=1)
        assert worker.run_once(later)["abandoned"] == 1  # the worker first gives it up, as it always did
        _age(Registration, "updated_at")
        result = worker.run_once(later, prune=True)
        assert result["pruned_registrations"] == 1
        assert db.session.get(Registration, paid_pk).state == "completed"
        after = {
            model: len(db.session.scalars(select(model).where(model.registration_pk == paid_pk)).all())
            for model in (CheckoutSession, TimelineEntry, StripeEvent)
        }
        assert after == before
    assert ops.get(f"/flow/{walked_away}/status").status_code == 404
    assert ops.get(f"/operator/api/registrations/{paid_pk}").get_json()["state"] == "completed"


def test_another_integrations_event_is_pruned_once_old(client, stripe_api, ltiaas_api):
    """A subscription of the vendor's other product: answered, stored, and gone after the retention."""
    foreign = stripe_api.object_event(
        "customer.subscription.updated",
        {"id": "sub_elsewhere", "object": "subscription", "status": "active", "metadata": {}},
    )
    assert deliver(client, stripe_api, foreign).status_code == 200
    with client.application.app_context():
        assert db.session.get(StripeEvent, foreign["id"]) is not None
        assert worker.run_once(prune=True)["pruned_events"] == 0  # not old yet
        _age(StripeEvent, "received_at")
        assert worker.run_once(prune=True)["pruned_events"] == 1
        assert db.session.get(StripeEvent, foreign["id"]) is None


@pytest.mark.parametrize(
    "days, printed",
    [
        (0, "RETENTION_DAYS=0: nothing is pruned"),
        (365, "events=0 registrations=0 vendor_messages=0 (older than 365 days)"),
    ],
)
def test_the_retention_is_a_setting(database_url, days, printed):
    app = make_app(database_url, retention_days=days)
    with app.app_context():
        _registration(age=timedelta(days=200))
        _event(age=timedelta(days=200))
        db.session.commit()
    assert app.test_cli_runner().invoke(args=["prune"]).output.strip() == printed
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Registration)) == 1
        db.engine.dispose()


def test_delivered_vendor_messages_go_once_old_and_a_given_up_one_stays(app):
    """The vendor has its copy of a delivered event; one given up waits for an operator to send it again."""
    written = vendor_messages(app, licences=1, per_licence=3)
    old = utcnow() - timedelta(days=91)
    with app.app_context():
        kept_pending, given_up, delivered = db.session.scalars(select(VendorMessage).order_by(VendorMessage.id)).all()
        given_up.status, given_up.last_attempt_at = "failed", old
        delivered.status, delivered.delivered_at = "delivered", old
        kept_pending.created_at = old
        db.session.commit()
        assert prune()["vendor_messages"] == 1
        left = db.session.scalars(select(VendorMessage.message_id).order_by(VendorMessage.id)).all()
    assert left == next(iter(written.values()))[:2]
