"""One registration as an operator reads it: the registration, its timeline, Checkout sessions, Stripe events and
the messages to the vendor's systems."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import defer, load_only

from paygate.core.db import db
from paygate.core.models import CheckoutSession, Registration, StripeEvent, TimelineEntry, VendorMessage
from paygate.web.operator.queries import valid_pk


@dataclass
class Detail:
    registration: Registration
    timeline: list[TimelineEntry]
    sessions: list[CheckoutSession]
    events: list[StripeEvent]
    vendor_messages: list[VendorMessage]


def detail(pk: int) -> Detail | None:
    if not valid_pk(pk):
        return None
    reg = db.session.get(Registration, pk)
    if reg is None:
        return None
    timeline = list(
        db.session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.registration_pk == pk)
            .order_by(TimelineEntry.at, TimelineEntry.id)
        )
    )
    sessions = list(
        db.session.scalars(
            select(CheckoutSession).where(CheckoutSession.registration_pk == pk).order_by(CheckoutSession.id)
        )
    )
    events = list(
        db.session.scalars(
            select(StripeEvent)
            .options(
                load_only(
                    StripeEvent.event_id,
                    StripeEvent.type,
                    StripeEvent.session_id,
                    StripeEvent.received_at,
                    StripeEvent.deliveries,
                    StripeEvent.outcome,
                    StripeEvent.registration_pk,
                )
            )
            .where(StripeEvent.registration_pk == pk)
            .order_by(StripeEvent.received_at, StripeEvent.event_id)
        )
    )
    return Detail(reg, timeline, sessions, events, vendor_messages(pk))


def vendor_messages(pk: int) -> list[VendorMessage]:
    """The registration's messages to the vendor, newest first, without their bodies (operators see how each
    delivery went; the body is what the vendor reads)."""
    return list(
        db.session.scalars(
            select(VendorMessage)
            .options(defer(VendorMessage.payload))
            .where(VendorMessage.registration_pk == pk)
            .order_by(VendorMessage.id.desc())
        )
    )
