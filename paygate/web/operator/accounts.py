"""Operator accounts as admins manage them, on the operators page and with `flask --app wsgi operator ...`: add one
(with a one-time set-password link), change a role, disable, enable, remove, reset a second factor, issue a new
link, set a password; each change leaves an OperatorAudit row. No change leaves the service without an active admin.

Writes flush; the caller commits once. A refusal is `Refused`, whose text is the one sentence to show."""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from paygate.core.db import db, lock, utcnow
from paygate.core.models import (
    ROLES,
    Operator,
    OperatorAudit,
    OperatorRecoveryCode,
    OperatorSession,
    OperatorToken,
)
from paygate.core.text import clean
from paygate.web.operator.passwords import hash_password, problem

LINK_HOURS = 24  # a set-password link works this long after it is issued
COMMAND_LINE = "command line"  # the actor of what `flask --app wsgi operator ...` does
AUDIT_SHOWN = 50
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class Refused(Exception):
    """A change that may not be made; its text is one sentence for the admin."""


class LinkInvalid(Exception):
    """A set-password link that cannot be used: `status` 404 (unknown, used, replaced) or 410 (expired)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Link:
    """A set-password link just issued: its token is shown once, and only its SHA-256 is kept."""

    email: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class Row:
    operator: Operator
    status: str  # active, link pending, link expired, disabled
    live_tokens: int


# Reading


def email_of(value) -> str | None:
    """An operator's e-mail as typed, normalised (one line, lower case), or None if it is not an address."""
    email = (clean(value, 320) or "").lower()
    return email if _EMAIL.match(email) else None


def by_email(email: str) -> Operator | None:
    return db.session.scalars(select(Operator).where(Operator.email == email)).first()


def status(operator: Operator) -> str:
    if operator.disabled_at is not None:
        return "disabled"
    if operator.password_set_at is None:
        pending = operator.invite_token_hash is not None and operator.invite_expires_at > utcnow()
        return "link pending" if pending else "link expired"
    return "active"


def rows() -> list[Row]:
    live = dict(
        db.session.execute(
            select(OperatorToken.operator_id, func.count())
            .where(OperatorToken.revoked_at.is_(None), OperatorToken.expires_at > utcnow())
            .group_by(OperatorToken.operator_id)
        ).all()
    )
    operators = db.session.scalars(select(Operator).order_by(Operator.email))
    return [Row(op, status(op), live.get(op.id, 0)) for op in operators]


def recent_audit(limit: int = AUDIT_SHOWN) -> list[OperatorAudit]:
    return list(db.session.scalars(select(OperatorAudit).order_by(OperatorAudit.id.desc()).limit(limit)))


# Changing


def add(email: str, role: str, actor: str, form_id: str | None = None) -> Link:
    """A new operator with no usable password and a set-password link valid LINK_HOURS."""
    _check_role(role)
    if form_id and _form_used(form_id):
        raise Refused(
            "Already done: this form was sent before. The link was shown on the first answer; issue a new one if it "
            "was lost."
        )
    if by_email(email) is not None:
        raise Refused(f"{email} is an operator already: issue a new set-password link for them instead.")
    operator = Operator(email=email, role=role, password_hash=_unusable_password())
    try:
        with db.session.begin_nested():  # another admin adding the same address at the same moment
            db.session.add(operator)
    except IntegrityError:
        raise Refused(f"{email} is an operator already: issue a new set-password link for them instead.") from None
    link = _new_link(operator)
    _audit(actor, "added", email, f"as {role}", form_id)
    return link


def issue_link(operator: Operator, actor: str, form_id: str | None = None) -> Link:
    """A new set-password link (a password reset once used); an older link of theirs stops working."""
    _lock(operator)
    if form_id and _form_used(form_id):
        raise Refused(
            "Already done: this form was sent before. The link was shown on the first answer; issue a new one if it "
            "was lost."
        )
    link = _new_link(operator)
    _audit(actor, "link issued", operator.email, f"valid {LINK_HOURS} h", form_id)
    return link


def change_role(operator: Operator, role: str, actor: str) -> bool:
    """False if the operator has that role already."""
    _check_role(role)
    _lock(operator)
    if operator.role == role:
        return False
    if role != "admin":
        _keep_an_admin(operator, "lose the admin role")
    before, operator.role = operator.role, role
    _audit(actor, "role changed", operator.email, f"{before} → {role}")
    return True


def disable(operator: Operator, actor: str) -> bool:
    """No session or token of theirs is accepted from now on, and a pending link stops working. False if disabled."""
    _lock(operator)
    if operator.disabled_at is not None:
        return False
    _keep_an_admin(operator, "be disabled")
    operator.disabled_at = utcnow()
    operator.invite_token_hash = operator.invite_expires_at = None
    end_sessions(operator)
    _audit(actor, "disabled", operator.email)
    return True


def enable(operator: Operator, actor: str) -> bool:
    _lock(operator)
    if operator.disabled_at is None:
        return False
    operator.disabled_at = None
    _audit(actor, "enabled", operator.email)
    return True


