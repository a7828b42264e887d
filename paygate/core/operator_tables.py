"""Tables of the people who run the service: operators, their sessions, second factors and API tokens, and the
notifications e-mailed to them."""

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paygate.core.db import db, utcnow

ROLES = ("viewer", "support", "admin")  # each may do what the one before it may, and more


class Operator(db.Model):
    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    # viewer, support or admin (paygate/web/operator/roles.py decides what each may do).
    role: Mapped[str] = mapped_column(String(10), default="admin", server_default="admin")
    # None until the operator has chosen a password (an operator added on the operators page has a link instead).
    password_set_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The one-time set-password link of an added operator (or of a reset), kept only as its SHA-256.
    invite_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    # A disabled operator cannot sign in, and no session or token of theirs is accepted.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The second factor (RFC 6238): the secret, the last time step accepted (a code counts once), when enrolled.
    totp_secret: Mapped[str | None] = mapped_column(String(200))
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    totp_enrolled_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OperatorRecoveryCode(db.Model):
    """One of an operator's one-time recovery codes, kept only as its hash."""

    __tablename__ = "operator_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OperatorToken(db.Model):
    """An operator's API token, kept only as its SHA-256; it acts with its operator's role, until it expires or is
    revoked (a password reset or the operator's removal revokes them all)."""

    __tablename__ = "operator_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class OperatorSession(db.Model):
    """A signed-in operator session: its cookie names it, and it lives only while this row does
    (signing out deletes it, so a cookie captured before is refused afterwards)."""

    __tablename__ = "operator_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie's session id
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class OperatorAudit(db.Model):
    """What was done to operator accounts, by whom: added, role changed, disabled, removed, factor reset, token
    made or revoked (an operator's actions on registrations are in the registration's timeline)."""

    __tablename__ = "operator_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(320))  # the acting operator's e-mail, or "command line"
    action: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(320))  # the e-mail of the operator it was done to
    detail: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Notification(db.Model):
    """One e-mail to operators (docs/architecture.md, invariant 12): written in the transaction of what it reports,
    one per registration and reason, then sent (retried while the mail server fails) by whoever runs the outbox."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"))
    reason: Mapped[str] = mapped_column(String(100))  # needs_attention:<why>, dispute_opened, access_untold...
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, sent, failed (gave up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        Index("uq_notifications_registration_pk_reason", "registration_pk", "reason", unique=True),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )
