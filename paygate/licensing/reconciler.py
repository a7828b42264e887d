"""The one reconciler that tells LTIaaS (docs/architecture.md, invariant 8).

For a platform whose access (`access_wanted`, decided by paygate/licensing/access.py) differs from what LTIaaS
was last told (`platform_active`), `sync` claims the row (a conditional UPDATE: of several processes exactly one
wins), commits, calls LTIaaS activate or deactivate outside any transaction, and records what LTIaaS now has. A
failed call is retried with backoff by the worker until LTIaaS has it; `review_due` decides again what the
clock alone changes (an invoice's grace, a pilot's end). No other code calls activate/deactivate.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import insert, or_, select, text, update

from paygate.core import notifications
from paygate.core.db import db, utcnow
from paygate.core.models import ACCESS_DIFFERS, Registration, TimelineEntry
from paygate.core.registrations import record
from paygate.gateways import ltiaas
from paygate.licensing.access import refresh

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=5)
# After this many failed calls an operator is told (it keeps retrying by itself meanwhile).
ATTENTION_AFTER = 6
# A permanent refusal (the platform is gone at LTIaaS) is tried again only this often.
REFUSED_RETRY = timedelta(hours=1)
BATCH = 500
# Claimed together and told concurrently: even if every call ran into LTIaaS's timeout, a batch ends
# well inside the stale bound, so no claim is taken over while its call is still to come.
CLAIM_BATCH = 16
CALLS_AT_ONCE = 8
SYNC_ATTENTION = {"access_unsynced", "access_refused"}


def platforms_of(pk: int) -> list[int]:
    """Registration `pk` and the other platforms on its licence, `pk` first."""
    licence_pk = db.session.scalar(select(Registration.licence_pk).where(Registration.id == pk))
    if licence_pk is None:
        return [pk]
    others = db.session.scalars(
        select(Registration.id).where(Registration.licence_pk == licence_pk, Registration.id != pk)
    ).all()
    return [pk, *others]


def _backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)


def _stale_bound() -> timedelta:
    return timedelta(seconds=current_app.config["SETTINGS"].stale_after_seconds)


def _without(attention: str | None, reasons: set[str]) -> str | None:
    left = [r for r in (attention or "").split(",") if r and r not in reasons]
    return ",".join(left) or None


def sync(pk: int, cause: str, now: datetime | None = None) -> int:
    """Tell LTIaaS the access registration `pk` and the other platforms on its licence should have, where
    it differs; returns calls made.

    Commits. Loops while the access changed again during the call, a few times at most.
    """
    calls = 0
    for platform in platforms_of(pk):
        for _ in range(3):
            outcome = _sync_once(platform, cause, now)
            if outcome is None:
                break
            calls += 1
            if outcome is False:
                break
    return calls


def _fast_commits() -> None:
    """This transaction's commit need not wait for the disk (PostgreSQL): activate and deactivate are
    idempotent, so a commit lost in a server crash only makes the reconciler send a call again."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _claim(due: datetime, pk: int | None = None, limit: int = 1):
    """Claim registration `pk` (or up to `limit` of those due) for telling LTIaaS; commits.

    The claim is a conditional UPDATE (of several processes exactly one wins a row, on SQLite and
    PostgreSQL alike), stamped with the real time so that it is never stale the moment it is taken;
    `due` decides whether a retry's backoff has passed. Returns (claimed_at, rows claimed).
    """
    claimed_at = utcnow()
    free = (
        text(ACCESS_DIFFERS),
        or_(Registration.access_claimed_at.is_(None), Registration.access_claimed_at < claimed_at - _stale_bound()),
        or_(Registration.access_next_at.is_(None), Registration.access_next_at <= due),
    )
    if pk is not None:
        which = Registration.id == pk
    else:  # on PostgreSQL other workers skip the rows this one is claiming instead of queueing on them
        which = Registration.id.in_(
            select(Registration.id)
            .where(*free)
            .order_by(Registration.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    _fast_commits()
    rows = db.session.execute(
        update(Registration)
        .where(which, *free)
        .values(access_claimed_at=claimed_at)
        .returning(
            Registration.id,
            Registration.platform_id,
            Registration.access_wanted,
            Registration.access_reason,
            Registration.attention,
        )
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return claimed_at, rows


def _tell(claimed_at: datetime, due: datetime, rows, cause: str) -> tuple[int, int]:
    """Call LTIaaS for claimed rows (concurrently when several) and record each outcome; (told, failed)."""
    client = ltiaas.client()

    def call(row) -> dict | None:
        try:
            client.set_platform_active(row.platform_id, row.access_wanted)
        except ltiaas.LtiaasError as exc:
            return exc.as_dict()
        except ValueError as exc:
            return {"message": str(exc), "retryable": False}
        return None

    if len(rows) > 1:
        with ThreadPoolExecutor(min(CALLS_AT_ONCE, len(rows)), thread_name_prefix="access") as pool:
            errors = list(pool.map(call, rows))
    else:
        errors = [call(row) for row in rows]
    told = [row for row, error in zip(rows, errors, strict=True) if error is None]
    _record_told(told, claimed_at, cause)
    for row, error in zip(rows, errors, strict=True):
        if error is not None:
            _record_failure(
                db.session.get(Registration, row.id),
                row.access_wanted,
                error,
                claimed_at,
                due,
                cause,
                (Registration.access_claimed_at == claimed_at,),
            )
    return len(told), len(rows) - len(told)


def _record_told(rows, claimed_at: datetime, cause: str) -> None:
    """What LTIaaS now has, for rows whose call succeeded: one UPDATE per direction, one INSERT."""
    if not rows:
        return
    _fast_commits()
    now, taken = utcnow(), set()
    for active in (True, False):
        ids = [row.id for row in rows if bool(row.access_wanted) is active]
        if ids:
            taken.update(
                db.session.scalars(
                    update(Registration)
                    .where(Registration.id.in_(ids), Registration.access_claimed_at == claimed_at)
                    .values(
                        platform_active=active,
                        access_claimed_at=None,
                        access_attempts=0,
                        access_next_at=None,
                        access_error=None,
                        updated_at=now,
                    )
                    .returning(Registration.id)
                    .execution_options(synchronize_session=False)
                )
            )
    for row in rows:  # an operator was told LTIaaS lagged: that is over
        if row.id in taken and row.attention and SYNC_ATTENTION & set(row.attention.split(",")):
            db.session.execute(
                update(Registration)
                .where(Registration.id == row.id)
                .values(attention=_without(row.attention, SYNC_ATTENTION))
            )
    db.session.execute(
        insert(TimelineEntry),
        [
            {
                "registration_pk": row.id,
                "at": now,
                "kind": "access",
                "cause": cause[:300],
                "details": {"platform_id": row.platform_id, "active": row.access_wanted},
                "message": f"LTIaaS {'activate' if row.access_wanted else 'deactivate'}d platform {row.platform_id} "
                f"({row.access_reason})."
                + ("" if row.id in taken else " Another attempt had taken the claim over meanwhile."),
            }
            for row in rows
        ],
    )
    db.session.commit()
    for row in rows:
        log.info(
            "access: registration %s platform %s %sd at LTIaaS (%s)",
            row.id,
            row.platform_id,
            "activate" if row.access_wanted else "deactivate",
            row.access_reason,
        )


def _sync_once(pk: int, cause: str, now: datetime | None) -> bool | None:
    """One claim and one call: None when nothing was sent, else whether LTIaaS took it."""
    claimed_at, rows = _claim(now or utcnow(), pk=pk)
    if not rows:
        return None
    told, _ = _tell(claimed_at, now or claimed_at, rows, cause)
    return told == 1


def _record_failure(
    reg: Registration, active: bool, error: dict, claimed_at: datetime, due: datetime, cause: str, mine
) -> None:
    verb = "activate" if active else "deactivate"
    attempts = reg.access_attempts + 1
    retryable = error.get("retryable", False)
    delay = _backoff(attempts) if retryable else REFUSED_RETRY
    db.session.refresh(reg)
    values = {
        "access_claimed_at": None,
        "access_attempts": attempts,
        "access_next_at": due + delay,
        "access_error": error,
        "updated_at": utcnow(),
    }
    if error.get("uncertain"):
        # The call may have taken effect (a 502 after the work was done): LTIaaS's state is unknown, so
        # the platform differs from whatever it should be until a call succeeds.
        values["platform_active"] = None
    if reg.access_wanted != active:  # the licence changed meanwhile: the other way is not held back
        values.update(access_next_at=None, access_attempts=0)
    reason = (
        None if retryable and attempts < ATTENTION_AFTER else ("access_unsynced" if retryable else "access_refused")
    )
    taken = (
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id, *mine)
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    db.session.refresh(reg)
    log.warning(
        "access: registration %s: LTIaaS did not %s platform %s: %s; retry in %s s",
        reg.id,
        verb,
        reg.platform_id,
        error.get("message"),
        int(delay.total_seconds()),
    )
    attempts = values["access_attempts"]
    # The first failure, and the one that calls an operator, are worth a line in the timeline.
    if taken and (attempts == 1 or reason):
        extra = {"attention": reason} if reason and reason not in (reg.attention or "").split(",") else {}
        record(
            reg,
            "access",
            cause=cause,
            details=error,
            **extra,
            message=f"LTIaaS did not {verb} platform {reg.platform_id}: {error.get('message')}. "
            f"Retrying in {int(delay.total_seconds())} s" + (" (an operator is told)." if reason else "."),
        )
        if reason:
            notifications.access_untold(reg, active, error.get("message"))
    db.session.commit()


def review_due(now: datetime, cause: str = "worker") -> tuple[int, int]:
    """Decide again every registration whose access may have changed by the clock (a due date), a
    batch at a time; returns (rows read, accesses changed). Commits once per batch."""
    regs = db.session.scalars(
        select(Registration)
        .where(Registration.access_review_at <= now)
        .order_by(Registration.access_review_at)
        .limit(BATCH)
    ).all()
    changed = sum(refresh(reg, cause, now, loaded=True) for reg in regs)
    db.session.commit()
    db.session.expunge_all()
    return len(regs), changed


def sync_pending(now: datetime | None = None, cause: str = "worker", stop=None) -> dict:
    """One reconciler pass: review what the clock changed, then tell LTIaaS every difference."""
    now = now or utcnow()
    counts = {"access_reviewed": 0, "access_told": 0, "access_failed": 0}
    while True:  # batch after batch, until the clock has nothing more to say
        read, changed = review_due(now, cause)
        counts["access_reviewed"] += changed
        if read < BATCH:
            break
    while not (stop is not None and stop.is_set()):  # a failed call waits for its backoff: no loop
        claimed_at, rows = _claim(now, limit=CLAIM_BATCH)
        if not rows:
            break
        told, failed = _tell(claimed_at, now, rows, cause)
        counts["access_told"] += told
        counts["access_failed"] += failed
    return counts
