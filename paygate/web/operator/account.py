"""The signed-in operator's own account, `/operator/account` (every role): e-mail, role, second factor (and new
recovery codes), and API tokens to make, list and revoke. A new token or new codes are shown once, on the answer."""

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from paygate.core.db import db, utcnow
from paygate.core.models import Operator, OperatorRecoveryCode, OperatorToken
from paygate.core.text import clean
from paygate.web.operator import auth, factors, tokens
from paygate.web.operator.blueprint import bp

MAX_ID = 2**31 - 1  # a token's id is an INTEGER column: a larger number names none (and PostgreSQL would refuse it)


@bp.get("/account")
def account():
    return _page()


@bp.post("/account/recovery-codes")
def account_recovery_codes():
    operator = _me()
    if operator.totp_enrolled_at is None:
        return _page(error="You have no second factor yet: recovery codes come with it, at a sign-in."), 400
    codes = factors.new_recovery_codes(operator)
    tokens.audit(operator.email, "recovery codes renewed", operator.email, f"{len(codes)} codes")
    db.session.commit()
    auth.log.info("operator %s made new recovery codes", operator.email)
    return render_template("operator/recovery_codes.html", codes=codes, next_url=url_for("operator.account"))


@bp.post("/account/tokens")
def account_token():
    operator = _me()
    label = clean(request.form.get("label"), tokens.LABEL_LENGTH)
    days_text = (request.form.get("days") or "").strip()
    if not days_text:
        days = auth.TOKEN_DAYS
    elif days_text.isascii() and days_text.isdigit() and len(days_text) <= 3 and 1 <= int(days_text) <= tokens.MAX_DAYS:
        days = int(days_text)
    else:
        return _page(error=f"Days must be a whole number from 1 to {tokens.MAX_DAYS}.", label=label or ""), 400
    token, stored = tokens.make(operator, operator.email, label=label, days=days)
    db.session.commit()
    auth.log.info("operator %s made API token %s", operator.email, stored.id)
    return _page(new_token=token, new_token_id=stored.id)


@bp.post("/account/tokens/<int:token_id>/revoke")
def account_token_revoke(token_id: int):
    operator = _me()
    found = db.session.get(OperatorToken, token_id) if 0 < token_id <= MAX_ID else None
    if found is None or found.operator_id != operator.id:  # another's token is not named to them either
        return _page(error="You have no such API token."), 404
    if tokens.revoke(operator, operator.email, token_id=token_id):
        db.session.commit()
        auth.log.info("operator %s revoked API token %s", operator.email, token_id)
        flash(f"API token {token_id} revoked: it is refused from now on.", "ok")
    else:
        flash(f"API token {token_id} was already revoked.", "info")
    return redirect(url_for("operator.account"), 303)


def _me() -> Operator:
    return db.session.get(Operator, current_user.pk)


def _page(**shown):
    operator = _me()
    codes_left = db.session.scalar(
        select(func.count())
        .select_from(OperatorRecoveryCode)
        .where(OperatorRecoveryCode.operator_id == operator.id, OperatorRecoveryCode.used_at.is_(None))
    )
    now = utcnow()
    listed = [(t, tokens.status(t, now)) for t in tokens.listing(operator)]
    return render_template(
        "operator/account.html",
        operator=operator,
        codes_left=codes_left,
        tokens=listed,
        max_days=tokens.MAX_DAYS,
        default_days=auth.TOKEN_DAYS,
        required=auth.second_factor_required(),
        **shown,
    )
