"""The outbox of events for the vendor's systems (docs/architecture.md, invariant 12): delivered here.

Messages are written by paygate/licensing/vendor_events.py in the transaction of the change they report.
Whoever runs the outbox (the request that wrote them, after its answer; every worker pass) delivers them in
order per licence, at least once, retrying with backoff for more than 3 days, with the same `webhook-id`
every time; after the last try the registration needs attention.

A sender claims a batch of due messages by a conditional UPDATE that sets its lease (`claimed_until`): of
several senders (web processes, workers) exactly one wins a message, on SQLite and PostgreSQL alike, and on
PostgreSQL the others skip the rows being claimed (FOR UPDATE SKIP LOCKED) instead of queueing on them. A
message is due only when no earlier message of its licence is pending, so a batch holds at most one message
per licence: its licences are sent to concurrently, and each licence's messages one after another. The claim
is committed before sending and no transaction spans a send; the outcome is recorded only while the lease is
still the sender's own. A sender that dies mid-send leaves a lease that runs out: the message is sent again.
"""

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, exists, false, or_, select, update
from sqlalchemy.orm import aliased

from paygate.core import notifications, telemetry
from paygate.core.db import db, utcnow
from paygate.core.models import Registration, VendorMessage
from paygate.core.registrations import record
from paygate.gateways import vendor_webhooks

log = logging.getLogger(__name__)

# The reason an operator is told on the registration when a message is given up.
GAVE_UP = "vendor_webhook_failed"
CAUSE = "vendor outbox"

# The wait after each failed try: the first try at once, then these; after the last one's failure (the 12th
# try, about 3 days 5 hours after the first) the message is given up. Documented in the README.
DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    *(timedelta(hours=12),) * 5,
)
TRIES = len(DELAYS) + 1

SENDS_AT_ONCE = 8  # licences sent to concurrently
CLAIM_BATCH = 32  # messages claimed at once: at most 4 tries one after another per thread
# A lease outlasts the sends of a whole batch even when every try runs into its timeout (connecting, then
# the whole answer), so that no other sender takes a message over while its try is still to come.
LEASE = timedelta(seconds=120)
MAX_PER_CALL = 20_000  # one call (a worker pass) stays bounded; the next one goes on
# Seconds a call goes on claiming: a worker pass (its other work waits) and the work after a request's answer (a
# web thread) are not held by an endpoint that times out; what is left is the next pass's.
PASS_BUDGET = 30.0
AFTER_ANSWER_BUDGET = 10.0
COUNTS = ("delivered", "failed_tries", "gave_up")


