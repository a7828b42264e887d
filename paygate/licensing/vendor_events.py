"""Events for the vendor's systems, written to the outbox (docs/architecture.md, invariant 12) in the transaction of
the change they report; paygate/ops/vendor_outbox.py delivers them.

Each is written once per change: the licence as last told (`Licence.vendor_state`, a hash) and a platform's access
as last told (`Registration.vendor_access`) move by a conditional UPDATE, and only the caller whose UPDATE changed
the row writes the message, so two transactions applying one change at once write it once. The caller passes the
licence's own access (paygate/licensing/access.py decides it; that module calls this one, never the reverse).
Nothing here is written while VENDOR_WEBHOOK_URL is unset.
"""

import hashlib
import json
import secrets
from datetime import datetime

from flask import current_app, g, has_app_context
from sqlalchemy import or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration, VendorMessage
from paygate.licensing import vendor_view

COMPLETED = "registration.completed"
LICENCE_UPDATED = "licence.updated"
ACCESS_CHANGED = "platform.access_changed"


def enabled() -> bool:
    """Whether the vendor's systems are told anything (VENDOR_WEBHOOK_URL is set)."""
    return current_app.config["SETTINGS"].vendor_webhook_url is not None


def licence_data(licence: Licence | None, licence_active: bool | None, now: datetime, product: str | None) -> dict:
    """The licence as the licence API shows it (no `manage_url`), with its platforms that have a platform id."""
    data = vendor_view.licence_view(licence, product, licence_active, now)
    data["platforms"] = [] if licence is None else _platforms(licence, licence_active)
    return data


def _platforms(licence: Licence, licence_active: bool | None) -> list[dict]:
    """Its platforms, oldest first: active as the licence gives it (an override is the platform's own news)."""
    rows = db.session.execute(
        select(Registration.platform_id, Registration.replaced_at)
        .where(Registration.licence_pk == licence.id, Registration.platform_id.is_not(None))
        .order_by(Registration.id)
    ).all()
    return [{"id": pid, "active": licence_active is True and replaced is None} for pid, replaced in rows]


def _product(licence: Licence | None, reg: Registration) -> str | None:
    """The Product the licence was sold as: its origin registration's (the platform's own without a licence)."""
    return licence.registration.product_name if licence is not None else reg.product_name


def licence_changed(licence: Licence, licence_active: bool | None, now: datetime) -> bool:
    """licence.updated, when the licence as the vendor sees it differs from what it was last told; flushes.

    A licence with no platform at LTIaaS yet is not told: the vendor's tool knows platforms, and the first one's
    registration.completed comes first."""
    if not enabled():
        return False
    origin = licence.registration
    data = licence_data(licence, licence_active, now, origin.product_name)
    if not data["platforms"]:
        return False
    digest = hashlib.sha256(_json(data).encode()).hexdigest()
    taken = db.session.execute(
        update(Licence)
        .where(Licence.id == licence.id, or_(Licence.vendor_state.is_(None), Licence.vendor_state != digest))
        .values(vendor_state=digest)
        .execution_options(synchronize_session=False)
    ).rowcount
    set_committed_value(licence, "vendor_state", digest)
    if taken != 1:
        return False  # told already (perhaps by a simultaneous transaction applying the same change)
    _write(LICENCE_UPDATED, origin, licence.id, now, {"licence": data})
    return True


def access_changed(reg: Registration, licence: Licence | None, licence_active: bool | None, now: datetime) -> bool:
    """platform.access_changed, when a platform's decided access differs from what the vendor was last told;
    flushes. Only a platform at LTIaaS (completed); `licence` is the one it is on, `licence_active` its own."""
    wanted = reg.access_wanted
    if not enabled() or reg.platform_id is None or wanted is None:
        return False
    if not _take_access(reg, wanted):
        return False
    data = {
        "licence": licence_data(licence, licence_active, now, _product(licence, reg)),
        "platform": {"id": reg.platform_id, "active": wanted},
    }
    _write(ACCESS_CHANGED, reg, reg.licence_pk, now, data)
    return True


def completed(reg: Registration, licence: Licence | None, licence_active: bool | None, now: datetime) -> None:
    """registration.completed, once: `reg` has just become a platform at LTIaaS (its one move to completed). Its
    access is told with it (no platform.access_changed follows); then the licence, which now lists it. Flushes."""
    if not enabled() or _told_completed(reg):
        return
    wanted = reg.access_wanted is not False  # as LTIaaS registered it (paygate/sales/fulfilment.py)
    data = {
        "licence": licence_data(licence, licence_active, now, _product(licence, reg)),
        "platform": {"id": reg.platform_id, "active": wanted},
    }
    _write(COMPLETED, reg, reg.licence_pk, now, data)
    _take_access(reg, wanted)
    if licence is not None:
        licence_changed(licence, licence_active, now)


def _told_completed(reg: Registration) -> bool:
    """Whether registration.completed was written for `reg` already (LTIaaS completes an id once; this says so too)."""
    told = select(VendorMessage.id).where(VendorMessage.registration_pk == reg.id, VendorMessage.type == COMPLETED)
    return db.session.scalar(told.limit(1)) is not None


def _take_access(reg: Registration, wanted: bool) -> bool:
    """Move what the vendor was told of the platform's access to `wanted`; True for the one caller that moved it."""
    taken = db.session.execute(
        update(Registration)
        .where(
            Registration.id == reg.id,
            or_(Registration.vendor_access.is_(None), Registration.vendor_access != wanted),
        )
        .values(vendor_access=wanted)
        .execution_options(synchronize_session=False)
    ).rowcount
    set_committed_value(reg, "vendor_access", wanted)
    return taken == 1


def _write(kind: str, reg: Registration, licence_pk: int | None, now: datetime, data: dict) -> None:
    """One message, its body fixed now (it is signed and sent byte for byte the same every try); flushes so that
    ids follow the order of writing, which is the order of delivery."""
    if licence_pk is not None:
        # The licence's row lock, held to the commit: messages of one licence then commit in the order of their ids,
        # so the sender (which sends a licence's oldest pending one first) never sees a later one before an earlier.
        db.session.execute(select(Licence.id).where(Licence.id == licence_pk).with_for_update())
    body = {
        "type": kind,
        "timestamp": vendor_view.iso(now),
        "data": {"registration_id": reg.registration_id, "platform_id": reg.platform_id, **data},
    }
    db.session.add(
        VendorMessage(
            message_id="msg_" + secrets.token_urlsafe(24),
            type=kind,
            registration_pk=reg.id,
            licence_pk=licence_pk,
            payload=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            status="pending",
            attempts=0,
            next_attempt_at=utcnow(),  # due at once by the real clock, whatever time the caller decides at
        )
    )
    db.session.flush()
    if has_app_context():  # the request (or its after-the-answer work) delivers these once it has answered
        g.setdefault("vendor_messages_written", set()).add(licence_pk)


def _json(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
