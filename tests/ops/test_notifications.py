"""Notifications to operators: one row per registration and reason, written with the change, e-mailed after the
commit to a real SMTP server (text and HTML, a link to the registration, nothing secret), retried while the server
is down, sent by the next pass when a sender died after its claim, and nothing at all while unset."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from paygate.core import notifications
from paygate.core.config import ConfigError, load_settings
from paygate.core.db import db, utcnow
from paygate.core.models import Notification, Registration, State
from paygate.core.registrations import record, transition
from paygate.ops import notify_outbox, vendor_outbox, worker
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.licences import buy
from tests.helpers.smtp import Mailbox
from tests.helpers.vendor import SECRET, messages
from tests.helpers.webhooks import send

PASSWORD = "smtp-pass-never-in-mail"
TO = "ops@tools.example, oncall@tools.example"


@pytest.fixture
def mailbox():
    box = Mailbox("paygate", PASSWORD)
    yield box
    box.stop()


def _app(database_url, mailbox, **settings):
    app = make_app(
        database_url,
        smtp_url=mailbox.url(f"smtp://paygate:{PASSWORD}@"),
        notify_emails=TO,
        vendor_webhook_url="http://127.0.0.1:9/events",  # nobody listens: every try fails
        vendor_webhook_secret=SECRET,
        **settings,
    )
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(database_url, mailbox):
    yield from _app(database_url, mailbox)


def _registration(app, state=State.PAID) -> int:
    with app.app_context():
        reg = Registration(
            registration_id=f"R-{utcnow().timestamp()}",
            flow_token="flow-token-of-the-admin-secret",
            state=state.value,
            lms_url="https://lms.school.example",
            lms_family="moodle",
            payer_name="Springfield School",
            price_id="price_registration",
            amount=4900,
            currency="usd",
            platform_id="P-1",
        )
        db.session.add(reg)
        db.session.commit()
        return reg.id


def _needs_attention(app, pk) -> bool:
    with app.app_context():
        reg = db.session.get(Registration, pk)
        taken = transition(
            reg,
            State.NEEDS_ATTENTION,
            cause="test",
            expect={State.PAID},
            message="LTIaaS refused the completion: platform already registered.",
            attention="completion_refused",
        )
        db.session.commit()
        return taken


def _rows(app):
    with app.app_context():
        rows = db.session.scalars(select(Notification).order_by(Notification.id)).all()
        db.session.expunge_all()
        return rows


def _send(app, now=None, **kwargs):
    with app.app_context():
        return notify_outbox.send_due(now, **kwargs)


def _secrets_absent(raw: bytes):
    for secret in (PASSWORD, "flow-token-of-the-admin-secret", SECRET, BASE_CONFIG["ltiaas_api_key"]):
        assert secret.encode() not in raw


def test_a_registration_needing_attention_is_emailed_once_with_its_reason_and_link(app, mailbox):
    pk = _registration(app)
    assert _needs_attention(app, pk)
    with app.app_context():  # the same reason again: no second row
        record(db.session.get(Registration, pk), "note", cause="test", message="again", attention="completion_refused")
        db.session.commit()
    [row] = _rows(app)
    assert (row.reason, row.status) == ("attention:completion_refused", "pending")

    assert _send(app) == {"sent": 1, "failed_tries": 0, "gave_up": 0}
    assert _send(app)["sent"] == 0
    [mail] = mailbox.messages
    assert mailbox.logins == ["paygate"]
    assert mail["To"] == "ops@tools.example, oncall@tools.example"
    assert "needs attention: completion_refused" in mail["Subject"]
    assert mail["Message-ID"] == f"<notification-{row.id}@paygate.test>"
    text, html = mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()
    link = f"http://paygate.test/operator/registrations/{pk}"
    for body in (text, html):
        assert link in body and "completion_refused" in body and "Springfield School" in body
    assert "LTIaaS refused the completion" in text
    _secrets_absent(mailbox.raw[0])
    assert _rows(app)[0].status == "sent"


def test_a_dispute_mails_its_deadline_and_is_not_sent_again_as_attention(app, mailbox):
    pk = _registration(app, State.COMPLETED)
    due = utcnow().replace(microsecond=0) + timedelta(days=7)
    with app.app_context():
        reg = db.session.get(Registration, pk)
        for _ in range(2):  # Stripe says it twice (created, updated)
            record(reg, "licence", cause="test", message="Dispute du_1 opened", attention="disputed")
            notifications.dispute_opened(reg, "du_1", "needs_response", due)
        db.session.commit()
    assert [r.reason for r in _rows(app)] == ["dispute_opened:du_1"]
    _send(app)
    [mail] = mailbox.messages
    assert f"{due:%Y-%m-%d %H:%M} UTC" in mail["Subject"]
    assert f"{due:%Y-%m-%d %H:%M} UTC" in mail.get_body(("html",)).get_content()
    _secrets_absent(mailbox.raw[0])


def test_ltiaas_not_told_and_a_vendor_message_given_up_are_emailed(app, mailbox):
    pk = _registration(app, State.COMPLETED)
    with app.app_context():
        notifications.access_untold(db.session.get(Registration, pk), True, "LTIaaS answered 503")
        db.session.commit()
    [(_, [message_id])] = messages(app).items()
    with app.app_context():
        db.session.execute(update(vendor_outbox.VendorMessage).values(attempts=vendor_outbox.TRIES - 1))
        db.session.commit()
        assert vendor_outbox.deliver_due()["gave_up"] == 1
    assert sorted(r.reason for r in _rows(app)) == ["access_untold", "vendor_webhook_failed"]
    assert _send(app)["sent"] == 2
    subjects = sorted(m["Subject"] for m in mailbox.messages)
    assert "LTIaaS cannot be told" in subjects[0] and "vendor's systems did not take" in subjects[1]
    assert any(message_id in m.get_body(("plain",)).get_content() for m in mailbox.messages)
    for raw in mailbox.raw:
        _secrets_absent(raw)


def test_a_server_down_is_retried_with_backoff_and_the_mail_arrives_once(app, mailbox):
    pk = _registration(app)
    _needs_attention(app, pk)
    mailbox.stop()
    t0 = utcnow()
    assert _send(app, t0) == {"sent": 0, "failed_tries": 1, "gave_up": 0}
    [row] = _rows(app)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "connection refused")
    assert row.next_attempt_at == t0 + notify_outbox.DELAYS[0]
    assert _send(app, t0 + timedelta(seconds=1))["failed_tries"] == 0  # not due yet
    mailbox.start_again()
    assert _send(app, t0 + notify_outbox.DELAYS[0])["sent"] == 1
    assert len(mailbox.messages) == 1 and _rows(app)[0].attempts == 2


def test_the_last_failed_try_gives_up_with_an_error_in_the_log(app, mailbox, caplog):
    pk = _registration(app)
    _needs_attention(app, pk)
    mailbox.stop()
    with app.app_context():
        db.session.execute(update(Notification).values(attempts=notify_outbox.TRIES - 1))
        db.session.commit()
    assert _send(app)["gave_up"] == 1
    assert _rows(app)[0].status == "failed"
    assert any(r.levelname == "ERROR" and "given up" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text
    mailbox.start_again()


def test_a_sender_that_died_after_its_claim_leaves_it_to_the_next_pass_once(app, mailbox):
    pk = _registration(app)
    _needs_attention(app, pk)
    with app.app_context():
        _, [_claimed] = notify_outbox._claim(utcnow(), 5)
    assert _send(app)["sent"] == 0  # its lease runs: nobody else sends it
    with app.app_context():  # the lease runs out
        db.session.execute(update(Notification).values(claimed_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert _send(app)["sent"] == 1
    assert len(mailbox.messages) == 1


def test_the_worker_pass_sends_what_is_due(app, mailbox):
    _needs_attention(app, _registration(app))
    with app.app_context():
        result = worker.run_once()
    assert result["notify_sent"] == 1 and len(mailbox.messages) == 1


@pytest.mark.parametrize("unset", ["smtp_url", "notify_emails"])
def test_nothing_is_written_while_unset(database_url, mailbox, unset):
    settings = {"smtp_url": None} if unset == "smtp_url" else {"smtp_url": None, "notify_emails": TO}
    app = make_app(database_url, **settings)
    try:
        assert _needs_attention(app, _registration(app))
        assert _rows(app) == []
        with app.app_context():
            assert notify_outbox.send_due() == {"sent": 0, "failed_tries": 0, "gave_up": 0}
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.postgres
def test_concurrent_events_on_postgresql_write_one_and_send_one(pg_url, mailbox):
    app = next(_app(pg_url, mailbox))
    pk = _registration(app)
    barrier = threading.Barrier(4)

    def event():
        with app.app_context():
            reg = db.session.get(Registration, pk)
            barrier.wait()
            notifications.dispute_opened(reg, "du_9", "needs_response", None)
            db.session.commit()

    threads = [threading.Thread(target=event) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_rows(app)) == 1
    senders = [threading.Thread(target=_send, args=(app,)) for _ in range(3)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert len(mailbox.messages) == 1


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"smtp_url": "http://mail.example", "notify_emails": "a@tools.example"}, "SMTP_URL is malformed"),
        ({"smtp_url": f"smtp://u:{PASSWORD}@mail.example:99999", "notify_emails": "a@tools.example"}, "SMTP_URL"),
        ({"smtp_url": "smtps://mail.example", "notify_emails": "not an address"}, "NOTIFY_EMAILS is malformed"),
        ({"smtp_url": "smtp://mail.example"}, "NOTIFY_EMAILS is required"),
    ],
)
def test_settings_are_checked_without_repeating_the_password(settings, error):
    with pytest.raises(ConfigError) as refused:
        load_settings({**BASE_CONFIG, **settings})
    assert error in str(refused.value) and PASSWORD not in str(refused.value)


def test_settings_that_parse():
    settings = load_settings({**BASE_CONFIG, "smtp_url": "smtps://u%40x:p%3Aw@mail.example", "notify_emails": TO})
    assert settings.notify_emails == TO


def test_a_dispute_stripe_reports_is_emailed_with_its_deadline(app, client, stripe_api, ltiaas_api, mailbox):
    """Through the webhook as Stripe sends it, not the writer alone: one e-mail, however often Stripe says it."""
    pk, session = buy(client, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session["payment_intent"])
    for _ in range(2):
        send(client, stripe_api, "charge.dispute.created", dispute)
    assert [r.reason for r in _rows(app)] == [f"dispute_opened:{dispute['id']}"]
    _send(app)
    [mail] = mailbox.messages
    assert "evidence" in mail.get_body(("plain",)).get_content().lower()
    assert f"/operator/registrations/{pk}" in mail.get_body(("html",)).get_content()
