"""What the vendor's systems are told of a licence: the licence API's `licence` and the events' (README "The
vendor's systems").

The one place that turns a licence and its access into the status the vendor's tool reads: `active`, `pilot`,
`grace` (an overdue invoice within its grace, a subscription `past_due`: still active, but money is owed) or
`inactive`; and the date that matters (`ends_at`): a pilot's end, an unpaid invoice's due date, a period's end.
It reads columns only (never `payments`), so the API's lean read can hand it a plain row.
"""

from datetime import datetime

STATUSES = ("active", "pilot", "grace", "inactive")


def iso(at: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with its zone: 2027-01-06T10:00:00Z."""
    return None if at is None else f"{at:%Y-%m-%dT%H:%M:%S}Z"


def status(licence, active: bool | None, now: datetime) -> str:
    """`active`, `pilot`, `grace` or `inactive`, given the access the licence gives (paygate/licensing/access.py)."""
    if licence is None or not active:
        return "inactive"
    if licence.kind == "pilot":
        return "pilot"
    if licence.kind == "subscription":
        return "grace" if licence.status == "past_due" else "active"
    if licence.kind == "invoice":
        if licence.subscription_status == "past_due":
            return "grace"
        if licence.status != "paid" and licence.due_at is not None and now >= licence.due_at:
            return "grace"
        if licence.status != "paid" and licence.pilot_ends_at is not None and now < licence.pilot_ends_at:
            return "pilot"  # a pilot paid by invoice is still a pilot until the invoice is paid
    return "active"


def ends_at(licence) -> datetime | None:
    """The date that matters: a pilot's end, an unpaid invoice's due date, else the paid period's end."""
    if licence is None:
        return None
    if licence.kind == "pilot":
        return licence.pilot_ends_at
    if licence.kind == "invoice" and licence.status != "paid" and licence.due_at is not None:
        return licence.due_at
    return licence.period_end


def licence_view(licence, product: str | None, active: bool | None, now: datetime) -> dict:
    """The licence as the licence API shows it, without `manage_url` (which the API adds, one hour at a time)."""
    if licence is None:
        return {
            "status": "inactive",
            "kind": None,
            "price_id": None,
            "product": product,
            "quantity": None,
            "seat_unit": None,
            "ends_at": None,
        }
    return {
        "status": status(licence, active, now),
        "kind": licence.kind,
        "price_id": licence.price_id,
        "product": product,
        "quantity": licence.quantity,
        "seat_unit": licence.seat_unit,
        "ends_at": iso(ends_at(licence)),
    }
