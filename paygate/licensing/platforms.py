"""A licence's platforms: joining a licence by its key, free pilots, and the platform a newer one replaces.

docs/architecture.md, invariant 10. A registration joins a licence (its key, typed in the frame) or starts
a pilot's licence with no Stripe object: either moves it from pending to paid ("cleared to complete"), once,
by the state machine's conditional UPDATE, and completion follows as for a payment. Once a platform is
completed, `make_room` (under the licence's lock, so simultaneous completions queue) replaces the oldest
platforms past `PLATFORMS_PER_LICENCE`: the new one is registered first, so a school is never left with
none. Replaced platforms are inactive for good (`access.decide`); the one reconciler tells LTIaaS.
Functions flush; their callers commit.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select, update

from paygate.core.db import db, lock, utcnow
from paygate.core.models import Licence, Registration, State
from paygate.core.registrations import record, transition
from paygate.licensing import access, keys, licences

log = logging.getLogger(__name__)

# LMS hosts that many schools share (cloud Canvas gives every school the same issuer): one LMS URL there is
# not one school, so each registration there may start a pilot (README "Pilots").
SHARED_LMS_HOSTS = frozenset(
    {
        "canvas.instructure.com",
        "canvas.beta.instructure.com",
        "canvas.test.instructure.com",
    }
)


@dataclass(frozen=True)
class Found:
    """What a typed key names: `status` is `ok`, `not_a_key`, `unknown` or `lapsed` (with the licence)."""

    status: str
    licence: Licence | None = None
    key: str | None = None  # the key in normal form, when it is one


def key_of(reg: Registration) -> str:
    """The key of the licence `reg` opened, in normal form: derived from its flow token, never stored
    (licences.open_licence stores its hash)."""
    return keys.derived(reg.flow_token, current_app.config["SETTINGS"].secret_key)


def find(typed: str | None, *load) -> Found:
    """The licence a typed key names, by one indexed read of its hash, compared in constant time; `load`: loader
    options for what the caller reads of it (the licence page: its platforms and payments, in the same read)."""
    key = keys.normal(typed)
    if key is None:
        return Found("not_a_key")
    licence = (
        db.session.scalars(select(Licence).where(Licence.key_hash == keys.digest(key)).options(*load)).unique().first()
    )
    if licence is None or not keys.matches(key, licence.key_hash):
        return Found("unknown", key=key)
    return Found("ok", licence, key)


def stands(licence: Licence) -> bool:
    """Whether the licence's own facts give access now (an operator's override of one platform does not count)."""
    decision = access.decide(licence, None, utcnow(), current_app.config["SETTINGS"])
    return decision.active is True


def join(reg: Registration, typed: str | None, cause: str) -> Found:
    """Join the licence `typed` names, if it stands: `reg` is cleared to complete onto it. Flushes.

    A key of a licence that does not stand comes back `lapsed`; a registration no longer pending (paid
    meanwhile, or joined by a simultaneous request) is left as it is and the outcome says `ok` only if it
    is on that licence.
    """
    found = find(typed)
    if found.status != "ok":
        return found
    licence = found.licence
    if not stands(licence):
        return Found("lapsed", licence, found.key)
    if transition(
        reg,
        State.PAID,
        cause=cause,
        expect={State.PENDING, State.ABANDONED},
        message=f"Joins licence {licence.id} (key ending {licence.key_hint}) by its key: no payment.",
        details={"licence": licence.id, "key_hint": licence.key_hint},
        licence_pk=licence.id,
        next_attempt_at=None,
    ):
        access.refresh(reg, cause)
        return Found("ok", licence, found.key)
    db.session.refresh(reg)
    return Found("ok" if reg.licence_pk == licence.id else "taken", licence, found.key)


def pilot_allowed(reg: Registration) -> bool:
    """Whether this registration's LMS may start a pilot: one per LMS URL, except on shared hosts."""
    settings = current_app.config["SETTINGS"]
    if not settings.pilot_days:
        return False
    if _shared(reg.lms_url):
        return True
    earlier = (
        select(Registration.id)
        .join(Licence, Licence.id == Registration.licence_pk)
        .where(func.lower(Registration.lms_url) == reg.lms_url.lower(), Licence.pilot_ends_at.is_not(None))
        .limit(1)
    )
    return db.session.scalar(earlier) is None


