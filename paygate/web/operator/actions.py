"""What operators do to a registration. Each action is recorded in its timeline and safe to repeat.

Pattern: check, commit (no lock or transaction is held while Stripe or LTIaaS is asked), call,
record the outcome, commit. Every state change goes through `registrations.transition`.
"""

import logging
import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Registration, State, TimelineEntry
from paygate.core.registrations import record, transition
from paygate.gateways import ltiaas
from paygate.licensing import access, reconciler
from paygate.sales.fulfilment import complete

log = logging.getLogger(__name__)

RETRYABLE_ATTENTION = {"completion_refused", "completion_uncertain", "completion_expired", "refunding"}


def reasons(reg: Registration) -> set[str]:
    """The reasons an operator must look, one registration may have several (comma-separated)."""
    return {r for r in (reg.attention or "").split(",") if r}


NOTE_MAX = 4000
_FORM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class Result:
    level: str  # ok, info (nothing to do: already done), error (nothing changed, or it failed)
    message: str


def cause_of(email: str) -> str:
    return f"operator {email}"


# What may be done, for the pages to offer the right buttons.


def can_retry(reg: Registration) -> bool:
    if reg.payment_session_id is None:
        return False
    return reg.state == State.PAID or (reg.state == State.NEEDS_ATTENTION and bool(reasons(reg) & RETRYABLE_ATTENTION))


def valid_form_id(value: str | None) -> bool:
    return bool(value) and _FORM_ID.match(value) is not None


def already_done(reg: Registration, form_id: str) -> bool:
    """Whether this form (one render of it) was already submitted; locks the row on PostgreSQL first,
    so that of two simultaneous submissions the second sees the first. Its licence is locked before it, as every
    writer of a licence and its platforms does (paygate/licensing/access.py `locked`): no deadlock with a webhook."""
    licence_pk = db.session.scalar(select(Registration.licence_pk).where(Registration.id == reg.id))
    if licence_pk is not None:
        access.locked(licence_pk)
    db.session.execute(select(Registration.id).where(Registration.id == reg.id).with_for_update())
    entries = db.session.scalars(
        select(TimelineEntry).where(
            TimelineEntry.registration_pk == reg.id, TimelineEntry.kind.in_(("note", "operator"))
        )
    )
    return any(isinstance(e.details, dict) and e.details.get("form") == form_id for e in entries)


# The actions.


def retry_completion(reg: Registration, email: str) -> Result:
    cause = cause_of(email)
    if not can_retry(reg):
        db.session.rollback()
        return Result(
            "info",
            f"Nothing to retry: the registration is {reg.state}" + (f" ({reg.attention})." if reg.attention else "."),
        )
    if reg.state == State.NEEDS_ATTENTION:
        reason = reg.attention
        if not transition(
            reg,
            State.PAID,
            cause=cause,
            expect={State.NEEDS_ATTENTION},
            message=f"Retry of the completion requested (was: {reason}).",
            details={"attention": reason},
            next_attempt_at=None,
            # the completion's reasons are answered by the retry; a second payment's stay
            attention=",".join(sorted(reasons(reg) - RETRYABLE_ATTENTION)) or None,
        ):
            db.session.commit()
            return Result("info", f"Nothing to retry: the registration is now {reg.state}.")
    else:
        record(
            reg,
            "operator",
            cause=cause,
            message="Retry of the completion requested, now.",
            details={"next_attempt_at": reg.next_attempt_at.isoformat() if reg.next_attempt_at else None},
            next_attempt_at=None,
        )
    db.session.commit()
    complete(reg, cause)  # claims the move to completing, calls LTIaaS outside any transaction, commits
    db.session.refresh(reg)
    if reg.state == State.COMPLETED:
        return Result("ok", f"Completed: registered at LTIaaS as platform {reg.platform_id}.")
    error = (reg.last_error or {}).get("message") or "unknown error"
    if reg.state == State.PAID:
        return Result(
            "error", f"The completion did not go through ({error}); it will be retried automatically, or retry again."
        )
    if reg.state == State.NEEDS_ATTENTION:
        return Result("error", f"The completion failed again: {error}.")
    return Result("info", f"Another caller is completing it right now (state {reg.state}).")


OVERRIDES = {"grant": True, "revoke": False, "licence": None}


def override_access(reg: Registration, choice: str, note: str, email: str, form_id: str) -> Result:
    """Grant or revoke the platform's access by hand, or give it back to the licence; then tell LTIaaS."""
    cause = cause_of(email)
    note = (note or "").strip()
    problem = _text_problem(note, None, "reason")
    if problem:
        return problem
    if choice != "licence" and not note:
        return Result("error", "Say why (for the timeline): an override holds until an operator removes it.")
    if already_done(reg, form_id):
        db.session.rollback()
        return Result("info", "Already done.")
    if not access.set_override(reg, OVERRIDES[choice], cause, note, form_id):
        db.session.rollback()
        return Result("info", "Nothing to change: that is the override already.")
    pk = reg.id
    db.session.commit()
    reconciler.sync(pk, cause)
    reg = db.session.get(Registration, pk)
    word = {True: "active", False: "inactive", None: "not told yet"}[reg.platform_active]
    if reg.platform_id is None:
        return Result("ok", "Recorded; the platform gets this access when it is registered.")
    if reg.access_wanted != reg.platform_active:
        return Result(
            "error",
            "Recorded, but LTIaaS did not take it yet "
            f"({(reg.access_error or {}).get('message', 'unknown error')}); it is retried "
            "automatically.",
        )
    return Result("ok", f"Done: the platform is {word} at LTIaaS ({reg.access_reason}).")


