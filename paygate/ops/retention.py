"""Retention: what is kept only while it can matter, and never anything with money on it.

`prune` deletes, RETENTION_DAYS after their last change:
* Stripe events that belong to no registration here (another product's objects, or types this service
  ignores): their payloads are other people's data, kept only to recognise Stripe's redeliveries
  (three days at most);
* abandoned registrations without money on them, with their Checkout Sessions, timeline and events:
  never paid, no refund, no platform, nothing for an operator to look at, no licence (so no licence
  payment and no invoice), no Checkout Session that completed, and only "expired" or "failed" events;
* events for the vendor's systems that were delivered (their copy is the vendor's now; one given up stays
  for an operator to send again).

A row any other table refers to is kept: a table added later decides nothing here by omission. Run
by `flask --app wsgi prune` and by the worker every PRUNE_EVERY_SECONDS.
"""

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, delete, exists, not_, or_, select

from paygate.core.db import db, utcnow
from paygate.core.models import (
    CheckoutSession,
    Licence,
    LicencePayment,
    Registration,
    State,
    StripeEvent,
    TimelineEntry,
    VendorMessage,
)

log = logging.getLogger(__name__)

BATCH = 500  # rows per transaction: locks stay short, and the next batch goes on
PRUNE_EVERY_SECONDS = 3600
# The events an abandoned registration may have had without any money moving.
MONEYLESS_EVENTS = ("checkout.session.expired", "checkout.session.async_payment_failed")
# What an abandoned registration's pruning deletes with it.
_CHILDREN = (CheckoutSession, TimelineEntry, StripeEvent)


def foreign_event_condition(cutoff: datetime):
    """A Stripe event older than `cutoff` that names no registration and no Checkout Session of ours."""
    ours = exists().where(CheckoutSession.session_id == StripeEvent.session_id)
    return and_(StripeEvent.registration_pk.is_(None), StripeEvent.received_at < cutoff, not_(ours))


def prunable_registration_condition(cutoff: datetime):
    """An abandoned registration, unchanged since `cutoff`, with no money on it and nothing to look at."""
    r = Registration
    completed_session = exists().where(
        CheckoutSession.registration_pk == r.id,
        or_(CheckoutSession.status == "complete", CheckoutSession.payment_status != "unpaid"),
    )
    money_event = exists().where(StripeEvent.registration_pk == r.id, StripeEvent.type.not_in(MONEYLESS_EVENTS))
    referenced = [exists().where(column == r.id) for column in _other_references()]
    return and_(
        r.state == State.ABANDONED.value,
        r.updated_at < cutoff,
        r.created_at < cutoff,
        r.paid_at.is_(None),
        r.amount_paid.is_(None),
        r.payment_intent_id.is_(None),
        r.payment_session_id.is_(None),
        r.refund_id.is_(None),
        r.platform_id.is_(None),
        r.attention.is_(None),
        r.licence_pk.is_(None),
        not_(exists().where(Licence.registration_pk == r.id)),
        not_(exists().where(LicencePayment.registration_pk == r.id)),
        not_(completed_session),
        not_(money_event),
        *[not_(e) for e in referenced],
    )


def _other_references():
    """Columns of tables other than the pruned children that refer to a registration (licences too)."""
    children = {model.__table__ for model in _CHILDREN}
    return [
        fk.parent
        for table in db.metadata.sorted_tables
        if table not in children
        for fk in table.foreign_keys
        if fk.column.table is Registration.__table__
    ]


def prune(now: datetime | None = None, days: int | None = None) -> dict:
    """Delete what retention allows (see above); returns how many events, registrations and vendor messages went."""
    days = current_app.config["SETTINGS"].retention_days if days is None else days
    counts = {"events": 0, "registrations": 0, "vendor_messages": 0}
    if days <= 0:
        return counts
    cutoff = (now or utcnow()) - timedelta(days=days)
    while True:
        ids = db.session.scalars(select(StripeEvent.event_id).where(foreign_event_condition(cutoff)).limit(BATCH)).all()
        if ids:
            db.session.execute(
                delete(StripeEvent)
                .where(StripeEvent.event_id.in_(ids), foreign_event_condition(cutoff))
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
        counts["events"] += len(ids)
        if len(ids) < BATCH:
            break
    delivered = (VendorMessage.status == "delivered", VendorMessage.delivered_at < cutoff)
    while True:
        ids = db.session.scalars(select(VendorMessage.id).where(*delivered).limit(BATCH)).all()
        if ids:
            db.session.execute(
                delete(VendorMessage)
                .where(VendorMessage.id.in_(ids), *delivered)
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
        counts["vendor_messages"] += len(ids)
        if len(ids) < BATCH:
            break
    condition = prunable_registration_condition(cutoff)
    while True:
        # Locked (PostgreSQL) until the commit: a late payment reviving one of them waits, then finds
        # it gone, instead of finding its sessions and timeline gone.
        pks = db.session.scalars(
            select(Registration.id)
            .where(condition)
            .order_by(Registration.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if pks:
            for model in _CHILDREN:
                db.session.execute(
                    delete(model).where(model.registration_pk.in_(pks)).execution_options(synchronize_session=False)
                )
            db.session.execute(
                delete(Registration)
                .where(Registration.id.in_(pks), condition)
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
        counts["registrations"] += len(pks)
        if len(pks) < BATCH:
            break
    if any(counts.values()):
        log.info(
            "retention: deleted %s foreign Stripe events, %s abandoned registrations without money and %s "
            "delivered vendor messages, older than %s days",
            counts["events"],
            counts["registrations"],
            counts["vendor_messages"],
            days,
        )
    return counts
