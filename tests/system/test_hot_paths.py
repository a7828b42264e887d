"""The hot paths kept near the floor (scripts/bench_hot_paths.py) keep their behaviour: the frame's
status and page read one Core row yet say what the ORM objects say; paths of the frame and of Stripe
never touch a session cookie; no rate hook runs and Flask-Login works on the operator pages only; a
connection the server closed is still never handed out; a webhook is parsed as Stripe's library does."""

import json
import sys
import time
from datetime import timedelta

import psycopg
import pytest
import stripe
from sqlalchemy import select, text

from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, Licence, Registration
from paygate.web.flow.status import flow_view, frame_status
from paygate.web.operator import auth
from tests.helpers.flow import open_frame


def _registration(n: int, state: str, created_at=None, html=None) -> Registration:
    reg = Registration(
        registration_id=f"reg-hot-{n}",
        flow_token=f"tok_hot_path_{n:04d}_abcdefghij",
        state=state,
        lms_url=f"https://school{n}.example",
        lms_family="canvas",
        lms_version="cloud",
        price_id="price_registration",
        amount=4900,
        currency="usd",
        price_interval="year",
        product_name="Tool licence",
        product_description=f"For school {n}",
        created_at=created_at or utcnow(),
        completion_html=html,
    )
    db.session.add(reg)
    db.session.flush()
    return reg


def _session(reg, n: int, status="open", payment_status="unpaid", expires_in=30, failed=False, canceled=False):
    now = utcnow()
    db.session.add(
        CheckoutSession(
            session_id=f"cs_hot_{reg.id}_{n}",
            registration_pk=reg.id,
            generation=n,
            status=status,
            payment_status=payment_status,
            expires_at=now + timedelta(minutes=expires_in),
            failed_at=now if failed else None,
            canceled_at=now if canceled else None,
        )
    )
    db.session.flush()


def _licence(reg, **values):
    db.session.add(Licence(registration_pk=reg.id, kind="invoice", billing_email="finance@school.example", **values))
    db.session.flush()


def _situations():
    """One registration per situation the frame tells apart; yields their pks."""
    old = utcnow() - timedelta(hours=2)
    pks = []

    def add(reg):
        pks.append(reg.id)
        return reg

    add(_registration(1, "pending"))
    _session(add(_registration(2, "pending")), 1)
    _session(add(_registration(3, "pending")), 1, canceled=True)
    _session(add(_registration(4, "pending")), 1, failed=True)
    _session(add(_registration(5, "pending")), 1, status="expired", expires_in=-5)
    _session(add(_registration(6, "pending")), 1, status="complete", payment_status="unpaid")
    _session(add(_registration(7, "pending", created_at=old)), 1, expires_in=-1)
    add(_registration(8, "pending", created_at=old))
    two = add(_registration(9, "pending"))
    _session(two, 1, status="complete", payment_status="unpaid")
    _session(two, 2)
    _licence(add(_registration(10, "pending")), invoicing_error="Stripe did not answer")
    _licence(add(_registration(11, "pending")), invoicing_error="Stripe did not answer", invoicing_claimed_at=utcnow())
    _licence(add(_registration(12, "paid")), invoice_sent_at=utcnow())
    _licence(
        add(_registration(13, "completed", html="<script>close()</script>")),
        invoice_number="INV-7",
        due_at=utcnow() + timedelta(days=30),
        invoice_sent_at=utcnow(),
    )
    card = add(_registration(14, "completed", html="<script>close()</script>"))
    _session(card, 1, status="complete", payment_status="paid")
    db.session.add(Licence(registration_pk=card.id, kind="payment", status="succeeded"))
    for n, state in enumerate(("paid", "completing", "needs_attention", "refunded", "abandoned"), start=15):
        add(_registration(n, state))
    db.session.commit()
    return pks


