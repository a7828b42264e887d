"""Operators see each registration's deliveries to the vendor's systems, and send one again (page and API)."""

import json
import re
from datetime import datetime

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import VendorMessage
from paygate.ops import vendor_outbox
from tests.helpers.operators import csrf_token, entries, give_token, seed
from tests.helpers.pages import text_of

TRIED = datetime(2026, 12, 7, 12, 0, 0)


def _message(app, pk, message_id, **fields) -> int:
    """A message the outbox wrote for registration `pk` (its body is what the vendor reads)."""
    values = {
        "message_id": message_id,
        "type": "registration.completed",
        "registration_pk": pk,
        "payload": json.dumps({"type": "registration.completed", "data": {"secret_marker": "body-not-for-operators"}}),
        "status": "pending",
        "attempts": 0,
        "created_at": TRIED,
        **fields,
    }
    with app.app_context():
        message = VendorMessage(**values)
        db.session.add(message)
        db.session.commit()
        return message.id


def _stored(app, message_id) -> VendorMessage:
    with app.app_context():
        message = db.session.scalars(select(VendorMessage).where(VendorMessage.message_id == message_id)).one()
        db.session.expunge(message)
        return message


def _failed(app, pk, message_id="msg_2Failed0000000000000000001"):
    return _message(
        app,
        pk,
        message_id,
        type="licence.updated",
        status="failed",
        attempts=12,
        last_attempt_at=TRIED,
        last_status=503,
        last_answer="Service Unavailable: down for maintenance",
    )


def _bearer(app) -> dict:
    token = give_token(app)
    return {"Authorization": f"Bearer {token}"}


def test_the_detail_page_lists_the_deliveries_newest_first(app, ops):
    (pk,) = seed(app)
    _message(app, pk, "msg_1Delivered00000000000001", attempts=1, last_attempt_at=TRIED, last_status=204,
             status="delivered", delivered_at=TRIED)  # fmt: skip
    _failed(app, pk)
    _message(app, pk, "msg_3NoAnswer0000000000000001", type="platform.access_changed", attempts=2,
             last_attempt_at=TRIED, last_status=None, last_answer="no answer within 10 s",
             next_attempt_at=datetime(2026, 12, 7, 12, 5))  # fmt: skip
    page = ops.get(f"/operator/registrations/{pk}")
    assert page.status_code == 200
    section = re.search(r'<section id="vendor-deliveries">.*?</section>', page.text, re.S).group(0)
    rows = re.findall(r'<tr id="vendor-message-(msg_\w+)"', section)
    assert rows == ["msg_3NoAnswer0000000000000001", "msg_2Failed0000000000000000001", "msg_1Delivered00000000000001"]
    words = text_of(section)
    assert "Deliveries to the vendor" in words
    assert "platform.access_changed" in words and "no answer" in words and "no answer within 10 s" in words
    assert "2026-12-07 12:05:00 UTC" in words  # the next try
    assert "failed: given up" in words and "HTTP 503" in words and "down for maintenance" in words
    assert "HTTP 204" in words and "delivered" in words
    assert len(re.findall(r"<button[^>]*>Send again</button>", section)) == 3
    assert "body-not-for-operators" not in page.text


def test_a_registration_without_messages_says_so(app, ops):
    (pk,) = seed(app)
    page = ops.get(f"/operator/registrations/{pk}")
    assert "No message to the vendor's systems for this registration." in text_of(page.text)


def test_the_reason_a_message_was_given_up_is_said_in_words(app, ops):
    (pk,) = seed(app, attention="vendor_webhook_failed")
    page = text_of(ops.get(f"/operator/registrations/{pk}").text)
    assert "Needs attention: vendor webhook failed." in page
    assert "A message to the vendor's systems was not taken after 12 tries" in page


def test_send_again_keeps_the_id_makes_it_pending_and_says_who(app, ops):
    (pk,) = seed(app)
    _failed(app, pk)
    path = f"/operator/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend"
    response = ops.post(path, data={"csrf_token": csrf_token(ops, f"/operator/registrations/{pk}")})
    assert response.status_code == 303 and response.headers["Location"] == f"/operator/registrations/{pk}"
    message = _stored(app, "msg_2Failed0000000000000000001")
    assert (message.status, message.attempts) == ("pending", 0)
    assert message.next_attempt_at is not None
    (entry,) = [e for e in entries(app, pk, "operator") if "again" in e.message]
    assert entry.cause == "operator support@vendor.example"
    assert entry.message == "Sent licence.updated message msg_2Failed0000000000000000001 to the vendor again."
    page = text_of(ops.get(f"/operator/registrations/{pk}").text)
    assert "is sent again, with the same webhook id" in page


