"""Access: what a platform's access at LTIaaS should be.

`decide` turns a licence's facts and an operator's override into the access the platform should
have (docs/architecture.md, invariant 8): the only place that rule lives. It is decided per licence and
applied to each platform on it. `refresh` stores that decision beside what LTIaaS was last told
(`platform_active`), in the caller's transaction, with a timeline entry when it changes; the one
reconciler (paygate/licensing/reconciler.py) tells LTIaaS where the two differ.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, LicencePayment, Registration, TimelineEntry
from paygate.core.registrations import record
from paygate.licensing import vendor_events

log = logging.getLogger(__name__)

# Subscription statuses that keep access (Stripe's own retries decide how long past_due lasts).
ACTIVE_SUBSCRIPTION = {"active", "trialing", "past_due"}


@dataclass(frozen=True)
class Decision:
    active: bool | None  # None: nothing decides it yet (no licence)
    reason: str
    review_at: datetime | None = None  # the clock alone may change it then


def current_payment(licence: Licence) -> LicencePayment | None:
    """The payment that pays for the licence now: the newest one."""
    made = list(licence.payments)
    if licence.kind == "invoice" and licence.invoice_sent_at is not None:
        # Recorded before its invoice was sent: a payment of what the licence was before it was converted to an
        # invoice on its licence page (refunded, perhaps); the invoice pays for it now.
        made = [p for p in made if p.created_at >= licence.invoice_sent_at]
    paid = [p for p in made if p.paid_at is not None] or made
    return max(paid, key=lambda p: (p.paid_at or p.created_at, p.id)) if paid else None


def decide(
    licence: Licence | None, override: bool | None, now: datetime, settings, replaced_at: datetime | None = None
) -> Decision:
    """The access a platform should have; the whole rule (README "Licences: access follows the money").

    Decided per licence and applied to each platform on it: a platform differs from its licence only by
    an operator's override, or by having been replaced by a newer platform (PLATFORMS_PER_LICENCE).
    """
    if override is not None:
        return Decision(override, "operator grants access" if override else "operator revokes access")
    if replaced_at is not None:
        return Decision(False, f"replaced by a newer platform on its licence {replaced_at:%Y-%m-%d}")
    if licence is None:
        return Decision(None, "no licence")
    if licence.kind == "pilot":
        return _decide_pilot(licence, now)
    # A refund or a lost dispute counts against the payment that pays for the current period.
    current = current_payment(licence)
    if current is not None and current.dispute_status == "lost":
        return Decision(False, f"dispute {current.dispute_id} lost")
    if current is not None and current.fully_refunded:
        return Decision(False, f"payment {current.payment_intent_id} refunded in full")
    if licence.kind == "payment":
        if licence.status == "succeeded":
            return Decision(True, "paid")
        if licence.status == "no_payment_required":
            return Decision(
                True, f"promotion code {licence.promotion_code or ''} took the whole amount".replace("  ", " ")
            )
        return Decision(False, f"payment {licence.status or 'not confirmed'}")
    if licence.kind == "subscription":
        if licence.status in ACTIVE_SUBSCRIPTION:
            return Decision(True, f"subscription {licence.status}")
        return Decision(False, f"subscription {licence.status or 'unknown'}")
    return _decide_invoice(licence, now, settings)


def _decide_pilot(licence: Licence, now: datetime) -> Decision:
    """A pilot is active until its end; a payment begun on the licence page before then holds the access
    until its Checkout Session expires, so that paying while the end passes never flaps the platform."""
    end = licence.pilot_ends_at
    if end is not None and now < end:
        return Decision(True, f"pilot until {end:%Y-%m-%d %H:%M}", review_at=end)
    held = licence.payment_pending_until
    if end is not None and held is not None and now < held:
        return Decision(True, f"pilot ended {end:%Y-%m-%d}; its payment is under way", review_at=held)
    return Decision(False, f"pilot ended {end:%Y-%m-%d}" if end else "pilot without an end")


def _decide_invoice(licence: Licence, now: datetime, settings) -> Decision:
    sub_status = licence.subscription_status
    if licence.subscription_id and sub_status and sub_status not in ACTIVE_SUBSCRIPTION:
        return Decision(False, f"subscription {sub_status}")
    name = f"invoice {licence.invoice_number or licence.invoice_id or ''}".strip()
    if licence.status == "paid":
        return Decision(True, f"{name} paid")
    if licence.status in ("void", "uncollectible"):
        return Decision(False, f"{name} {licence.status}")
    pilot = _decide_pilot(licence, now) if licence.pilot_ends_at is not None else None
    if licence.invoice_sent_at is None and licence.invoice_form_id is not None:
        # Asked for, still being made at Stripe: a pilot converted on its licence page keeps its access (held
        # while it is made); anything else waits for the invoice to be sent.
        return pilot if pilot is not None and pilot.active else Decision(False, f"{name} not sent yet".strip())
    if settings.invoice_access == "on_payment" and licence.first_paid_at is None:
        if pilot is not None and licence.pilot_ends_at > now:  # a pilot paid by invoice: until its end at least
            return Decision(True, f"{pilot.reason}; {name} not paid yet (access on payment)", review_at=pilot.review_at)
        return Decision(False, f"{name} not paid yet (access on payment)")
    if licence.due_at is None:
        return Decision(True, f"{name} being issued")
    deadline = licence.due_at + timedelta(days=settings.licence_grace_days)
    if now < deadline:
        # Reviewed at each moment the vendor's status changes by the clock alone (paygate/licensing/vendor_view.py):
        # a pilot paid by invoice ending, the due date passing (active to grace), then the grace's end.
        moments = [at for at in (licence.pilot_ends_at, licence.due_at) if at is not None and now < at]
        return Decision(True, f"{name} open, due {licence.due_at:%Y-%m-%d}", review_at=min([*moments, deadline]))
    return Decision(
        False, f"{name} unpaid {settings.licence_grace_days} days after its due date {licence.due_at:%Y-%m-%d}"
    )


def refresh(reg: Registration, cause: str, now: datetime | None = None, loaded: bool = False) -> bool:
    """Store the access `reg` should have; a timeline entry when it changes, and the vendor told of what changed
    (paygate/licensing/vendor_events.py). Flushes; True if its access changed.

    `loaded`: only `reg` is decided (the clock's review, a batch at a time, one platform each); otherwise every
    other platform on the licence is decided again too (the licence is what changed). Either way the licence is
    locked first and read afresh, with its payments.
    """
    now = now or utcnow()
    changed, licence, licence_active, decided = _decide_all(reg, cause, now, loaded)
    if licence is not None:
        vendor_events.licence_changed(licence, licence_active, now)
    for platform in decided:
        vendor_events.access_changed(platform, licence, licence_active, now)
    return changed


def completed(reg: Registration, cause: str, now: datetime | None = None) -> None:
    """`reg` has just completed (its one move to completed): its access decided again, and the vendor told
    registration.completed, then of its licence, which now lists it. Flushes."""
    now = now or utcnow()
    _, licence, licence_active, decided = _decide_all(reg, cause, now, False)
    vendor_events.completed(reg, licence, licence_active, now)
    for platform in decided:  # `reg`'s own access went with its registration.completed: nothing more for it
        vendor_events.access_changed(platform, licence, licence_active, now)


def locked(licence_pk: int, payments: bool = False) -> Licence:
    """The licence row, locked for this transaction (PostgreSQL), read afresh (with its payments, if asked). Every
    writer of a licence, its payments or its platforms' access takes this lock first: two changes of one licence
    queue instead of deadlocking, and what each decides from (and tells the vendor) is what the other committed."""
    query = select(Licence).where(Licence.id == licence_pk).with_for_update()
    if payments:
        query = query.options(selectinload(Licence.payments))
    return db.session.scalars(query.execution_options(populate_existing=True)).one()


def _decide_all(reg: Registration, cause: str, now: datetime, loaded: bool):
    """Decide and store `reg`'s access (and, unless `loaded`, every other platform's on its licence), the licence
    locked first and read afresh. Returns whether `reg`'s changed, its licence, the licence's own access (no
    override, not replaced) and the platforms decided."""
    settings = current_app.config["SETTINGS"]
    licence_pk = db.session.scalar(select(Registration.licence_pk).where(Registration.id == reg.id))
    licence = locked(licence_pk, payments=True) if licence_pk is not None else None
    # Read after the lock: an operator's override or a replacement committed meanwhile counts.
    db.session.refresh(reg, ["licence_pk", "replaced_at", "access_override"])
    if reg.licence_pk != licence_pk:  # it joined a licence between the two reads: that one is locked instead
        licence = None if reg.licence_pk is None else locked(reg.licence_pk, payments=True)
    if licence is None:
        return _store(reg, decide(None, reg.access_override, now, settings, reg.replaced_at), cause), None, None, [reg]
    changed = _store(reg, decide(licence, reg.access_override, now, settings, reg.replaced_at), cause)
    if loaded:
        return changed, licence, _own(licence, now, settings), [reg]
    others = db.session.scalars(
        select(Registration).where(Registration.licence_pk == licence.id, Registration.id != reg.id)
    ).all()
    for other in others:
        _store(other, decide(licence, other.access_override, now, settings, other.replaced_at), cause)
    return changed, licence, _own(licence, now, settings), [reg, *others]


def _own(licence: Licence | None, now: datetime, settings) -> bool | None:
    """The access the licence's own facts give (what the vendor reads as its status)."""
    return None if licence is None else decide(licence, None, now, settings).active