def check_access(reg: Registration, email: str) -> Result:
    """Read from LTIaaS whether the platform is active, where that is not known here (`platform_active`
    NULL: never told, or the last call's outcome unknown), and record it. If it differs from what the
    licence says, LTIaaS is told at once (the reconciler, as for any difference)."""
    cause = cause_of(email)
    if reg.platform_id is None:
        db.session.rollback()
        return Result("info", "No platform yet: there is nothing to check at LTIaaS.")
    if reg.platform_active is not None:
        db.session.rollback()
        return Result(
            "info", f"Already known: LTIaaS has the platform {'active' if reg.platform_active else 'inactive'}."
        )
    pk, platform_id = reg.id, reg.platform_id
    db.session.commit()  # nothing is held while LTIaaS is asked
    try:
        found = ltiaas.client().get_platform(platform_id).get("active")
        if not isinstance(found, bool):
            raise ltiaas.LtiaasError("LTIaaS answered without the platform's active flag")
    except (ltiaas.LtiaasError, ValueError) as exc:
        reg = db.session.get(Registration, pk)
        record(
            reg,
            "access",
            cause=cause,
            details={"platform_id": platform_id, "error": str(exc)},
            message=f"Checked platform {platform_id} at LTIaaS: no answer ({exc}). Nothing was changed.",
        )
        db.session.commit()
        return Result("error", f"LTIaaS did not say ({exc}). Nothing was changed; try again later.")
    reg = db.session.get(Registration, pk)
    values = {
        "platform_active": found,
        "access_attempts": 0,
        "access_next_at": None,
        "access_error": None,
        "updated_at": utcnow(),
    }
    if found == reg.access_wanted and reg.attention:  # LTIaaS has what it should: no longer unsynced
        values["attention"] = (
            ",".join(r for r in reg.attention.split(",") if r and r not in reconciler.SYNC_ATTENTION) or None
        )
    # Not while the reconciler is telling LTIaaS (its claim): what it records then is newer than this.
    taken = (
        db.session.execute(
            update(Registration)
            .where(
                Registration.id == pk, Registration.platform_active.is_(None), Registration.access_claimed_at.is_(None)
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    if not taken:
        db.session.rollback()
        return Result("info", "The platform's access changed meanwhile (LTIaaS is being told); look again.")
    db.session.refresh(reg)
    word = "active" if found else "inactive"
    differs = reg.access_wanted is not None and reg.access_wanted != found
    record(
        reg,
        "access",
        cause=cause,
        details={"platform_id": platform_id, "active": found},
        message=f"Checked at LTIaaS: platform {platform_id} is {word} there"
        + (
            f"; the licence says {'active' if reg.access_wanted else 'inactive'}, so LTIaaS is told."
            if differs
            else "."
        ),
    )
    db.session.commit()
    if not differs:
        return Result(
            "ok",
            f"LTIaaS has platform {platform_id} {word}"
            + (", as the licence says." if reg.access_wanted is not None else "."),
        )
    reconciler.sync(pk, cause)
    reg = db.session.get(Registration, pk)
    db.session.refresh(reg)
    if reg.platform_active == reg.access_wanted:
        return Result(
            "ok",
            f"LTIaaS had platform {platform_id} {word}; it was told the licence's access and "
            f"now has it {'active' if reg.platform_active else 'inactive'}.",
        )
    return Result(
        "error",
        f"LTIaaS has platform {platform_id} {word}, not what the licence says; telling it "
        f"failed ({(reg.access_error or {}).get('message', 'unknown error')}) and is retried "
        "automatically.",
    )


def _text_problem(text: str, empty: str | None, noun: str) -> Result | None:
    """Why an operator's text (a note, a resolution, a reason) cannot go into the timeline, if it cannot."""
    if not text:
        return Result("error", empty) if empty else None
    if len(text) > NOTE_MAX:
        return Result("error", f"The {noun} is too long (at most {NOTE_MAX} characters).")
    # Line breaks and tabs are text; other control characters are not (and PostgreSQL refuses a NUL).
    if any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in text):
        return Result("error", f"The {noun} cannot contain control characters.")
    return None


def add_note(reg: Registration, text: str, email: str, form_id: str) -> Result:
    text = (text or "").strip()
    problem = _text_problem(text, "The note is empty.", "note")
    if problem:
        return problem
    if already_done(reg, form_id):
        db.session.rollback()
        return Result("info", "This note was already added.")
    record(reg, "note", cause=cause_of(email), message=text, details={"form": form_id})
    db.session.commit()
    return Result("ok", "Note added.")


def resolve_attention(reg: Registration, text: str, email: str, form_id: str) -> Result:
    """Clear the attention mark of a registration whose state needs nothing (e.g. a duplicate payment
    refunded in the dashboard). A registration in needs_attention is resolved by retry or refund."""
    text = (text or "").strip()
    if reg.attention is None:
        db.session.rollback()
        return Result("info", "Nothing to resolve.")
    if reg.state == State.NEEDS_ATTENTION:
        db.session.rollback()
        return Result("error", "Retry the completion or refund the payment to resolve this registration.")
    problem = _text_problem(text, "Say what was done (for the timeline).", "text")
    if problem:
        return problem
    if already_done(reg, form_id):
        db.session.rollback()
        return Result("info", "Already resolved.")
    reason = reg.attention
    record(
        reg,
        "operator",
        cause=cause_of(email),
        details={"form": form_id, "attention": reason},
        message=f"Marked resolved ({reason}): {text}",
        attention=None,
    )
    db.session.commit()
    return Result("ok", "Marked resolved.")
