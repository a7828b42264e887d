"""Operators' second factor in tests: a fixed clock, codes of a time step, an enrolled operator, signing in with a
code."""

from datetime import datetime

import pyotp
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Operator
from paygate.web.operator import factors
from tests.helpers.operators import EMAIL, csrf_token, sign_in

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
STEP = 60_000_000  # the time step the fixed clock stands in (the middle of it, away from either edge)
NOW = STEP * 30 + 15


def stop_clock(monkeypatch, at: float = NOW) -> None:
    """Codes are checked against `at` instead of the real time."""
    monkeypatch.setattr(factors, "clock", lambda: at)


def code(step: int = STEP, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def enrol(app, email=EMAIL, secret=SECRET, last_step=None) -> list[str]:
    """The operator enrolled with `secret`; their 10 recovery codes."""
    with app.app_context():
        operator = db.session.scalars(select(Operator).where(Operator.email == email)).one()
        operator.totp_secret, operator.totp_last_step = secret, last_step
        operator.totp_enrolled_at = datetime(2026, 1, 1)
        codes = factors.new_recovery_codes(operator)
        db.session.commit()
    return codes


def operator_row(app, email=EMAIL) -> Operator:
    with app.app_context():
        return db.session.scalars(select(Operator).where(Operator.email == email)).one()


def send_code(client, typed: str, **kwargs):
    return client.post(
        "/operator/sign-in/code",
        data={"code": typed, "csrf_token": csrf_token(client, "/operator/sign-in/code")},
        **kwargs,
    )


def sign_in_with_code(client, typed: str, **kwargs):
    """Password, then the code: the answer to the code."""
    assert sign_in(client).headers["Location"].startswith("/operator/sign-in/code")
    return send_code(client, typed, **kwargs)