def resend(message_pk: int, cause: str, now: datetime | None = None) -> bool:
    """Send message `message_pk` again, with the same id, as soon as a sender runs (an operator asked); flushes.

    False when it is being sent right now (it is then sent anyway, or retried)."""
    now = now or utcnow()
    done = db.session.execute(
        update(VendorMessage)
        .where(
            VendorMessage.id == message_pk,
            (VendorMessage.claimed_until.is_(None)) | (VendorMessage.claimed_until < now),
        )
        .values(status="pending", attempts=0, next_attempt_at=now, claimed_until=None, delivered_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    log.info("vendor message %s: sent again (%s)", message_pk, cause)
    return done == 1


def deliver_due(
    now: datetime | None = None,
    stop: threading.Event | None = None,
    licence_pks=None,
    first_tries: bool = False,
    budget: float | None = None,
) -> dict:
    """Deliver every message that is due (only those of `licence_pks`, when given; None in it: the messages
    without a licence; only those never tried, with `first_tries`), batch after batch until none is or `budget`
    seconds have gone; returns counts. Commits.

    `now` fixes the clock that decides what is due and when a retry is (tests); leases use the real time.
    Nothing is sent, and every count is 0, without VENDOR_WEBHOOK_URL."""
    counts: Counter = Counter(dict.fromkeys(COUNTS, 0))
    settings = current_app.config["SETTINGS"]
    url, secret = settings.vendor_webhook_url, settings.vendor_webhook_secret
    if not url or not secret or (licence_pks is not None and not licence_pks):
        return dict(counts)
    handled, started = 0, time.monotonic()
    with ThreadPoolExecutor(SENDS_AT_ONCE, thread_name_prefix="vendor-webhooks") as pool:
        while handled < MAX_PER_CALL and not (stop is not None and stop.is_set()):
            if budget is not None and time.monotonic() - started >= budget:
                break  # an endpoint that times out must not hold the worker's pass or a web thread: the next goes on
            until, rows = _claim(now or utcnow(), licence_pks, CLAIM_BATCH, first_tries)
            if not rows:
                break
            answers = list(pool.map(lambda row: _try(url, secret, row), rows))
            _record(rows, answers, until, now or utcnow(), counts)  # a retry waits from the try's end
            handled += len(rows)
    db.session.commit()
    return dict(counts)


def _due(clock: datetime, licence_pks, first_tries: bool = False) -> tuple:
    """A message a sender may claim at `clock`: pending, its retry due, no lease running, no earlier message of
    its licence still pending (a failed one no longer holds the others back), and none of its licence being sent
    right now (one sent again by an operator is not sent beside a newer one)."""
    other = aliased(VendorMessage)
    real_now = utcnow()
    conditions = [
        VendorMessage.status == "pending",
        or_(VendorMessage.next_attempt_at.is_(None), VendorMessage.next_attempt_at <= clock),
        or_(VendorMessage.claimed_until.is_(None), VendorMessage.claimed_until < real_now),
        ~exists().where(
            other.licence_pk == VendorMessage.licence_pk,
            other.status == "pending",
            or_(other.id < VendorMessage.id, other.claimed_until >= real_now),
        ),
    ]
    if first_tries:
        conditions.append(VendorMessage.attempts == 0)
    if licence_pks is not None:
        pks = [pk for pk in licence_pks if pk is not None]
        conditions.append(
            or_(
                VendorMessage.licence_pk.in_(pks) if pks else false(),
                VendorMessage.licence_pk.is_(None) if None in licence_pks else false(),
            )
        )
    return tuple(conditions)


def _claim(clock: datetime, licence_pks, limit: int, first_tries: bool = False):
    """Claim up to `limit` due messages for this sender, oldest first; commits. Returns (the lease, rows)."""
    until = utcnow() + LEASE
    due = _due(clock, licence_pks, first_tries)
    # On PostgreSQL other senders skip the rows this one is claiming; SQLite: a plain select, the UPDATE decides.
    candidates = (
        select(VendorMessage.id).where(*due).order_by(VendorMessage.id).limit(limit).with_for_update(skip_locked=True)
    )
    rows = db.session.execute(
        update(VendorMessage)
        .where(VendorMessage.id.in_(candidates), *due)
        .values(claimed_until=until)
        .returning(
            VendorMessage.id,
            VendorMessage.message_id,
            VendorMessage.type,
            VendorMessage.registration_pk,
            VendorMessage.licence_pk,
            VendorMessage.attempts,
            VendorMessage.payload,
        )
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return until, sorted(rows, key=lambda row: row.id)


def _try(url: str, secret: str, row) -> vendor_webhooks.Answer:
    """One try of one message, outside any transaction; never raises."""
    try:
        return vendor_webhooks.send(url, secret, row.message_id, row.payload)
    except Exception:  # a bug, not the endpoint: the message is retried like any failed try
        log.exception("vendor message %s: the try failed unexpectedly", row.message_id)
        return vendor_webhooks.Answer(None, "the try failed on our side")


_TABLE = VendorMessage.__table__
_MINE = (_TABLE.c.id == bindparam("pk"), _TABLE.c.claimed_until == bindparam("lease"))
_DELIVERED = (
    update(_TABLE)
    .where(*_MINE)
    .values(
        status="delivered",
        attempts=_TABLE.c.attempts + 1,
        claimed_until=None,
        next_attempt_at=None,
        last_attempt_at=bindparam("at"),
        delivered_at=bindparam("at"),
        last_status=bindparam("http_status"),
        last_answer=bindparam("answer"),
    )
)
_FAILED = (
    update(_TABLE)
    .where(*_MINE)
    .values(
        status=bindparam("outcome"),
        attempts=_TABLE.c.attempts + 1,
        claimed_until=None,
        next_attempt_at=bindparam("next_at"),
        last_attempt_at=bindparam("at"),
        last_status=bindparam("http_status"),
        last_answer=bindparam("answer"),
    )
)


def _record(rows, answers, until: datetime, clock: datetime, counts: Counter) -> None:
    """Each try's outcome, where the lease is still this sender's; commits. The last failed try gives the
    message up and tells an operator on its registration."""
    delivered, failed, given_up = [], [], []
    for row, answer in zip(rows, answers, strict=True):
        values = {"pk": row.id, "lease": until, "at": clock, "http_status": answer.status, "answer": answer.text[:300]}
        if answer.ok:
            delivered.append(values)
        elif row.attempts + 1 >= TRIES:
            failed.append({**values, "outcome": "failed", "next_at": None})
            given_up.append((row, answer))
        else:
            failed.append({**values, "outcome": "pending", "next_at": clock + DELAYS[row.attempts]})
    if delivered:
        db.session.execute(_DELIVERED, delivered)
    if failed:
        db.session.execute(_FAILED, failed)
    db.session.commit()
    counts["delivered"] += len(delivered)
    counts["failed_tries"] += len(failed)
    counts["gave_up"] += len(given_up)
    telemetry.vendor_deliveries("delivered", len(delivered))
    telemetry.vendor_deliveries("failed", len(failed) - len(given_up))
    telemetry.vendor_deliveries("gave_up", len(given_up))
    for row, answer in zip(rows, answers, strict=True):
        if answer.ok:
            log.info("vendor message %s (%s) delivered: %s", row.message_id, row.type, answer.status)
        elif row.attempts + 1 < TRIES:
            log.warning(
                "vendor message %s (%s): try %s of %s failed (%s); next in %s s",
                row.message_id,
                row.type,
                row.attempts + 1,
                TRIES,
                answer.text,
                int(DELAYS[row.attempts].total_seconds()),
            )
    for row, answer in given_up:
        _give_up(row, answer)


def _give_up(row, answer: vendor_webhooks.Answer) -> None:
    """The message's last try failed: it stays failed (an operator may send it again) and its registration
    needs attention (an ERROR in the log, the reason on the registration)."""
    if db.session.get(VendorMessage, row.id).status != "failed":  # another sender's lease had taken it over
        return
    reg = db.session.get(Registration, row.registration_pk)
    record(
        reg,
        "vendor",
        cause=CAUSE,
        message=f"The vendor's systems did not take the {row.type} message {row.message_id} in {TRIES} tries over "
        f"more than 3 days (last: {answer.text or answer.status}); it is given up. Send it again from the "
        "registration once their endpoint answers.",
        details={"message_id": row.message_id, "type": row.type, "status": answer.status, "answer": answer.text},
        attention=GAVE_UP,
    )
    notifications.vendor_webhook_failed(reg, row.message_id, row.type, TRIES, answer.text or str(answer.status))
    db.session.commit()
    log.error(
        "vendor message %s (%s) of registration %s given up after %s tries: %s",
        row.message_id,
        row.type,
        row.registration_pk,
        TRIES,
        answer.text,
    )
