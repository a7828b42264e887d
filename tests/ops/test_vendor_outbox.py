"""The outbox's sender: messages for the vendor's systems delivered to a real local endpoint, signed as Standard
Webhooks, in order per licence, retried with the same id, given up (and an operator told) after the 12th try."""

import logging
import threading
import time
from datetime import timedelta

import pytest
from flask import g
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook

from paygate.core.db import db, utcnow
from paygate.core.models import Registration, TimelineEntry, VendorMessage
from paygate.gateways import vendor_webhooks
from paygate.ops import vendor_outbox, worker
from paygate.web.after_answer import after_answer
from tests.helpers.apps import make_app
from tests.helpers.vendor import SECRET, Receiver, messages, row


@pytest.fixture
def receiver():
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()


def _app(database_url, receiver):
    app = make_app(database_url, vendor_webhook_url=receiver.url + "/events", vendor_webhook_secret=SECRET)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(database_url, receiver):
    yield from _app(database_url, receiver)


def deliver(app, now=None, **kwargs) -> dict:
    with app.app_context():
        return vendor_outbox.deliver_due(now, **kwargs)


def test_a_message_is_delivered_once_signed_with_its_id(app, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    [(_, [message_id])] = messages(app).items()
    before = int(time.time())

    assert deliver(app) == {"delivered": 1, "failed_tries": 0, "gave_up": 0}

    [delivery] = receiver.deliveries
    assert receiver.forged == []
    assert delivery.id == message_id and delivery.body == row(app, message_id).payload.encode()
    assert before <= delivery.timestamp <= int(time.time())
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert "paygate" in delivery.headers["user-agent"]
    assert Webhook(SECRET).verify(delivery.body, delivery.headers)["type"] == "licence.updated"
    sent = row(app, message_id)
    assert (sent.status, sent.attempts, sent.last_status, sent.last_answer) == ("delivered", 1, 200, "ok")
    assert sent.delivered_at is not None and sent.claimed_until is None
    # Delivered is done: nothing is sent again.
    assert deliver(app)["delivered"] == 0 and len(receiver.deliveries) == 1
    assert SECRET not in caplog.text and SECRET.removeprefix("whsec_") not in caplog.text


def test_a_licences_messages_wait_for_its_first_and_arrive_in_order(app, receiver):
    written = messages(app, licences=2, per_licence=3)
    (first, second) = written.values()
    receiver.plan[first[0]] = [500, 503]
    t0 = utcnow()

    assert deliver(app, t0) == {"delivered": 3, "failed_tries": 1, "gave_up": 0}
    assert receiver.accepted() == second  # the other licence goes on, in its order
    failed = row(app, first[0])
    assert (failed.status, failed.attempts, failed.last_status) == ("pending", 1, 500)
    assert failed.next_attempt_at == t0 + timedelta(seconds=5) and failed.last_answer == "try again later"
    assert deliver(app, t0 + timedelta(seconds=4))["failed_tries"] == 0  # its retry is not due yet
    assert [row(app, m).status for m in first[1:]] == ["pending", "pending"]

    time.sleep(1.05)  # a later second: the next try's timestamp is a new one
    assert deliver(app, t0 + timedelta(seconds=5)) == {"delivered": 0, "failed_tries": 1, "gave_up": 0}
    assert row(app, first[0]).next_attempt_at == t0 + timedelta(seconds=5) + timedelta(minutes=5)
    assert deliver(app, t0 + timedelta(minutes=6))["delivered"] == 3

    assert [d for d in receiver.ids() if d in first] == [first[0]] * 3 + first[1:]
    tries = [d for d in receiver.deliveries if d.id == first[0]]
    assert len({d.timestamp for d in tries}) >= 2  # a fresh timestamp (and signature) per try, the same id
    assert len({d.headers["webhook-signature"] for d in tries}) >= 2 and receiver.forged == []
    assert {d.body for d in tries} == {row(app, first[0]).payload.encode()}


def test_after_an_outage_everything_is_delivered(app, receiver):
    written = messages(app, licences=2, per_licence=2)
    receiver.stop()
    t0 = utcnow()

    assert deliver(app, t0) == {"delivered": 0, "failed_tries": 2, "gave_up": 0}
    down = row(app, written[next(iter(written))][0])
    assert (down.last_status, down.last_answer) == (None, "could not reach the endpoint: connection refused")

    receiver.start_again()
    assert deliver(app, t0 + timedelta(seconds=5))["delivered"] == 4
    assert sorted(receiver.accepted()) == sorted(m for ids in written.values() for m in ids)


def test_the_twelfth_failure_gives_up_tells_an_operator_and_lets_the_licence_go_on(app, receiver, caplog):
    [(_, (doomed, later))] = messages(app, per_licence=2).items()
    receiver.plan[doomed] = [503] * 12
    at = utcnow()
    for number, delay in enumerate((*vendor_outbox.DELAYS, None), start=1):
        counts = deliver(app, at)
        assert counts["failed_tries"] == 1, number
        if delay is not None:
            assert row(app, doomed).status == "pending" and receiver.accepted() == []
            at += delay
    assert at - utcnow() > timedelta(days=3, hours=5)  # the last try comes more than 3 days after the first

    assert counts == {"delivered": 1, "failed_tries": 1, "gave_up": 1}
    assert receiver.ids().count(doomed) == 12 and receiver.accepted() == [later]
    given_up = row(app, doomed)
    assert (given_up.status, given_up.attempts, given_up.last_status) == ("failed", 12, 503)
    with app.app_context():
        reg = db.session.get(Registration, given_up.registration_pk)
        assert vendor_outbox.GAVE_UP in reg.attention.split(",")
        [entry] = db.session.query(TimelineEntry).filter_by(registration_pk=reg.id, kind="vendor").all()
        assert doomed in entry.message
    assert any(r.levelno == logging.ERROR and vendor_outbox.GAVE_UP in r.getMessage() for r in caplog.records)
    assert deliver(app, at + timedelta(days=30))["failed_tries"] == 0  # given up is given up


def test_messages_nobody_delivered_after_the_answer_go_with_the_next_worker_pass(app, receiver):
    written = messages(app, licences=3, per_licence=2, without_licence=1)  # committed, then the process died

    with app.app_context():
        result = worker.run_once()

    assert (result["vendor_delivered"], result["vendor_failed_tries"]) == (7, 0)
    assert sorted(receiver.accepted()) == sorted(m for ids in written.values() for m in ids)


def test_a_redirect_is_not_followed(app, receiver):
    target = Receiver()
    try:
        [(_, [message_id])] = messages(app).items()
        receiver.plan[message_id] = [("redirect", target.url + "/elsewhere?token=abc")]

        assert deliver(app)["failed_tries"] == 1
        assert target.deliveries == []
        failed = row(app, message_id)
        assert failed.status == "pending" and failed.last_status == 302
        assert failed.last_answer == f"redirect to {target.url}/elsewhere not followed"
    finally:
        target.stop()


@pytest.mark.parametrize("answer", [("slow", 3), ("trickle", 3)], ids=["no-answer", "answer-too-slow"])
def test_an_endpoint_slower_than_the_timeout_has_failed(app, receiver, monkeypatch, answer):
    monkeypatch.setattr(vendor_webhooks, "TIMEOUT", 1.0)
    [(_, [message_id])] = messages(app).items()
    receiver.plan[message_id] = [answer]

    started = time.monotonic()
    assert deliver(app) == {"delivered": 0, "failed_tries": 1, "gave_up": 0}
    assert time.monotonic() - started < 2.5
    failed = row(app, message_id)
    assert failed.status == "pending" and failed.last_status is None and "within 1 s" in failed.last_answer


def test_a_huge_answer_is_read_no_further_than_64_kib(app, receiver, monkeypatch):
    read = []
    real = vendor_webhooks._read
    monkeypatch.setattr(vendor_webhooks, "_read", lambda *a: read.append(real(*a)) or read[-1])
    [(_, [message_id])] = messages(app).items()
    receiver.plan[message_id] = [("big", 10 * 1024 * 1024)]

    assert deliver(app)["delivered"] == 1
    assert [(len(data), ended) for data, _, ended in read] == [(vendor_webhooks.MAX_ANSWER, False)]
    assert row(app, message_id).last_answer == "x" * 300
    for _ in range(50):
        if receiver.written:
            break
        time.sleep(0.1)
    assert receiver.written and receiver.written[0] < 10 * 1024 * 1024  # the sender hung up


def test_a_delivered_message_sent_again_keeps_its_id(app, receiver):
    [(_, [message_id])] = messages(app).items()
    deliver(app)
    with app.app_context():
        assert vendor_outbox.resend(row(app, message_id).id, "operator@example.com")
        db.session.commit()

    assert deliver(app)["delivered"] == 1
    assert receiver.accepted() == [message_id, message_id]
    assert row(app, message_id).attempts == 1


def test_a_message_sent_again_waits_while_a_newer_one_of_its_licence_is_being_sent(app, receiver):
    """An operator's resend never races a newer message of the same licence to the vendor."""
    [(_, [older, newer])] = messages(app, per_licence=2).items()
    deliver(app)
    with app.app_context():
        db.session.execute(  # the newer one is being sent again by another sender right now
            update(VendorMessage)
            .where(VendorMessage.message_id == newer)
            .values(status="pending", claimed_until=utcnow() + timedelta(seconds=60))
        )
        assert vendor_outbox.resend(row(app, older).id, "operator@example.com")
        db.session.commit()
    assert deliver(app)["delivered"] == 0  # neither: the older waits for the newer's try to end
    with app.app_context():
        db.session.execute(update(VendorMessage).where(VendorMessage.message_id == newer).values(claimed_until=None))
        db.session.commit()
    assert deliver(app)["delivered"] == 2
    assert receiver.accepted() == [older, newer, older, newer]


def test_a_call_stops_claiming_when_its_time_is_up(app, receiver):
    """A worker pass or an answer's after-work is not held by the outbox: what is left waits for the next."""
    written = messages(app, licences=3)
    assert deliver(app, budget=0)["delivered"] == 0
    assert receiver.accepted() == []
    assert deliver(app, first_tries=True, budget=60)["delivered"] == 3
    assert sorted(receiver.accepted()) == sorted(i for ids in written.values() for i in ids)


def test_without_an_endpoint_nothing_is_sent(database_url, receiver):
    app = make_app(database_url)
    messages(app)
    try:
        assert deliver(app) == {"delivered": 0, "failed_tries": 0, "gave_up": 0}
        assert receiver.deliveries == []
    finally:
        with app.app_context():
            db.engine.dispose()


def test_what_a_request_wrote_is_delivered_after_its_answer(app, receiver):
    written = messages(app, licences=2)
    (mine, theirs) = written

    @app.get("/_test/changed")
    def changed():
        g.vendor_messages_written = {mine}
        return "changed"

    @app.get("/_test/later")
    def later():
        def work():
            g.vendor_messages_written = {theirs}

        return after_answer(app.make_response("later"), work)

    client = app.test_client()
    assert client.get("/_test/changed").text == "changed"
    assert receiver.accepted() == written[mine]  # the request's licence only
    assert client.get("/_test/later").text == "later"
    assert receiver.accepted() == written[mine] + written[theirs]


def test_two_senders_at_once_deliver_every_message_once_in_order(pg_url, receiver):
    app = next(_app(pg_url, receiver))
    written = messages(app, licences=20, per_licence=10)
    start, totals, errors = threading.Barrier(2), [], []

    def sender():
        try:
            with app.app_context():
                start.wait()
                totals.append(vendor_outbox.deliver_due())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == [] and sum(t["delivered"] for t in totals) == 200
    received = receiver.accepted()
    assert len(received) == len(set(received)) == 200
    for ids in written.values():
        assert [m for m in received if m in ids] == ids
    with app.app_context():
        db.engine.dispose()
