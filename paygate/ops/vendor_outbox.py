"""The outbox of events for the vendor's systems (docs/architecture.md, invariant 12): delivered here.

Messages are written by paygate/licensing/vendor_events.py in the transaction of the change they report.
Whoever runs the outbox (the request that wrote them, after its answer; every worker pass) delivers them in
order per licence, at least once, retrying with backoff for more than 3 days, with the same `webhook-id`
every time; after the last try the registration needs attention.
"""

import logging
from datetime import datetime

from sqlalchemy import update

from paygate.core.db import db, utcnow
from paygate.core.models import VendorMessage

log = logging.getLogger(__name__)

# The reason an operator is told on the registration when a message is given up.
GAVE_UP = "vendor_webhook_failed"


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
        .values(status="pending", attempts=0, next_attempt_at=now, claimed_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    log.info("vendor message %s: sent again (%s)", message_pk, cause)
    return done == 1


def deliver_due(now: datetime | None = None, stop=None, licence_pks=None) -> dict:
    """Deliver every message that is due (only those of `licence_pks`, when given); returns counts."""
    raise NotImplementedError("the sender is being written")
