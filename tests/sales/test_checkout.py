"""Checkout (paygate/sales/checkout.py): one Checkout Session per registration, reused on every click, never
a second while a payment is pending; cancel, expiry and a failed delayed payment let the admin pay again;
a Price Stripe will not sell, a window Stripe cannot honour, and Stripe failing on create."""

import logging

import pytest
import requests
import responses
from sqlalchemy import select

from paygate.application import create_app
from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.apps import BASE_CONFIG
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import deliver, registration


def test_pay_opens_one_checkout_session_and_reuses_it(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    first = client.get(f"/flow/{token}/pay")
    second = client.get(f"/flow/{token}/pay")
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    session = stripe_api.only_session()
    assert first.headers["Location"] == session["url"]
    assert session["client_reference_id"] == registration_id
    assert session["mode"] == "payment" and session["ui_mode"] == "hosted_page"
    assert session["success_url"] == f"http://paygate.test/flow/{token}/paid?session_id={{CHECKOUT_SESSION_ID}}"
    assert session["cancel_url"] == f"http://paygate.test/flow/{token}/cancel"
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        # The expiry fits inside the LMS token's hour, and within Stripe's 30-minute minimum.
        assert session["expires_at"] - session["created"] >= 30 * 60
        assert session["expires_at"] <= reg.created_at.timestamp() + 60 * 60 + 5
    creates = [c for c in stripe_api.calls if c[0] == "create"]
    assert len(creates) == 1 and creates[0][1].startswith("paygate-checkout-")


def test_no_new_checkout_while_a_delayed_payment_is_processing(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, payment_status="unpaid")
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    again = client.get(f"/flow/{token}/pay")
    assert again.status_code == 409 and "still being processed" in again.text
    assert len(stripe_api.sessions) == 1


def test_only_card_payments_by_default(client, stripe_api, ltiaas_api):
    """Delayed methods confirm days later, long after the LMS token has died."""
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    assert stripe_api.only_session()["payment_method_types"] == ["card"]


def test_cancel_tells_the_frame_and_pay_again_reuses_the_session(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    first = client.get(f"/flow/{token}/pay").headers["Location"]
    page = client.get(f"/flow/{token}/cancel")
    assert "No payment was made" in page.text
    frame = status(client, token)
    assert frame["phase"] == "pay" and "cancelled" in frame["message"]
    assert client.get(f"/flow/{token}/pay").headers["Location"] == first
    assert "cancelled" not in status(client, token)["message"]


def test_expired_after_completed_is_ignored(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.pay(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    late = stripe_api.event("checkout.session.expired", session_id)
    late["data"]["object"]["status"] = "expired"
    assert deliver(client, stripe_api, late).status_code == 200
    reg = registration(client)
    assert reg.state == "completed"
    assert reg.checkout_sessions[0].status == "complete"
    assert any("Late 'expired'" in e.message for e in reg.timeline)
    assert status(client, token)["phase"] == "done"


def test_async_failure_after_success_is_ignored(client, stripe_api, ltiaas_api, checkout):
    _, _, session_id = checkout
    stripe_api.pay(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_succeeded", session_id))
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_failed", session_id))
    reg = registration(client)
    assert reg.state == "completed" and reg.checkout_sessions[0].failed_at is None


def test_async_failure_lets_the_admin_pay_again(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.pay(session_id, payment_status="unpaid")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_failed", session_id))
    frame = status(client, token)
    assert frame["phase"] == "pay" and "did not go through" in frame["message"]
    new_url = client.get(f"/flow/{token}/pay").headers["Location"]
    assert session_id not in new_url and len(stripe_api.sessions) == 2


def test_expired_session_tells_the_frame_and_a_new_one_can_be_opened(client, stripe_api, ltiaas_api, checkout):
    _, token, session_id = checkout
    stripe_api.expire(session_id)
    deliver(client, stripe_api, stripe_api.event("checkout.session.expired", session_id))
    frame = status(client, token)
    assert frame["phase"] == "pay" and "expired" in frame["message"]
    assert session_id not in client.get(f"/flow/{token}/pay").headers["Location"]
    keys = [c[1] for c in stripe_api.calls if c[0] == "create"]
    assert len(set(keys)) == 2


@pytest.mark.parametrize("failure", [429, 500, 503, "network"])
def test_stripe_failure_on_create_offers_a_retry_and_never_a_second_session(
    client, stripe_api, ltiaas_api, mocked, failure
):
    _, token, _ = open_frame(client, ltiaas_api)
    create_url = "https://api.stripe.com/v1/checkout/sessions"
    if failure == "network":
        mocked.replace(responses.POST, create_url, body=requests.ConnectionError("Connection reset by peer"))
    else:
        stripe_api.fail_next_create.append(failure)
    failed = client.get(f"/flow/{token}/pay")
    assert failed.status_code == 503
    assert "Try again" in failed.text and "charged twice" in failed.text
    assert f"/flow/{token}/pay" in failed.text  # the retry link
    assert "sk_test_secret_key_for_tests" not in failed.text
    assert status(client, token)["phase"] == "pay"
    if failure == "network":
        mocked.replace(responses.CallbackResponse("POST", create_url, callback=stripe_api._create))

    retried = client.get(f"/flow/{token}/pay")
    assert retried.status_code == 303 and retried.headers["Location"] == stripe_api.only_session()["url"]
    keys = [
        call.request.headers["Idempotency-Key"]
        for call in mocked.calls
        if call.request.method == "POST" and call.request.url == create_url
    ]
    assert len(keys) == 2
    if failure in (429, "network"):
        assert keys[0] == keys[1]  # nothing was kept under the key: the retry replays it safely
    else:
        assert keys[0] != keys[1]  # Stripe keeps a 5xx under its key: reusing it would replay the 5xx
    assert len(stripe_api.sessions) == 1  # one session either way: nobody can be charged twice


@pytest.mark.parametrize("how", ["archived", "unknown"])
def test_a_price_stripe_will_not_sell_tells_the_admin_to_contact_the_vendor(
    client, stripe_api, ltiaas_api, caplog, how
):
    if how == "archived":
        stripe_api.set_price(active=False)
    else:
        stripe_api.price["id"] = "price_someone_deleted"
    registration_id = ltiaas_api.add()
    with caplog.at_level(logging.ERROR):
        page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 503 and "contact the vendor" in page.text and "Try again" not in page.text
    assert any("STRIPE_PRICE_ID" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.mark.parametrize("minutes", [20, 35, 24 * 60 + 30])
def test_a_registration_window_stripe_cannot_honour_is_refused_at_start(minutes):
    from paygate.core.config import ConfigError

    with pytest.raises(ConfigError, match="REGISTRATION_WINDOW_MINUTES"):
        create_app({**BASE_CONFIG, "registration_window_minutes": minutes})
