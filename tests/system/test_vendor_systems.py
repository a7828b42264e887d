"""The vendor's systems, end to end: an admin pays, Stripe refunds in its dashboard, and the vendor's endpoint (a
real local server verifying Standard Webhooks signatures) receives each change once, in order, right after the
answer that made it; the licence API says the same at every step."""

import json

import pytest
from sqlalchemy import select

from paygate.core.config import LOCAL_LICENCE_API_TOKEN
from paygate.core.db import db
from paygate.core.models import Registration, VendorMessage
from tests.helpers.apps import make_app
from tests.helpers.licences import buy
from tests.helpers.vendor import SECRET, Receiver
from tests.helpers.webhooks import deliver

TOKEN = "t" * 8 + LOCAL_LICENCE_API_TOKEN  # any token of 32 characters or more; not the local run's


@pytest.fixture
def receiver(mocked):
    endpoint = Receiver()
    mocked.add_passthru(endpoint.url)  # the vendor's endpoint is a real server; every other call stays mocked
    yield endpoint
    endpoint.stop()


@pytest.fixture
def app(database_url, receiver):
    app = make_app(
        database_url,
        vendor_webhook_url=receiver.url + "/events",
        vendor_webhook_secret=SECRET,
        licence_api_token=TOKEN,
    )
    yield app
    with app.app_context():
        db.engine.dispose()


def received(receiver) -> list[tuple[str, dict]]:
    """(webhook-id, body) of every delivery the endpoint accepted, in the order it got them."""
    return [(d.id, json.loads(d.body)) for d in receiver.deliveries if d.answer == 200]


def licence_api(client, platform_id: str) -> dict:
    answer = client.get(f"/api/v1/platforms/{platform_id}/licence", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    return answer.json


def test_the_vendor_hears_of_a_purchase_and_a_refund_once_each_right_after_the_answer(
    app, receiver, stripe_api, ltiaas_api
):
    client = app.test_client()
    pk, session = buy(client, stripe_api, ltiaas_api)
    with app.app_context():
        reg = db.session.get(Registration, pk)
        platform_id, registration_id = reg.platform_id, reg.registration_id

    # Delivered after the answers of the flow (no worker ran), signed with the vendor's secret.
    bought = received(receiver)
    assert [body["type"] for _, body in bought] == ["registration.completed", "licence.updated"]
    assert receiver.forged == []
    for _, body in bought:
        assert body["data"]["registration_id"] == registration_id and body["data"]["platform_id"] == platform_id
        assert body["data"]["licence"]["status"] == "active"
        assert body["data"]["licence"]["platforms"] == [{"id": platform_id, "active": True}]
    shown = licence_api(client, platform_id)
    assert shown["platform"] == {"id": platform_id, "active": True}
    told = bought[-1][1]["data"]["licence"]
    assert {k: v for k, v in shown["licence"].items() if k != "manage_url"} == {
        k: v for k, v in told.items() if k != "platforms"
    }

    # A refund made in Stripe's dashboard, its event delivered twice: told once, the licence before the platform.
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    event = stripe_api.object_event("charge.refunded", stripe_api.charges[refund["charge"]])
    assert deliver(client, stripe_api, event).status_code == 200
    assert deliver(client, stripe_api, event).status_code == 200
    refunded = received(receiver)[len(bought) :]
    assert [body["type"] for _, body in refunded] == ["licence.updated", "platform.access_changed"]
    assert [body["data"]["licence"]["status"] for _, body in refunded] == ["inactive", "inactive"]
    assert refunded[1][1]["data"]["platform"] == {"id": platform_id, "active": False}
    assert licence_api(client, platform_id)["licence"]["status"] == "inactive"
    assert licence_api(client, platform_id)["platform"]["active"] is False

    # Each id arrived once, and every message is recorded as delivered with the endpoint's answer.
    ids = receiver.ids()
    assert len(ids) == len(set(ids)) == 4
    with app.app_context():
        stored = db.session.execute(
            select(VendorMessage.message_id, VendorMessage.status, VendorMessage.last_status).order_by(VendorMessage.id)
        ).all()
    assert [(m, s, c) for m, s, c in stored] == [(i, "delivered", 200) for i in ids]
