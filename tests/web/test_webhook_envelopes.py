"""A signed event is still checked before it is used: an envelope of the wrong shape (an id or type that is no short
printable string, data that is no object, JSON nested without end, a body that is no JSON object) is acknowledged
as malformed (2xx: Stripe's retries would bring the same bytes), logged in one line, and changes nothing, on
SQLite and on PostgreSQL. Fields an event may carry in odd shapes (metadata, an invoice's parent) count as absent.
A chunked body whose framing is broken is a 400 in one sentence, never a 5xx."""

import hashlib
import hmac
import json
import logging
import re
import socket
import time

import pytest
import stripe
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import Registration, StripeEvent
from tests.helpers.servers import serving

SECRET_MARK = "sk_live_do_not_log_me"


def open_frame(client, ltiaas_api):
    registration_id = ltiaas_api.add()
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    return registration_id, token


def signed_raw(stripe_api, payload: bytes) -> dict:
    header = stripe.WebhookSignature.generate_signature_header(
        payload.decode("utf-8", "surrogateescape"), stripe_api.config["stripe_webhook_secret"]
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def post(client, stripe_api, payload: bytes):
    return client.post("/webhooks/stripe", data=payload, headers=signed_raw(stripe_api, payload))


@pytest.fixture
def paid_not_told(client, stripe_api, ltiaas_api):
    """A registration whose Checkout Session is paid at Stripe, with no event delivered yet: an event that
    were applied would make it paid. Returns (registration id, a valid checkout.session.completed event)."""
    registration_id, token = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    event = stripe_api.event("checkout.session.completed", session_id)
    event["data"]["object"]["metadata"]["note"] = SECRET_MARK
    return registration_id, event


def seen(app) -> tuple:
    with app.app_context():
        reg = db.session.scalars(select(Registration)).one()
        events = db.session.scalar(select(func.count()).select_from(StripeEvent))
        return reg.state, reg.payment_session_id, len(reg.timeline), reg.licence is None, events


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _drop(key):
    return lambda e: e.pop(key)


def _set(path, value):
    def change(event):
        *parents, last = path
        target = event
        for key in parents:
            target = target[key]
        target[last] = value

    return change


# Each shape: a change of a valid event (checkout.session.completed of a paid session) or a whole raw body.
ENVELOPES = {
    "id missing": _drop("id"),
    "id a list": _set(["id"], ["evt_1"]),
    "id a dict": _set(["id"], {"id": "evt_1"}),
    "id a number": _set(["id"], 12345),
    "id empty": _set(["id"], ""),
    "id over 255 characters": _set(["id"], "evt_" + "x" * 252),
    "id with a NUL": _set(["id"], "evt_\x00nul"),
    "id with a control character": _set(["id"], "evt_\x1b[31m"),
    "id with a line break": _set(["id"], "evt_1\nforged log line"),
    "id a lone surrogate": _set(["id"], "evt_\ud800"),
    "type missing": _drop("type"),
    "type a list": _set(["type"], ["checkout.session.completed"]),
    "type a dict": _set(["type"], {"checkout.session.completed": True}),
    "type with a NUL": _set(["type"], "checkout.session.completed\x00"),
    "type over 100 characters": _set(["type"], "checkout.session." + "x" * 100),
    "data missing": _drop("data"),
    "data a string": _set(["data"], "checkout.session"),
    "data a list": _set(["data"], [{"object": {"id": "cs_1"}}]),
    "data null": _set(["data"], None),
    "data.object missing": lambda e: e["data"].pop("object"),
    "data.object a list": _set(["data", "object"], [{"id": "cs_1"}]),
    "data.object a string": _set(["data", "object"], "cs_1"),
    "data.object without an id": lambda e: e["data"]["object"].pop("id"),
    "data.object id a list": _set(["data", "object", "id"], ["cs_1"]),
    "data.object id with a NUL": _set(["data", "object", "id"], "cs_test_\x00"),
    "data.object id over 255 characters": _set(["data", "object", "id"], "cs_test_" + "x" * 250),
}
RAW_BODIES = {
    "JSON nested 5,000 deep": lambda e: json.dumps(e).replace('"note": ', '"note": ' + nested(5000) + ', "x": ', 1),
    "JSON nested 65 deep": lambda e: json.dumps(e).replace('"note": ', '"note": ' + nested(65) + ', "x": ', 1),
    "body a JSON list": lambda e: json.dumps([e]),
    "body a JSON string": lambda e: json.dumps(json.dumps(e)),
    "body no JSON": lambda e: json.dumps(e)[:-1],
    "body with a NUL byte": lambda e: json.dumps(e).replace(", ", ",\x00", 1),
}


def _payload(event, shape) -> bytes:
    if shape in RAW_BODIES:
        return RAW_BODIES[shape](event).encode()
    ENVELOPES[shape](event)
    return json.dumps(event).encode()


@pytest.mark.parametrize("shape", list(ENVELOPES) + list(RAW_BODIES))
def test_a_signed_malformed_envelope_is_acknowledged_logged_once_and_changes_nothing(
    app, client, stripe_api, ltiaas_api, paid_not_told, caplog, shape
):
    _, event = paid_not_told
    before = seen(app)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        response = post(client, stripe_api, _payload(event, shape))
    assert response.status_code == 200, response.text
    assert response.get_json() == {"received": True, "result": "malformed"}
    assert seen(app) == before
    assert ltiaas_api.complete_calls == []
    warnings = [r for r in caplog.records if r.name == "paygate.web.webhooks" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "malformed" in line and "\n" not in line and "\x00" not in line and "\x1b" not in line
    assert not any(SECRET_MARK in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_a_body_that_is_not_utf8_changes_nothing(app, client, stripe_api, paid_not_told):
    _, event = paid_not_told
    before = seen(app)
    payload = json.dumps(event).replace('"note": "', '"note": "\xff', 1).encode("latin-1")
    timestamp = int(time.time())
    mac = hmac.new(b"whsec_test_secret", b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
    response = client.post("/webhooks/stripe", data=payload, headers={"Stripe-Signature": f"t={timestamp},v1={mac}"})
    assert response.status_code in (200, 400), response.text  # Stripe's own check may refuse it first
    assert response.status_code == 400 or response.get_json() == {"received": True, "result": "malformed"}
    assert seen(app) == before


# Fields whose odd shape means "absent": the event is about nothing of ours.


def _invoice_event(stripe_api, registration_id, pk, **changes):
    obj = {
        "id": "in_forged",
        "object": "invoice",
        "status": "paid",
        "parent": None,
        "metadata": {"registration_pk": str(pk), "registration_id": registration_id},
        **changes,
    }
    return stripe_api.object_event("invoice.paid", obj)


ODD_FIELDS = {
    "invoice metadata a list": ("invoice", {"metadata": [["registration_pk", "1"]]}, "foreign invoice"),
    "invoice metadata a string": ("invoice", {"metadata": "registration_pk=1"}, "foreign invoice"),
    "invoice parent a string": ("invoice", {"parent": "sub_1", "metadata": None}, "foreign invoice"),
    "invoice parent a list": ("invoice", {"parent": ["sub_1"], "metadata": None}, "foreign invoice"),
    "invoice subscription_details a string": (
        "invoice",
        {"parent": {"subscription_details": "sub_1"}, "metadata": None},
        "foreign invoice",
    ),
    "invoice parent metadata a list": (
        "invoice",
        {"parent": {"subscription_details": {"subscription": None, "metadata": [1, 2]}}, "metadata": None},
        "foreign invoice",
    ),
    "invoice subscription with a NUL": (
        "invoice",
        {"parent": {"subscription_details": {"subscription": "sub_\x00", "metadata": None}}, "metadata": None},
        "foreign invoice",
    ),
    "registration_pk past any integer": (
        "invoice",
        {"metadata": {"registration_pk": "99999999999999999999", "registration_id": "x"}},
        "foreign invoice",
    ),
    "registration_pk in other digits": (
        "invoice",
        {"metadata": {"registration_pk": "\u0661", "registration_id": "x"}},
        "foreign invoice",
    ),
    "subscription metadata a list": ("subscription", {"metadata": ["registration_pk"]}, "foreign subscription"),
    "charge payment_intent a list": ("charge", {"payment_intent": ["pi_1"]}, "foreign payment"),
    "refund payment_intent a dict of a list": ("refund", {"payment_intent": {"id": ["pi_1"]}}, "foreign payment"),
}


@pytest.mark.parametrize("shape", list(ODD_FIELDS))
def test_an_odd_field_counts_as_absent(app, client, stripe_api, ltiaas_api, shape):
    registration_id, _ = open_frame(client, ltiaas_api)
    with app.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    kind, changes, expected = ODD_FIELDS[shape]
    if kind == "invoice":
        event = _invoice_event(stripe_api, registration_id, pk, **changes)
    elif kind == "subscription":
        event = stripe_api.object_event(
            "customer.subscription.deleted", {"id": "sub_forged", "object": "subscription", **changes}
        )
    elif kind == "charge":
        event = stripe_api.object_event("charge.refunded", {"id": "ch_forged", "object": "charge", **changes})
    else:
        event = stripe_api.object_event("refund.created", {"id": "re_forged", "object": "refund", **changes})
    before = seen(app)
    response = post(client, stripe_api, json.dumps(event).encode())
    assert response.status_code == 200, response.text
    assert response.get_json() == {"received": True, "result": expected}
    assert seen(app)[:4] == before[:4]


def test_the_longest_event_id_allowed_is_still_processed(app, client, stripe_api, ltiaas_api, paid_not_told):
    """255 characters, a known type: recorded, and its cause on the timeline fits."""
    registration_id, event = paid_not_told
    event["id"], event["type"] = "evt_" + "y" * 251, "checkout.session.async_payment_succeeded"
    response = post(client, stripe_api, json.dumps(event).encode())
    assert response.status_code == 200, response.text
    assert response.get_json() == {"received": True, "result": "paid"}
    assert ltiaas_api.complete_calls == [registration_id]


def test_nesting_up_to_the_bound_is_accepted(app, client, stripe_api, ltiaas_api, paid_not_told):
    _, event = paid_not_told
    event["data"]["object"]["metadata"]["deep"] = "x"
    payload = json.dumps(event).replace('"deep": "x"', '"deep": ' + nested(50), 1)
    response = post(client, stripe_api, payload.encode())
    assert response.status_code == 200, response.text
    assert response.get_json()["result"] == "paid"


# A chunked body with a broken chunk size, over a real socket (the test client does no chunked framing).


def _raw_post(port: int, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Transfer-Encoding: chunked\r\n{head}\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        body_out, data = b"", rest
        while data:
            size, _, data = data.partition(b"\r\n")
            size = int(size, 16)
            if size == 0:
                break
            body_out, data = body_out + data[:size], data[size + 2 :]
        rest = body_out
    return status, fields, rest


@pytest.mark.parametrize(
    "framing, expected",
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", 400),
        (b"-5\r\n{}\r\n0\r\n\r\n", 400),
        (b"2\r\n{}XX0\r\n\r\n", 400),
        (b"ffffffffffffffffffffff\r\n{}\r\n", 413),
    ],
    ids=["size no number", "size negative", "no line end", "size huge"],
)
def test_a_broken_chunked_body_is_a_4xx_in_one_sentence(app, stripe_api, framing, expected):
    with serving(app) as port:
        status, fields, body = _raw_post(
            port, framing, {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}
        )
    assert status == expected, body
    assert fields["content-type"].startswith("application/json")
    answer = json.loads(body)
    sentence = answer["message"]
    assert sentence.endswith(".") and ". " not in sentence
    if expected == 400:
        assert answer["error"] == "Bad Request" and "chunk" in sentence


def test_a_well_framed_chunked_event_is_delivered(app, stripe_api, ltiaas_api, paid_not_told):
    _, event = paid_not_told
    payload = json.dumps(event).encode()
    framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:100], payload[100:])) + b"0\r\n\r\n"
    with serving(app) as port:
        status, _, body = _raw_post(port, framed, signed_raw(stripe_api, payload))
    assert status == 200, body
    assert json.loads(body)["result"] == "paid"


def test_the_nesting_check_reads_a_hostile_body_once():
    """A signed body with a string that never closes and is full of escaped quotes: the nesting check must
    read it in one pass (a scan restarting at every quote took 20 s at 64 KB and would hold a worker, GIL and
    all, for an hour at the 1 MB limit, past gunicorn's timeout). In a process of its own, so that a scan
    that never ends can be stopped; the bound is a hang detector, not a speed target."""
    import subprocess
    import sys

    program = """
from paygate.gateways.payments.objects import MalformedEvent, parse_event
for body in (b'{"a":"' + b'\\\\"' * 100_000, b'{"a":"' + b'\\\\"' * 100_000 + b'\\\\', b'{"a":"' + b'"' * 200_000):
    try:
        parse_event(body)
        print("parsed")
    except MalformedEvent:
        print("malformed")
"""
    try:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the nesting check did not finish within 60 s")
    assert done.stdout.split() == ["malformed"] * 3, done.stderr
