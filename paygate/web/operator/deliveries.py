"""An operator's "Send again" of a message to the vendor's systems (paygate/ops/vendor_outbox.py delivers it)."""

import re

from flask import g
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration, VendorMessage
from paygate.core.registrations import record
from paygate.ops import vendor_outbox
from paygate.web import after_answer
from paygate.web.operator.actions import Result, cause_of

# A webhook id as the outbox writes them ("msg_..."); anything else names no message (and never reaches the
# database: PostgreSQL refuses a NUL in a string).
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def message_of(reg: Registration, message_id: str) -> VendorMessage | None:
    """The registration's message with this webhook id; None for another registration's, or none."""
    if not _MESSAGE_ID.match(message_id or ""):
        return None
    return db.session.scalars(
        select(VendorMessage).where(VendorMessage.message_id == message_id, VendorMessage.registration_pk == reg.id)
    ).first()


def send_again(reg: Registration, message: VendorMessage, email: str) -> Result:
    """Make the message pending again with the same id, record who asked, commit; it is delivered after the answer,
    as every message a request writes (paygate/web/after_answer.py)."""
    cause = cause_of(email)
    licence_pk = message.licence_pk
    if not vendor_outbox.resend(message.id, cause=cause):
        db.session.rollback()
        return Result("info", f"Message {message.message_id} is being sent right now; look again in a moment.")
    record(
        reg,
        "operator",
        cause=cause,
        message=f"Sent {message.type} message {message.message_id} to the vendor again.",
        details={"message_id": message.message_id, "type": message.type, "was": message.status},
    )
    db.session.commit()
    g.setdefault(after_answer.WRITTEN, set()).add(licence_pk)
    return Result("ok", f"Message {message.message_id} is sent again, with the same webhook id.")
