"""The worker: whatever a request could not finish, finished later, by any number of workers at once.

One pass (`run_once`):
  1. resolve stale attempts: a registration "completing" for longer than the stale bound was cut
     short (a killed process, a deploy); its outcome is unknown, so it goes back to paid with
     attempt_uncertain set and is retried at once. LTIaaS completes an id only once: if the retry
     meets "unknown id", fulfilment flags it for an operator (completion_uncertain), never charges
     again and never calls it a success;
  2. retry due completions: paid registrations whose retry is due, or that nobody has tried for a
     grace period (the webhook's or the return's own attempt goes first);
  3. abandon registrations that were never paid and whose LMS token has run out;
  4. optionally reconcile with Stripe (see paygate/sales/reconcile.py);
  5. deliver the vendor's due messages (paygate/ops/vendor_outbox.py): those a request could not, and retries;
     then e-mail the operators' due notifications (paygate/ops/notify_outbox.py) the same way;
  6. every five minutes, count the overview's figures again (paygate/ops/overview_summary.py), one worker at a time;
  7. hourly, when looping: delete what retention allows (paygate/ops/retention.py), never anything with money.

Several workers and web processes may run at once against one PostgreSQL. Exactly-once rests on
the conditional updates of paygate/core/registrations.py (the move into "completing" is won by one caller);
on PostgreSQL the worker also takes its next registration with FOR UPDATE SKIP LOCKED, so that
workers spread the work instead of queueing on one row. No transaction spans a call to LTIaaS.
"""

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import and_, exists, func, or_, select, true

from paygate.core import telemetry
from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, Registration, State
from paygate.core.registrations import transition
from paygate.gateways import payments
from paygate.licensing import reconciler
from paygate.ops import notify_outbox, overview_summary, retention, vendor_outbox
from paygate.sales import fulfilment, invoicing, licence_invoicing

log = logging.getLogger(__name__)

CAUSE = "worker"
BATCH = 200  # registrations per step and pass: a pass stays bounded, the next one goes on

COUNTS = ("stale", "attempted", "completed", "retrying", "needs_attention", "abandoned", "errors")


def _clock(now: datetime | None):
    """The pass's clock: a fixed time when given (tests), the real time at each step otherwise."""
    if now is None:
        return utcnow
    fixed = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    return lambda: fixed


def stale_condition(cutoff: datetime):
    """An attempt in "completing" that started before `cutoff` (also read by paygate/ops/metrics_page.py)."""
    return or_(
        Registration.attempt_started_at < cutoff,
        and_(Registration.attempt_started_at.is_(None), Registration.updated_at < cutoff),
    )


def due_condition(now: datetime, grace: timedelta):
    """A paid registration whose completion is due: its retry time has come, or nobody tried it for the
    grace period (also read by paygate/ops/metrics_page.py)."""
    return or_(
        Registration.next_attempt_at <= now,
        and_(
            Registration.next_attempt_at.is_(None),
            func.coalesce(Registration.paid_at, Registration.updated_at) <= now - grace,
        ),
    )


def resolve_stale(clock, counts: Counter) -> None:
    """Attempts in flight longer than the bound: back to paid, outcome unknown, retry now."""
    bound = timedelta(seconds=current_app.config["SETTINGS"].stale_after_seconds)
    now = clock()
    stale = stale_condition(now - bound)
    ids = db.session.scalars(
        select(Registration.id)
        .where(Registration.state == State.COMPLETING.value, stale)
        .order_by(Registration.id)
        .limit(BATCH)
    ).all()
    db.session.commit()
    for pk in ids:
        reg = db.session.get(Registration, pk)
        started = reg.attempt_started_at
        error = {
            "message": "The attempt was cut short (a process stopped while it was completing); its outcome is unknown.",
            "status": None,
            "details": {"attempt_started_at": started.isoformat(sep=" ") if started else None},
            "retryable": True,
            "uncertain": True,
        }
        if transition(
            reg,
            State.PAID,
            cause=CAUSE,
            expect={State.COMPLETING},
            where=(stale,),
            message=f"The attempt started at {started:%Y-%m-%d %H:%M:%S} UTC never finished; its "
            "outcome is unknown. Retrying now: if LTIaaS no longer knows the registration, "
            "an operator is asked to check it."
            if started
            else "An attempt never finished; its outcome is unknown. Retrying now.",
            details=error,
            last_error=error,
            attempt_uncertain=True,
            attempt_started_at=None,
            next_attempt_at=now,
        ):
            counts["stale"] += 1
            log.warning(
                "worker: registration %s: attempt started %s was cut short; outcome unknown, retrying", reg.id, started
            )
        db.session.commit()


