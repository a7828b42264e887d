"""The registration state machine: the one place that changes a registration's state.

Every change is a conditional UPDATE on the registration row (checked by its row count), so that
of several concurrent callers exactly one wins, on SQLite and PostgreSQL alike; the winner writes
a timeline entry in the same transaction. Callers flush here and commit once.
"""

import logging
import secrets

from sqlalchemy import select, update

from paygate.core import notifications
from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import Registration, State, TimelineEntry
from paygate.core.money import format_amount
from paygate.core.text import clean

log = logging.getLogger(__name__)

# Which states may lead to which. A late payment may revive an abandoned registration: money is
# never ignored, and completion will tell whether the LMS side can still be finished.
TRANSITIONS: dict[State, set[State]] = {
    State.PENDING: {State.PAID, State.NEEDS_ATTENTION, State.ABANDONED},
    State.ABANDONED: {State.PAID, State.NEEDS_ATTENTION},
    # paid -> completed: a late success of an attempt given up as stale is still THE completion.
    State.PAID: {State.COMPLETING, State.COMPLETED, State.NEEDS_ATTENTION, State.REFUNDED},
    State.COMPLETING: {State.COMPLETED, State.PAID, State.NEEDS_ATTENTION},
    State.NEEDS_ATTENTION: {State.PAID, State.COMPLETED, State.REFUNDED},
    State.COMPLETED: {State.REFUNDED},
    # A refund that fails after it was recorded is undone: the registration is what it was before.
    State.REFUNDED: {State.COMPLETED, State.NEEDS_ATTENTION},
}


class TransitionError(Exception):
    """A transition the state machine does not allow (a programming error, not a race)."""


def _merge_attention(reg: Registration, values: dict) -> None:
    """Add a new reason for attention to the ones already there: a second payment must stay visible."""
    reason = values.get("attention")
    if isinstance(reason, str) and reg.attention and reason not in reg.attention.split(","):
        values["attention"] = f"{reg.attention},{reason}"[:200]


def _alert(reg: Registration, values: dict, before: str | None, message: str) -> None:
    if isinstance(values.get("attention"), str):
        # ERROR, so that log-based alerting reaches the vendor's support team; operators get an e-mail per new reason.
        log.error("registration %s needs attention: %s", reg.id, values["attention"])
        notifications.attention(reg, before, values["attention"], message)


def _sources(target: State) -> set[State]:
    return {source for source, targets in TRANSITIONS.items() if target in targets}


def transition(
    reg: Registration,
    target: State,
    *,
    cause: str,
    message: str,
    expect: set[State] | None = None,
    where=(),
    details: dict | None = None,
    **values,
) -> bool:
    """Move `reg` to `target` if it is still in one of `expect`; False when another caller won.

    `where` adds conditions to the UPDATE (e.g. a retry being due); `values` are stored with it.
    """
    sources = _sources(target) if expect is None else set(expect)
    if not sources <= _sources(target):
        raise TransitionError(f"{sorted(map(str, sources))} -> {target} is not allowed")
    before, attention = reg.state, reg.attention
    _merge_attention(reg, values)
    stmt = (
        update(Registration)
        .where(Registration.id == reg.id, Registration.state.in_([s.value for s in sources]), *where)
        .values(state=target.value, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if db.session.execute(stmt).rowcount != 1:
        db.session.refresh(reg)
        log.info("registration %s: %s -> %s not taken (now %s), cause %s", reg.id, before, target, reg.state, cause)
        return False
    db.session.refresh(reg)
    db.session.add(
        TimelineEntry(
            registration_pk=reg.id,
            kind="state",
            from_state=str(before),
            to_state=target.value,
            cause=cause,
            message=message,
            details=details,
        )
    )
    db.session.flush()
    log.info("registration %s: %s -> %s, cause %s", reg.id, before, target, cause)
    _alert(reg, values, attention, message)
    return True


def record(reg: Registration, kind: str, *, cause: str, message: str, details: dict | None = None, **values) -> None:
    """Add a timeline entry that changes no state (an event, an attempt, a note), with field updates."""
    attention = reg.attention
    _merge_attention(reg, values)
    if values:
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id)
            .values(updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        db.session.refresh(reg)
    db.session.add(TimelineEntry(registration_pk=reg.id, kind=kind, cause=cause, message=message, details=details))
    db.session.flush()
    _alert(reg, values, attention, message)


def open_registration(
    registration_id: str, lms, price, cause: str, quantity: int = 1, seat_unit: str | None = None
) -> Registration:
    """The registration for an LTIaaS id, created in state pending on first sight, priced at `quantity` of the
    first offer's Price (paygate/sales/offers.py); flushes."""
    now = utcnow()
    totals = price.totals(quantity)
    created = insert_ignoring_duplicates(
        Registration,
        {
            "registration_id": registration_id,
            "flow_token": secrets.token_urlsafe(32),
            "state": State.PENDING.value,
            "lms_url": lms.url[:500],
            "lms_family": clean(lms.family, 100),
            "lms_version": clean(lms.version, 200),
            "lms_details": {"supportedScopes": lms.supported_scopes, "supportedMessages": lms.supported_messages},
            "price_id": price.id,
            "quantity": quantity,
            "seat_unit": seat_unit,
            "amount": totals[price.currency],
            "currency": price.currency,
            "price_options": {c: v for c, v in totals.items() if c != price.currency} or None,
            "product_name": clean(price.product_name, 250),
            "product_description": clean(price.product_description, 1000),
            "price_interval": price.period,
            "checkout_generation": 0,
            "attempt_count": 0,
            "attempt_uncertain": False,
            "access_attempts": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
    if created:
        db.session.add(
            TimelineEntry(
                registration_pk=reg.id,
                kind="state",
                to_state=State.PENDING.value,
                cause=cause,
                message=f"Registration opened by {lms.family or 'an LMS'} "
                f"at {lms.url}; price {format_amount(totals[price.currency], price.currency)}"
                f"{f' for {quantity} {seat_unit}(s)' if seat_unit else ''}"
                f"{' per ' + price.interval if price.recurring else ''}.",
            )
        )
        db.session.flush()
    return reg