def test_another_registrations_message_is_not_found(app, ops):
    mine, other = seed(app, 2)
    _failed(app, other)
    token = csrf_token(ops, f"/operator/registrations/{mine}")
    for message_id in ("msg_2Failed0000000000000000001", "msg_unknown", "msg_%00"):
        path = f"/operator/registrations/{mine}/vendor-messages/{message_id}/resend"
        response = ops.post(path, data={"csrf_token": token})
        assert response.status_code == 404, message_id
    assert "No such message to the vendor on this registration." in text_of(response.text)
    assert _stored(app, "msg_2Failed0000000000000000001").status == "failed"
    assert entries(app, mine, "operator") == [] and entries(app, other, "operator") == []


def test_send_again_without_the_csrf_token_is_refused(app, ops):
    (pk,) = seed(app)
    _failed(app, pk)
    response = ops.post(f"/operator/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend")
    assert response.status_code == 400
    assert _stored(app, "msg_2Failed0000000000000000001").status == "failed"
    assert entries(app, pk, "operator") == []


def test_a_signed_in_browser_cannot_skip_the_csrf_token_with_a_bearer_header_that_is_no_token(app, ops):
    """Only an operator's API token exempts a call from the CSRF token; any other bearer header is refused, even
    beside a signed-in session's cookie."""
    (pk,) = seed(app)
    _failed(app, pk)
    path = f"/operator/api/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend"
    for header in ("Bearer garbage", "Bearer pgo_not-a-token", "bearer "):
        response = ops.post(path, headers={"Authorization": header})
        assert response.status_code == 401 and response.get_json()["error"] == "Unauthorized", header
    assert _stored(app, "msg_2Failed0000000000000000001").status == "failed"
    assert entries(app, pk, "operator") == []


def test_the_api_lists_deliveries_and_sends_one_again(app, client, operator):
    (pk,) = seed(app)
    _failed(app, pk)
    bearer = _bearer(app)
    found = client.get(f"/operator/api/registrations/{pk}", headers=bearer).get_json()
    assert found["vendor_messages"] == [
        {
            "message_id": "msg_2Failed0000000000000000001",
            "type": "licence.updated",
            "status": "failed",
            "attempts": 12,
            "last_attempt_at": "2026-12-07T12:00:00Z",
            "last_status": 503,
            "last_answer": "Service Unavailable: down for maintenance",
            "next_attempt_at": None,
            "delivered_at": None,
        }
    ]
    assert "body-not-for-operators" not in json.dumps(found)
    path = f"/operator/api/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend"
    response = client.post(path, headers=bearer)
    assert response.status_code == 202
    assert response.get_json()["message_id"] == "msg_2Failed0000000000000000001"
    assert response.get_json()["status"] == "pending"
    assert _stored(app, "msg_2Failed0000000000000000001").status == "pending"
    assert [e.cause for e in entries(app, pk, "operator")] == ["operator support@vendor.example"]
    again = client.get(f"/operator/api/registrations/{pk}", headers=bearer).get_json()["vendor_messages"]
    assert (again[0]["message_id"], again[0]["status"], again[0]["attempts"]) == (
        "msg_2Failed0000000000000000001",
        "pending",
        0,
    )
    missing = client.post(f"/operator/api/registrations/{pk}/vendor-messages/msg_nope/resend", headers=bearer)
    assert missing.status_code == 404 and missing.get_json()["error"] == "Not Found"


def test_a_signed_out_caller_cannot_send_again(app, client, operator):
    (pk,) = seed(app)
    _failed(app, pk)
    token = csrf_token(client)
    page = client.post(
        f"/operator/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend",
        data={"csrf_token": token},
    )
    assert page.status_code == 302 and page.headers["Location"].startswith("/operator/sign-in")
    api = client.post(
        f"/operator/api/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend",
        data={"csrf_token": token},
    )
    assert api.status_code == 401 and api.get_json()["error"] == "Unauthorized"
    wrong = client.post(
        f"/operator/api/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend",
        headers={"Authorization": "Bearer pgo_not-a-token"},
    )
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "Unauthorized"
    assert client.get(f"/operator/api/registrations/{pk}").status_code == 401
    assert _stored(app, "msg_2Failed0000000000000000001").status == "failed"
    assert entries(app, pk, "operator") == []


def test_the_message_sent_again_is_delivered_after_the_answer(app, ops, monkeypatch):
    (pk,) = seed(app)
    _failed(app, pk)
    asked = []
    monkeypatch.setattr(app.config["SETTINGS"], "vendor_webhook_url", "https://vendor.example/events")  # one to send to
    monkeypatch.setattr(vendor_outbox, "deliver_due", lambda **kwargs: asked.append(kwargs))
    token = csrf_token(ops, f"/operator/registrations/{pk}")
    ops.post(
        f"/operator/registrations/{pk}/vendor-messages/msg_2Failed0000000000000000001/resend",
        data={"csrf_token": token},
    )
    assert asked == [
        {"licence_pks": {None}, "first_tries": True, "budget": vendor_outbox.AFTER_ANSWER_BUDGET}
    ]  # a message without a licence: its own
