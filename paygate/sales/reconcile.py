"""Reconciliation with Stripe: every paid Checkout Session ends up known here, webhooks or not.

Stripe is the source of truth for money. When webhooks are lost (the endpoint was down for a day,
the signing secret was rotated wrongly) and the admin never came back through the success return,
a paid session is still listed by Stripe. `reconcile` walks the recent sessions (every page) and
runs, for each paid one this database does not know as paid, the same fulfilment as the webhook.
Running it again changes nothing: known sessions are skipped before anything is written.
"""

import logging
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import or_, select

from paygate.core.db import db, utcnow
from paygate.core.models import CheckoutSession, Licence, LicencePayment, State
from paygate.gateways import payments
from paygate.licensing import licences, refunds
from paygate.sales.fulfilment import after_payment, apply_checkout, free_by_code, registration_for

log = logging.getLogger(__name__)

CAUSE = "reconcile"


def _known(view: payments.CheckoutView, reg) -> bool:
    """Whether this paid session has been applied already (as the payment, or flagged)."""
    if reg.payment_session_id == view.id:
        return True
    row = db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == view.id)).first()
    # apply_checkout stores a paid session as complete/paid in the same transaction in which it
    # records the payment or flags it (mismatch, second payment): such a session was seen.
    return row is not None and row.status == "complete" and row.payment_status == "paid"


def reconcile(since_hours: float = 48, page_size: int = 100) -> dict:
    """Fulfil every paid Checkout Session created in the last `since_hours` that is not known here.

    Returns counts: listed, paid, known (already recorded), fulfilled (newly recorded as paid),
    completed (of those, registered at LTIaaS now), flagged (recorded but not fulfilled: mismatch,
    second payment, no payment), foreign (no registration here: another integration), errors.
    Raises payments.PaymentProviderError when Stripe cannot be listed (nothing half-done: every
    session handled so far is committed).
    """
    counts = Counter(
        dict.fromkeys(("listed", "paid", "known", "fulfilled", "completed", "flagged", "foreign", "errors"), 0)
    )
    created_gte = int(time.time() - since_hours * 3600)
    for view in payments.gateway().list_checkout_sessions(created_gte=created_gte, page_size=page_size):
        counts["listed"] += 1
        if not ((view.status == "complete" and view.payment_status == "paid") or free_by_code(view)):
            continue
        counts["paid"] += 1
        try:
            reg = registration_for(view)
            if reg is None:
                counts["foreign"] += 1
                continue
            if _known(view, reg):
                counts["known"] += 1
                continue
            db.session.commit()  # nothing is held while Stripe is asked for the subscription
            outcome = apply_checkout(payments.gateway().with_subscription(view), CAUSE)
            db.session.commit()
            if outcome.note == "already paid":  # a webhook or return recorded it a moment ago
                counts["known"] += 1
            elif outcome.paid:
                counts["fulfilled"] += 1
                log.warning(
                    "reconcile: session %s of registration %s was paid but unknown here (lost webhooks?); recorded",
                    view.id,
                    reg.id,
                )
                after_payment(outcome, CAUSE)()  # completes it, or tells LTIaaS a licence paid on its page
                if outcome.licence_pk is None and outcome.registration.state == State.COMPLETED.value:
                    counts["completed"] += 1
            else:
                counts["flagged"] += 1
                log.warning("reconcile: session %s of registration %s not fulfilled: %s", view.id, reg.id, outcome.note)
        except Exception:  # one bad session must not stop the others; the next run tries again
            db.session.rollback()
            counts["errors"] += 1
            log.exception("reconcile: session %s could not be handled", view.id)
        finally:
            db.session.rollback()  # ends any read: the next page is fetched with no transaction open
            db.session.expunge_all()  # a long listing must not grow the session's identity map
    result = dict(counts)
    log.info("reconcile: %s", " ".join(f"{k}={v}" for k, v in result.items()))
    return result


# Licences: re-read every one whose access could be stale, so that a missed webhook corrects itself.
LIVE_SUBSCRIPTION = ("incomplete", "trialing", "active", "past_due", "unpaid", "paused")


def reconcile_licences(recheck_days: float = 120, batch: int = 100) -> dict:
    """Re-read live subscriptions, open invoices and the recent payments (refunds, disputes) from Stripe.

    Each one is applied as its webhook would be, and committed on its own; one failure does not
    stop the others. Returns counts: licences, payments, changed, errors.
    """
    counts = Counter(dict.fromkeys(("licences", "payments", "changed", "errors"), 0))
    live = or_(
        Licence.status.in_(LIVE_SUBSCRIPTION) & (Licence.kind == "subscription"),
        (Licence.kind == "invoice")
        & (Licence.status.in_(("draft", "open")) | Licence.subscription_status.in_(LIVE_SUBSCRIPTION)),
    )
    since = utcnow() - timedelta(days=recheck_days)
    work = [
        (licences.recheck, select(Licence.id).where(live), "licences"),
        (refunds.recheck, select(LicencePayment.id).where(LicencePayment.paid_at >= since), "payments"),
    ]
    for recheck, query, name in work:
        after = 0
        while True:  # keyset batches: a long list never holds a transaction or the identity map
            ids = db.session.scalars(
                query.where(query.selected_columns[0] > after).order_by(query.selected_columns[0]).limit(batch)
            ).all()
            db.session.commit()
            if not ids:
                break
            after = ids[-1]
            for pk in ids:
                counts[name] += 1
                try:
                    counts["changed"] += recheck(pk, CAUSE)
                except payments.PaymentProviderError:
                    raise  # Stripe cannot be asked: stop, the next run tries again
                except Exception:
                    db.session.rollback()
                    counts["errors"] += 1
                    log.exception("reconcile: %s %s could not be re-read", name, pk)
                finally:
                    db.session.expunge_all()
    result = dict(counts)
    log.info("reconcile licences: %s", " ".join(f"{k}={v}" for k, v in result.items()))
    return result