def _shared(lms_url: str) -> bool:
    host = (urlsplit(lms_url).hostname or "").lower()
    return host in SHARED_LMS_HOSTS


def start_pilot(reg: Registration, cause: str) -> Licence | None:
    """Start a free pilot: a licence of kind `pilot` ending in PILOT_DAYS, and `reg` cleared to complete onto
    it. None when no pilot may start (none offered, its LMS had one, or it is no longer pending). Flushes."""
    settings = current_app.config["SETTINGS"]
    lock(f"pilot:{reg.lms_url.lower()}")  # two pilots started at once from one LMS: the second waits, then sees
    if not pilot_allowed(reg):
        return None
    ends = utcnow() + timedelta(days=settings.pilot_days)
    if not transition(
        reg,
        State.PAID,
        cause=cause,
        expect={State.PENDING, State.ABANDONED},
        message=f"Free pilot of {settings.pilot_days} days started, until {ends:%Y-%m-%d %H:%M} UTC: no payment.",
        details={"pilot_ends_at": ends.isoformat(sep=" ")},
        next_attempt_at=None,
    ):
        return None
    licence, _ = licences.open_licence(
        reg,
        "pilot",
        status="pilot",
        pilot_ends_at=ends,
        price_id=reg.price_id,
        quantity=reg.quantity,
        seat_unit=reg.seat_unit,
        currency=reg.currency,
    )
    access.refresh(reg, cause)
    return licence


def make_room(reg: Registration, cause: str) -> list[int]:
    """After `reg` completed: replace the oldest platforms of its licence past PLATFORMS_PER_LICENCE.

    Under the licence's lock, so that simultaneous completions on one licence queue and each platform is
    replaced once. Returns the registrations replaced (their access is decided again; the caller has the
    reconciler tell LTIaaS after its commit). Flushes.
    """
    if reg.licence_pk is None:
        return []
    licence = licences.locked(reg.licence_pk)
    limit = current_app.config["SETTINGS"].platforms_per_licence
    held = db.session.scalars(
        select(Registration)
        .where(
            Registration.licence_pk == licence.id,
            Registration.platform_id.is_not(None),
            Registration.replaced_at.is_(None),
        )
        .order_by(Registration.completed_at, Registration.id)
        .execution_options(populate_existing=True)
    ).all()
    excess = [r for r in held if r.id != reg.id][: max(len(held) - limit, 0)]
    now = utcnow()
    for old in excess:
        taken = db.session.execute(
            update(Registration)
            .where(Registration.id == old.id, Registration.replaced_at.is_(None))
            .values(replaced_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            continue
        db.session.refresh(old)
        record(
            old,
            "licence",
            cause=cause,
            details={"replaced_by": reg.id, "platform_id": reg.platform_id},
            message=f"Replaced on licence {licence.id} by platform {reg.platform_id} (registration {reg.id}): "
            f"the licence holds {limit} platform(s) at once.",
        )
        record(
            reg,
            "licence",
            cause=cause,
            details={"replaces": old.id, "platform_id": old.platform_id},
            message=f"Takes the place of platform {old.platform_id} (registration {old.id}) on licence "
            f"{licence.id}, which holds {limit} platform(s) at once; that one is deactivated.",
        )
        access.refresh(old, cause)
        log.info("licence %s: platform of registration %s replaced by registration %s", licence.id, old.id, reg.id)
    return [old.id for old in excess]


def refresh_all(licence: Licence, cause: str) -> list[int]:
    """Decide again the access of every platform on the licence (its facts changed); flushes. Their ids."""
    platforms = db.session.scalars(select(Registration).where(Registration.licence_pk == licence.id)).all()
    for platform in platforms:
        access.refresh(platform, cause)
    return [p.id for p in platforms]