def retry_due(clock, counts: Counter, stop: threading.Event | None = None) -> None:
    """Complete every due paid registration, one at a time, each claimed by one worker only.

    A stop request is honoured between registrations, so that a deploy never cuts an attempt short.
    """
    grace = timedelta(seconds=current_app.config["SETTINGS"].worker_grace_seconds)
    seen: list[int] = []
    while len(seen) < BATCH and not (stop is not None and stop.is_set()):
        now = clock()
        due = due_condition(now, grace)
        query = (
            select(Registration)
            .where(Registration.state == State.PAID.value, due, Registration.id.not_in(seen) if seen else true())
            .order_by(func.coalesce(Registration.next_attempt_at, Registration.paid_at), Registration.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )  # SQLite: a plain select; the claim decides
        reg = db.session.scalars(query).first()
        if reg is None:
            db.session.commit()
            return
        seen.append(reg.id)
        attempts_before = reg.attempt_count
        try:
            # Claims (paid -> completing) in this transaction, which holds the row lock, commits,
            # then calls LTIaaS outside any transaction and records the outcome.
            fulfilment.complete(reg, CAUSE, now=now)
        except Exception:
            db.session.rollback()
            counts["errors"] += 1
            log.exception("worker: registration %s: completion attempt failed unexpectedly", reg.id)
            continue
        if reg.attempt_count == attempts_before:  # another process claimed it first
            continue
        counts["attempted"] += 1
        state = reg.state
        if state == State.COMPLETED.value:
            counts["completed"] += 1
            log.info("worker: registration %s completed at LTIaaS (attempt %s)", reg.id, reg.attempt_count)
        elif state == State.PAID.value:
            counts["retrying"] += 1
            log.info(
                "worker: registration %s attempt %s failed (%s); next at %s",
                reg.id,
                reg.attempt_count,
                (reg.last_error or {}).get("message"),
                reg.next_attempt_at,
            )
        elif state == State.NEEDS_ATTENTION.value:
            counts["needs_attention"] += 1
            log.warning(
                "worker: registration %s needs an operator: %s (%s)",
                reg.id,
                reg.attention,
                (reg.last_error or {}).get("message"),
            )


def abandon_expired(clock, counts: Counter) -> None:
    """Never paid, and the LMS token has run out: abandoned (a late payment still revives it)."""
    window = timedelta(minutes=current_app.config["SETTINGS"].registration_window_minutes)
    cutoff = clock() - window
    # A delayed payment method still processing keeps the registration pending until Stripe decides.
    processing = exists().where(
        CheckoutSession.registration_pk == Registration.id,
        CheckoutSession.status == "complete",
        CheckoutSession.payment_status == "unpaid",
        CheckoutSession.failed_at.is_(None),
    )
    ids = db.session.scalars(
        select(Registration.id)
        .where(Registration.state == State.PENDING.value, Registration.created_at < cutoff, ~processing)
        .order_by(Registration.id)
        .limit(BATCH)
    ).all()
    db.session.commit()
    for pk in ids:
        reg = db.session.get(Registration, pk)
        if transition(
            reg,
            State.ABANDONED,
            cause=CAUSE,
            expect={State.PENDING},
            where=(Registration.created_at < cutoff,),
            message="No payment known before the LMS registration token ran out; abandoned "
            "(a late payment still revives it).",
        ):
            counts["abandoned"] += 1
            log.info("worker: registration %s abandoned (never paid)", reg.id)
        db.session.commit()


def run_once(
    now: datetime | None = None, *, reconcile: bool = False, prune: bool = False, stop: threading.Event | None = None
) -> dict:
    """One pass of the worker, in the current app context; returns what it did, by kind."""
    clock = _clock(now)
    started = time.monotonic()
    counts: Counter = Counter(dict.fromkeys(COUNTS, 0))
    resolve_stale(clock, counts)
    counts["invoices"] = invoicing.resume_pending(clock()) + licence_invoicing.resume_pending(clock())
    retry_due(clock, counts, stop)
    abandon_expired(clock, counts)
    result = dict(counts)
    # Access: what the clock changed (a due date passed), then every platform LTIaaS must be told about.
    result.update(reconciler.sync_pending(clock(), CAUSE, stop))
    if reconcile:
        from paygate.sales.reconcile import reconcile as reconcile_with_stripe
        from paygate.sales.reconcile import reconcile_licences

        settings = current_app.config["SETTINGS"]
        try:
            found = reconcile_with_stripe(settings.reconcile_since_hours)
            found.update({f"licence_{k}": v for k, v in reconcile_licences(settings.licence_recheck_days).items()})
        except payments.PaymentProviderError as exc:
            db.session.rollback()
            log.warning("worker: reconciliation with Stripe failed: %s", exc)
            result["reconcile_failed"] = 1
        else:
            result.update({f"reconcile_{k}": v for k, v in found.items()})
            result.update(reconciler.sync_pending(clock(), CAUSE, stop))  # what reconciliation changed
    try:  # after everything above that may have written messages
        delivered = vendor_outbox.deliver_due(None if now is None else clock(), stop, budget=vendor_outbox.PASS_BUDGET)
        result.update({f"vendor_{k}": v for k, v in delivered.items()})
    except Exception:  # e.g. the database went away mid-pass: the messages wait for the next pass
        db.session.rollback()
        log.exception("worker: delivering the vendor's messages failed")
        result["vendor_failed"] = 1
    try:  # after everything that may have written notifications
        sent = notify_outbox.send_due(None if now is None else clock(), stop, budget=notify_outbox.PASS_BUDGET)
        result.update({f"notify_{k}": v for k, v in sent.items()})
    except Exception:  # the notifications wait for the next pass
        db.session.rollback()
        log.exception("worker: e-mailing the operators' notifications failed")
        result["notify_failed"] = 1
    try:  # after the pass's own writes, which the figures count
        took_ms = overview_summary.refresh_due(None if now is None else clock())
        if took_ms is not None:
            result["overview_ms"] = took_ms
    except Exception:  # the page counts them itself while they are stale
        db.session.rollback()
        log.exception("worker: counting the overview's figures failed")
        result["overview_failed"] = 1
    if prune:
        try:
            result.update({f"pruned_{k}": v for k, v in retention.prune(clock()).items()})
        except Exception:  # the pass's real work is done; pruning is tried again next time
            db.session.rollback()
            log.exception("worker: pruning failed")
            result["prune_failed"] = 1
    elapsed = time.monotonic() - started
    telemetry.worker_pass(elapsed)
    log.info("worker pass: %s (%.2f s)", " ".join(f"{k}={v}" for k, v in result.items()), elapsed)
    return result


def run_forever(app: Flask, interval: float, reconcile_minutes: float, stop: threading.Event) -> None:
    """Passes every `interval` seconds until `stop` is set; reconciles every `reconcile_minutes` (0: never).

    A stop request lets the pass in progress finish (an LTIaaS call in flight is bounded by its
    timeout), so that no attempt is cut short by a deploy.
    """
    log.info(
        "worker started: every %s s, reconcile every %s min, stale after %s s",
        interval,
        reconcile_minutes or "never",
        app.config["SETTINGS"].stale_after_seconds,
    )
    last_reconcile: float | None = None
    last_prune: float | None = None
    while not stop.is_set():
        tick = time.monotonic()
        reconcile = reconcile_minutes > 0 and (
            last_reconcile is None or tick - last_reconcile >= reconcile_minutes * 60
        )
        if reconcile:
            last_reconcile = tick
        prune = last_prune is None or tick - last_prune >= retention.PRUNE_EVERY_SECONDS
        if prune:
            last_prune = tick
        try:
            with app.app_context():  # a fresh database session for every pass
                run_once(reconcile=reconcile, prune=prune, stop=stop)
        except Exception:  # e.g. the database is down: say so, and try again next pass
            telemetry.worker_pass_failed()
            log.exception("worker pass failed; next pass in %s s", interval)
        stop.wait(interval)
    log.info("worker stopped")