def remove(operator: Operator, actor: str) -> None:
    """Delete the operator; their sessions, tokens and recovery codes go with them, their audit rows stay."""
    _lock(operator)
    _keep_an_admin(operator, "be removed")
    for table in (OperatorSession, OperatorToken, OperatorRecoveryCode):
        db.session.execute(delete(table).where(table.operator_id == operator.id))
    email = operator.email
    db.session.delete(operator)
    _audit(actor, "removed", email)


def reset_factor(operator: Operator, actor: str) -> None:
    """They enrol a second factor again at their next sign-in; signed out now."""
    _lock(operator)
    operator.totp_secret = operator.totp_last_step = operator.totp_enrolled_at = None
    db.session.execute(delete(OperatorRecoveryCode).where(OperatorRecoveryCode.operator_id == operator.id))
    end_sessions(operator)
    _audit(actor, "second factor reset", operator.email)


def set_password(operator: Operator, password: str, actor: str) -> None:
    """A password reset: every session of theirs ends and every API token of theirs is revoked."""
    why = problem(password)
    if why:
        raise Refused(why)
    operator.password_hash = hash_password(password)
    operator.password_set_at = utcnow()
    operator.invite_token_hash = operator.invite_expires_at = None
    end_sessions(operator)
    db.session.execute(
        update(OperatorToken)
        .where(OperatorToken.operator_id == operator.id, OperatorToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    _audit(actor, "password set", operator.email)


def create(email: str, password: str, role: str, actor: str) -> Operator:
    """An operator with a password (the command line's way in, before any admin can sign in)."""
    _check_role(role)
    why = problem(password)
    if why:
        raise Refused(why)
    operator = Operator(email=email, role=role, password_hash=hash_password(password), password_set_at=utcnow())
    db.session.add(operator)
    db.session.flush()
    _audit(actor, "added", email, f"as {role}")
    return operator


# The set-password link


def operator_of_link(token: str, lock: bool = False) -> Operator:
    """The operator whose pending link `token` is; LinkInvalid if none is, or it expired."""
    found = None
    if isinstance(token, str) and 16 <= len(token) <= 100:
        stmt = select(Operator).where(Operator.invite_token_hash == _digest(token))
        found = db.session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise LinkInvalid(
            404, "This link does not work: it was used already, replaced by a newer one, or never issued."
        )
    if found.invite_expires_at is None or found.invite_expires_at <= utcnow():
        raise LinkInvalid(410, f"This link has expired (a link works {LINK_HOURS} hours): ask an admin for a new one.")
    return found


def end_sessions(operator: Operator) -> None:
    db.session.execute(delete(OperatorSession).where(OperatorSession.operator_id == operator.id))


def _new_link(operator: Operator) -> Link:
    token = secrets.token_urlsafe(32)
    operator.invite_token_hash = _digest(token)
    operator.invite_expires_at = utcnow() + timedelta(hours=LINK_HOURS)
    db.session.flush()
    return Link(operator.email, token, operator.invite_expires_at)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unusable_password() -> str:
    """Not an Argon2 hash, so no password matches it (check_password refuses it) until one is set by the link."""
    return "!unset-" + secrets.token_hex(16)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise Refused("Choose a role: viewer, support or admin.")


def _lock(operator: Operator) -> None:
    """Changes to operator accounts queue one behind another until the commit (PostgreSQL): first one lock for all of
    them, so that two admins demoting each other at once cannot each hold a row the other waits for (a deadlock),
    then the operator's row."""
    lock("operator-accounts")
    db.session.execute(select(Operator.id).where(Operator.id == operator.id).with_for_update())
    db.session.refresh(operator)


def _keep_an_admin(operator: Operator, change: str) -> None:
    """Refuses a change that would leave no active admin (signed in with a password, not disabled)."""
    if not _active_admin(operator):
        return
    admins = db.session.scalars(
        select(Operator.id)
        .where(Operator.role == "admin", Operator.disabled_at.is_(None), Operator.password_set_at.is_not(None))
        .order_by(Operator.id)
        .with_for_update()  # two admins demoting each other at once: the second sees the first's change
    ).all()
    if set(admins) <= {operator.id}:
        raise Refused(f"{operator.email} is the last active admin and cannot {change}: make another one admin first.")


def _active_admin(operator: Operator) -> bool:
    return operator.role == "admin" and operator.disabled_at is None and operator.password_set_at is not None


def _form_used(form_id: str) -> bool:
    """Whether a form (one render of it) already acted: its id ends the audit row it wrote."""
    return (
        db.session.scalar(
            select(OperatorAudit.id).where(OperatorAudit.detail.endswith(f"(form {form_id})", autoescape=True)).limit(1)
        )
        is not None
    )


def _audit(actor: str, action: str, subject: str, detail: str | None = None, form_id: str | None = None) -> None:
    if form_id:
        detail = f"{detail or ''} (form {form_id})".lstrip()
    db.session.add(OperatorAudit(actor=actor, action=action, subject=subject, detail=detail))
    db.session.flush()