def _store(reg: Registration, decision: Decision, cause: str) -> bool:
    """Store one platform's decision beside what LTIaaS was told; a timeline entry when it changes."""
    values = {
        "access_wanted": decision.active,
        "access_reason": decision.reason[:200],
        "access_review_at": decision.review_at,
    }
    if all(getattr(reg, k) == v for k, v in values.items()):
        return False
    changed = reg.access_wanted != decision.active
    if changed:  # a new direction starts with a clean slate of retries
        values.update(access_attempts=0, access_next_at=None, access_error=None)
    # A plain UPDATE, and the object set to match: the clock's review decides hundreds at a time.
    db.session.execute(
        update(Registration)
        .where(Registration.id == reg.id)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    for key, value in values.items():
        set_committed_value(reg, key, value)
    if changed:  # same access, other reason or review date: no news for the timeline
        word = {True: "active", False: "inactive", None: "undecided"}[decision.active]
        told = {True: "active", False: "inactive", None: "not told yet"}[reg.platform_active]
        db.session.add(
            TimelineEntry(
                registration_pk=reg.id,
                kind="access",
                cause=cause[:300],
                details={"reason": decision.reason, "active": decision.active},
                message=f"Access should be {word}: {decision.reason}"
                + (f" (LTIaaS has: {told})." if reg.platform_id else " (no platform yet)."),
            )
        )
    return changed


def set_override(reg: Registration, override: bool | None, cause: str, note: str, form_id: str | None = None) -> bool:
    """An operator grants or revokes access by hand, or gives it back to the licence. Flushes."""
    if reg.access_override == override:
        return False
    word = {True: "grants access", False: "revokes access", None: "removes the override"}[override]
    record(
        reg,
        "operator",
        cause=cause,
        details={"override": override, "note": note, "form": form_id},
        message=f"Operator {word}" + (f": {note}" if note else "."),
        access_override=override,
    )
    refresh(reg, cause)
    return True