def test_the_frame_says_what_the_orm_objects_say(app):
    with app.app_context():
        pks = _situations()
        phases = set()
        for pk in pks:
            reg = db.session.get(Registration, pk)
            expected = frame_status(reg)
            assert frame_status(flow_view(token=reg.flow_token)) == expected, reg.registration_id
            page = flow_view(registration_id=reg.registration_id)
            assert frame_status(page) == expected, reg.registration_id
            for field in (
                "id",
                "registration_id",
                "flow_token",
                "state",
                "lms_url",
                "lms_family",
                "lms_version",
                "amount",
                "currency",
                "price_interval",
                "created_at",
                "product_name",
                "product_description",
            ):
                assert getattr(page, field) == getattr(reg, field), field
            if reg.licence is not None:
                assert page.licence.kind == reg.licence.kind
                if reg.licence.kind == "invoice":
                    assert page.licence.invoice_sent_at == reg.licence.invoice_sent_at
            phases.add(expected["phase"])
        assert phases == {"pay", "invoice", "wait", "done", "stop"}
        assert flow_view(token="tok_unknown_unknown_unknown") is None
        assert flow_view(registration_id="reg-unknown") is None


def test_the_frame_and_webhooks_never_touch_a_session_cookie(client, stripe_api, ltiaas_api):
    _, token, page = open_frame(client, ltiaas_api)
    answers = [
        page,
        client.get(f"/flow/{token}/status"),
        client.get(f"/flow/{token}/pay"),
        client.post("/webhooks/stripe", data=b"{}"),
    ]
    client.set_cookie("session", "anything")  # an operator's cookie on the same host changes nothing
    answers.append(client.get(f"/flow/{token}/status"))
    for answer in answers:
        assert "Set-Cookie" not in answer.headers
        assert "Cookie" not in answer.headers.get("Vary", "")
    sign_in = client.get("/operator/sign-in")
    assert "session=" in sign_in.headers["Set-Cookie"]  # operators still sign in with one


def test_no_rate_hook_anywhere_and_remember_me_hooks_on_operator_pages_only(app):
    """Rates are counted inside the views that cause upstream work (paygate/web/throttling.py), never by a hook."""

    def owners(hooks):
        return {getattr(getattr(f, "__self__", None), "__class__", None) for f in hooks} | {
            type(a) for f in hooks for a in getattr(f, "args", ())
        }

    app_wide = [
        f
        for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        for f in registry.get(None, [])
    ]
    operator = [
        f
        for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        for f in registry.get("operator", [])
    ]
    assert type(auth.login_manager) not in owners(app_wide)
    assert type(auth.login_manager) in owners(operator)
    hooks = app_wide + operator
    assert not [
        f
        for f in hooks
        if "limit" in (getattr(f, "__module__", "") or "") or "limit" in type(getattr(f, "__self__", None)).__module__
    ]


def test_a_webhook_is_parsed_as_stripes_library_does(app, stripe_api):
    event = {
        "id": "evt_parsed",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1700000000,
        "livemode": False,
        "data": {
            "object": {
                "id": "cs_test_parsed",
                "object": "checkout.session",
                "metadata": {"registration_pk": "7"},
                "amount_total": 4900,
                "customer": None,
                "customer_details": {"email": "a@b.example"},
                "line_items": {
                    "object": "list",
                    "data": [{"price": {"id": "price_x", "recurring": None}, "quantity": 1}],
                },
            }
        },
    }
    body, headers = stripe_api.signed(event)
    secret = app.config["SETTINGS"].stripe_webhook_secret
    with app.app_context():
        from paygate.gateways import payments

        parsed = payments.gateway().construct_event(body, headers["Stripe-Signature"])
    assert parsed == stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret).to_dict()
    assert parsed == json.loads(body)
    with app.app_context(), pytest.raises(stripe.SignatureVerificationError):
        payments.gateway().construct_event(body + b" ", headers["Stripe-Signature"])


@pytest.mark.postgres
def test_a_connection_the_server_closed_is_never_handed_out(pg_app, monkeypatch):
    with pg_app.app_context():
        engine = db.engine
        pings = []
        real_ping = engine.dialect.do_ping
        monkeypatch.setattr(engine.dialect, "do_ping", lambda c: (pings.append(c), real_ping(c))[1])
        with engine.connect() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as conn:  # in steady use: no round trip before it
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == backend
        assert pings == []

        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (backend,))
        time.sleep(0.2)
        with engine.connect() as conn:  # the closed one is noticed, pinged, and replaced: no error here
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != backend
        assert len(pings) == 1

        monkeypatch.setattr(sys.modules["paygate.core.db"], "PING_AFTER_IDLE_SECONDS", 0)
        with engine.connect() as conn:  # idle past the bound: pinged whatever its socket says
            conn.execute(text("SELECT 1"))
        assert len(pings) == 2
        assert db.session.scalars(select(Registration)).first() is None  # the ORM session works as before
