"""Replacing a licence's key (docs/architecture.md, invariant 10): a new random key, kept only as its hash.

Whoever replaces it (the school's admin on the licence page, or an operator who is an admin) sees the new key
once (the caller shows it and stores it nowhere); the old key, and every one-hour link made with it
(paygate/licensing/keys.py: link_token), stops working at the commit. The timeline of the registration that
opened the licence says when, by whom, and the new key's last 4 characters (what operators see), never the key.
"""

import logging

from sqlalchemy import update

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.core.registrations import record
from paygate.licensing import keys

log = logging.getLogger(__name__)


def replace_key(licence: Licence, cause: str, by: str = "on the licence page") -> str | None:
    """Give the licence a new random key; the key in normal form, or None when its key was replaced
    meanwhile (by a simultaneous request: the one that wins replaces it, once). `by` says in the timeline where or
    by whom ("by operator a@b.example"). Flushes; the caller commits."""
    old_hash, old_hint = licence.key_hash, licence.key_hint
    key = keys.new()
    taken = db.session.execute(
        update(Licence)
        .where(Licence.id == licence.id, Licence.key_hash == old_hash)
        .values(key_hash=keys.digest(key), key_hint=keys.hint(key), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        return None
    db.session.refresh(licence, ["key_hash", "key_hint", "updated_at"])
    record(
        db.session.get(Registration, licence.registration_pk),
        "licence",
        cause=cause,
        details={"licence": licence.id, "old_key_hint": old_hint, "key_hint": licence.key_hint},
        message=f"Licence key replaced {by}: the key ending {old_hint or '?'} no longer works; "
        f"the new one ends {licence.key_hint}.",
    )
    log.info("licence %s: key replaced (now ending %s)", licence.id, licence.key_hint)
    return key
