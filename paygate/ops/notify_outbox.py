"""The outbox of notifications to operators (docs/architecture.md, invariant 12): sent here.

Notifications are written by paygate/core/notifications.py in the transaction of what they report. Whoever runs
the outbox (every worker pass; the request that wrote them, after its answer) sends them to NOTIFY_EMAILS, read at
send time, through the mail server of SMTP_URL (paygate/gateways/mail.py), retrying with backoff for about a day;
after the last try a notification is given up with an ERROR in the log.

As in paygate/ops/vendor_outbox.py, a sender claims a batch of due rows by a conditional UPDATE that sets its lease
(`claimed_until`), FOR UPDATE SKIP LOCKED on PostgreSQL; the claim is committed before sending and no transaction
spans a send; the outcome is recorded only while the lease is still the sender's own. A sender that dies mid-send
leaves a lease that runs out: the notification is sent by the next pass (the same Message-ID).
"""

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, or_, select, update

from paygate.core import telemetry
from paygate.core.db import db, utcnow
from paygate.core.models import Notification
from paygate.core.notify_config import notifying, parse_recipients, parse_smtp_url
from paygate.gateways import mail

log = logging.getLogger(__name__)

# The wait after each failed try: the first try at once, then these; the 10th try's failure (about 27 hours after
# the first) gives the notification up. Documented in the README.
DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=12),
)
TRIES = len(DELAYS) + 1
CLAIM_BATCH = 5
# A lease outlasts a whole batch even when every try waits its timeouts (connect, greeting, TLS, login, data).
LEASE = timedelta(seconds=CLAIM_BATCH * 8 * mail.TIMEOUT)
MAX_PER_CALL = 500
PASS_BUDGET = 30.0
AFTER_ANSWER_BUDGET = 10.0
COUNTS = ("sent", "failed_tries", "gave_up")


def send_due(
    now: datetime | None = None,
    stop: threading.Event | None = None,
    budget: float | None = None,
    first_tries: bool = False,
) -> dict:
    """Send every notification that is due (only those never tried, with `first_tries`), batch after batch until
    none is or `budget` seconds have gone; returns counts. Commits.

    `now` fixes the clock that decides what is due and when a retry is (tests); leases use the real time.
    Nothing is sent without SMTP_URL and NOTIFY_EMAILS: what was written waits for them."""
    counts: Counter = Counter(dict.fromkeys(COUNTS, 0))
    settings = current_app.config["SETTINGS"]
    if not notifying(settings):
        return dict(counts)
    server, recipients = parse_smtp_url(settings.smtp_url), parse_recipients(settings.notify_emails)
    from_ = mail.sender(server, settings.public_url)
    handled, started = 0, time.monotonic()
    while handled < MAX_PER_CALL and not (stop is not None and stop.is_set()):
        if budget is not None and time.monotonic() - started >= budget:
            break  # a mail server that hangs must not hold the worker's pass or a web thread
        until, rows = _claim(now or utcnow(), CLAIM_BATCH, first_tries)
        if not rows:
            break
        for row in rows:
            msg = mail.message(
                f"notification-{row.id}",
                row.subject,
                row.body_text,
                row.body_html,
                recipients,
                from_,
                settings.public_url,
            )
            _record(row, _try(server, msg, row.id), until, now or utcnow(), counts)  # a retry waits from the end
        handled += len(rows)
    db.session.commit()
    return dict(counts)


def _due(clock: datetime, first_tries: bool) -> tuple:
    """A notification a sender may claim at `clock`: pending, its retry due, no lease running (never tried, with
    `first_tries`)."""
    real_now = utcnow()
    conditions = (
        Notification.status == "pending",
        or_(Notification.next_attempt_at.is_(None), Notification.next_attempt_at <= clock),
        or_(Notification.claimed_until.is_(None), Notification.claimed_until < real_now),
    )
    return (*conditions, Notification.attempts == 0) if first_tries else conditions


def _claim(clock: datetime, limit: int, first_tries: bool = False):
    """Claim up to `limit` due notifications for this sender, oldest first; commits. Returns (the lease, rows)."""
    until = utcnow() + LEASE
    due = _due(clock, first_tries)
    # On PostgreSQL other senders skip the rows this one is claiming; SQLite: a plain select, the UPDATE decides.
    candidates = (
        select(Notification.id).where(*due).order_by(Notification.id).limit(limit).with_for_update(skip_locked=True)
    )
    rows = db.session.execute(
        update(Notification)
        .where(Notification.id.in_(candidates), *due)
        .values(claimed_until=until)
        .returning(
            Notification.id,
            Notification.registration_pk,
            Notification.reason,
            Notification.subject,
            Notification.body_text,
            Notification.body_html,
            Notification.attempts,
        )
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return until, sorted(rows, key=lambda row: row.id)


def _try(server, msg, pk: int) -> mail.Outcome:
    """One try of one notification, outside any transaction; never raises."""
    try:
        return mail.send(server, msg)
    except Exception:  # a bug, not the server: retried like any failed try
        log.exception("notification %s: the try failed unexpectedly", pk)
        return mail.Outcome(False, "the try failed on our side")


_TABLE = Notification.__table__
_MINE = (_TABLE.c.id == bindparam("pk"), _TABLE.c.claimed_until == bindparam("lease"))
_OUTCOME = (
    update(_TABLE)
    .where(*_MINE)
    .values(
        status=bindparam("status"),
        attempts=_TABLE.c.attempts + 1,
        claimed_until=None,
        next_attempt_at=bindparam("next_at"),
        last_error=bindparam("error"),
        sent_at=bindparam("sent_at"),
    )
)


def _record(row, outcome: mail.Outcome, until: datetime, clock: datetime, counts: Counter) -> None:
    """The try's outcome, where the lease is still this sender's; commits."""
    tries = row.attempts + 1
    if outcome.ok:
        values = {"status": "sent", "next_at": None, "error": None, "sent_at": clock}
    elif tries >= TRIES:
        values = {"status": "failed", "next_at": None, "error": outcome.text[:300], "sent_at": None}
    else:
        values = {"status": "pending", "next_at": clock + DELAYS[row.attempts], "error": outcome.text[:300]}
        values["sent_at"] = None
    mine = db.session.execute(_OUTCOME, {"pk": row.id, "lease": until, **values}).rowcount == 1
    db.session.commit()
    if not mine:  # another sender's lease had taken it over: its outcome is the one kept
        log.warning("notification %s: the lease ran out during the try; the outcome is another sender's", row.id)
        return
    kind = "sent" if outcome.ok else "gave_up" if values["status"] == "failed" else "failed"
    counts[{"sent": "sent", "failed": "failed_tries", "gave_up": "gave_up"}[kind]] += 1
    telemetry.notifications(kind)
    if outcome.ok:
        log.info("notification %s (%s) of registration %s sent", row.id, row.reason, row.registration_pk)
    elif kind == "failed":
        log.warning(
            "notification %s (%s): try %s of %s failed (%s); next in %s s",
            row.id,
            row.reason,
            tries,
            TRIES,
            outcome.text,
            int(DELAYS[row.attempts].total_seconds()),
        )
    else:
        log.error(
            "notification %s (%s) of registration %s given up after %s tries: %s",
            row.id,
            row.reason,
            row.registration_pk,
            TRIES,
            outcome.text,
        )
