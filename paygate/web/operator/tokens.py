"""An operator's API tokens: made (shown once, only the SHA-256 kept), listed, revoked, each change in the operators'
audit; the account page and `flask --app wsgi operator token` both use these. Tokens act with their operator's role
(paygate/web/operator/auth.py loads them)."""

from datetime import timedelta

from sqlalchemy import select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Operator, OperatorAudit, OperatorToken
from paygate.web.operator.auth import TOKEN_DAYS, new_api_token

MAX_DAYS = 365
LABEL_LENGTH = 100
COMMAND_LINE = "command line"  # the actor of what the command line does


def audit(actor: str, action: str, subject: str, detail: str | None = None) -> None:
    """One row of the operators' audit (never a secret in `detail`)."""
    db.session.add(OperatorAudit(actor=actor, action=action, subject=subject, detail=detail and detail[:300]))


def make(operator: Operator, actor: str, label: str | None = None, days: int = TOKEN_DAYS) -> tuple[str, OperatorToken]:
    """A new token of `operator`, working `days` days (1 to MAX_DAYS): the token (shown once) and its stored row."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}")
    token, stored_hash = new_api_token()
    now = utcnow()
    stored = OperatorToken(
        operator_id=operator.id,
        token_hash=stored_hash,
        label=label,
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    db.session.add(stored)
    db.session.flush()
    audit(actor, "token made", operator.email, f"token {stored.id} {label or '(no label)'}, {days} days")
    return token, stored


def listing(operator: Operator) -> list[OperatorToken]:
    """The operator's tokens, newest first, revoked and expired ones too."""
    return list(
        db.session.scalars(
            select(OperatorToken)
            .where(OperatorToken.operator_id == operator.id)
            .order_by(OperatorToken.created_at.desc(), OperatorToken.id.desc())
        )
    )


def revoke(operator: Operator, actor: str, token_id: int | None = None) -> int:
    """Revoke one live token of the operator (`token_id`), or all of them: how many were revoked (0: none was live)."""
    query = update(OperatorToken).where(OperatorToken.operator_id == operator.id, OperatorToken.revoked_at.is_(None))
    if token_id is not None:
        query = query.where(OperatorToken.id == token_id)
    revoked = db.session.execute(query.values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    if revoked.rowcount:
        detail = f"token {token_id}" if token_id is not None else f"all live tokens ({revoked.rowcount})"
        audit(actor, "token revoked", operator.email, detail)
    return revoked.rowcount


def status(token: OperatorToken, now=None) -> str:
    """live, expired or revoked."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= (now or utcnow()) else "live"
