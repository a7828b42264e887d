"""The local stand-in for the vendor's systems: it verifies each event's Standard Webhooks signature, lists what
arrived, fails deliveries on request, and asks the licence API as the vendor's tool would at a launch."""

import json
import re
from datetime import UTC, datetime

import pytest
import responses
from flask import Flask
from standardwebhooks.webhooks import Webhook

from paygate.standins import create_standins_blueprint
from tests.helpers.pages import text_of
from tests.standins.test_standins import BASE, make_settings

SECRET = "whsec_" + "c2VjcmV0LW9mLXRoZS12ZW5kb3Itc3RhbmQtaW4tdGVzdHM="
TOKEN = "licence-api-token-of-the-stand-in-tests-0001"
EVENTS = "/_local/vendor/events"


def _settings():
    return make_settings(vendor_webhook_url=BASE + EVENTS, vendor_webhook_secret=SECRET, licence_api_token=TOKEN)


@pytest.fixture
def vendor_web():
    app = Flask(__name__)
    app.register_blueprint(create_standins_blueprint(_settings()))
    return app.test_client()


def _body(message_type="registration.completed", registration_id="reg-1"):
    data = {"registration_id": registration_id, "platform_id": "plat-1"}
    return json.dumps({"type": message_type, "timestamp": "2026-12-07T12:00:00Z", "data": data}, separators=(",", ":"))


def _send(web, message_id, body, secret=SECRET):
    """One delivery as the service's sender makes it: signed over id, this try's timestamp and the body."""
    now = datetime.now(UTC)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
        "content-type": "application/json",
    }
    return web.post(EVENTS, data=body.encode(), headers=headers)


def _rows(web) -> list[str]:
    page = web.get("/_local/vendor")
    assert page.status_code == 200
    return [text_of(row) for row in re.findall(r'<tr class="delivery">(.*?)</tr>', page.text, re.S)]


def _column(web, name) -> list[str]:
    """One column of the deliveries table, newest first."""
    return re.findall(rf'<td class="{name}">([^<]*)</td>', web.get("/_local/vendor").text)


def test_a_correctly_signed_message_is_listed_as_verified(vendor_web):
    answer = _send(vendor_web, "msg_first", _body("licence.updated", "reg-42"))
    assert answer.status_code == 204
    (row,) = _rows(vendor_web)
    assert row.startswith("msg_first licence.updated")
    assert "signature verified" in row and "refused" not in row
    assert '"registration_id": "reg-42"' in row  # the body, pretty
    assert _column(vendor_web, "answered") == ["204"]


def test_a_wrong_signature_is_refused_and_listed_as_refused(vendor_web):
    other = "whsec_" + "b3RoZXItc2VjcmV0LW5vdC10aGUtdmVuZG9ycy1vd24tMDAx"
    answer = _send(vendor_web, "msg_forged", _body(), secret=other)
    assert answer.status_code == 400
    unsigned = vendor_web.post(EVENTS, data=_body().encode(), headers={"webhook-id": "msg_unsigned"})
    assert unsigned.status_code == 400
    rows = _rows(vendor_web)
    assert rows[0].startswith("msg_unsigned") and "refused: Missing required headers" in rows[0]
    assert rows[1].startswith("msg_forged") and "refused: No matching signature found" in rows[1]
    assert not any("signature verified" in row for row in rows)


def test_a_repeated_id_counts_each_arrival(vendor_web):
    assert _send(vendor_web, "msg_again", _body()).status_code == 204
    assert _send(vendor_web, "msg_other", _body()).status_code == 204
    assert _send(vendor_web, "msg_again", _body()).status_code == 204
    assert [r.split()[0] for r in _rows(vendor_web)] == ["msg_again", "msg_other", "msg_again"]
    assert _column(vendor_web, "times") == ["2", "1", "1"]


def test_the_fail_dial_answers_503_that_many_times(vendor_web):
    set_dial = vendor_web.post("/_local/vendor/fail", data={"n": "2"})
    assert set_dial.status_code == 303
    assert "2 more will fail" in text_of(vendor_web.get("/_local/vendor").text)
    statuses = [_send(vendor_web, "msg_retried", _body()).status_code for _ in range(3)]
    assert statuses == [503, 503, 204]
    assert _column(vendor_web, "times") == ["3", "2", "1"]  # the same id, each try
    assert _column(vendor_web, "answered") == ["204", "503", "503"]
    assert "more will fail" not in text_of(vendor_web.get("/_local/vendor").text)
    assert vendor_web.post("/_local/vendor/fail", data={"n": "many"}).status_code == 400


def test_asking_the_licence_api_shows_its_answer_and_never_the_token(vendor_web):
    licence = {"platform_id": "plat/1", "status": "active"}
    with responses.RequestsMock() as rsps:
        asked = rsps.get(BASE + "/api/v1/platforms/plat%2F1/licence", json={"licence": licence})
        page = vendor_web.post("/_local/vendor/ask", data={"platform_id": "plat/1"})
    assert page.status_code == 200
    assert asked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    words = text_of(page.text)
    assert "GET http://svc.test/api/v1/platforms/plat%2F1/licence → 200" in words
    assert '"status": "active"' in words
    assert TOKEN not in page.text
    with responses.RequestsMock() as rsps:
        rsps.get(BASE + "/api/v1/platforms/unknown/licence", status=404, json={"error": "Not Found"})
        missing = vendor_web.post("/_local/vendor/ask", data={"platform_id": "unknown"})
    assert "→ 404" in text_of(missing.text)


def test_the_deliveries_survive_a_restart(tmp_path):
    def start():
        app = Flask(__name__)
        app.register_blueprint(create_standins_blueprint(_settings(), state_dir=str(tmp_path)))
        return app.test_client()

    assert _send(start(), "msg_kept", _body()).status_code == 204
    assert (tmp_path / "standin-vendor.json").exists()
    (row,) = _rows(start())
    assert row.startswith("msg_kept") and "signature verified" in row
