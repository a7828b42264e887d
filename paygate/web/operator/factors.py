"""An operator's second factor: a TOTP secret (RFC 6238: SHA-1, 6 digits, 30 s), its enrolment with a QR code, codes
accepted once, and one-time recovery codes kept only as their hashes.

Each code is spent by one conditional UPDATE, so two requests carrying the same code at the same moment cannot both
pass: the database lets one of them change the row and tells the other that nothing matched. The secret is stored as
is: no library to encrypt it at rest is among the dependencies (a database dump holds it; the password is needed too).
"""

import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from sqlalchemy import delete, or_, update

from paygate.core.db import db, utcnow
from paygate.core.models import Operator, OperatorRecoveryCode

ISSUER = "paygate"  # what an authenticator app lists the account under, beside the operator's e-mail
RECOVERY_CODES = 10
# Drift allowed between the server's clock and the phone's: one 30-second step either way.
DRIFT_STEPS = 1
# Recovery codes: 10 letters and digits of an alphabet without look-alikes (about 50 bits), shown as two groups.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 10

# The clock codes are checked against (tests move it instead of waiting for the next 30-second step).
clock = time.time


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters, 160 bits, as RFC 4226 recommends


def grouped(secret: str) -> str:
    """The secret as a person types it from the screen: groups of four."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(operator: Operator, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=operator.email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (drawn on the server: no script, no outside image)."""
    return segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff", title="QR code of the secret")


def _typed_code(code: str) -> str:
    return "".join(c for c in (code or "")[:40] if not c.isspace() and c != "-").lower()


def matched_step(secret: str, code: str) -> int | None:
    """The time step (of now, or one before or after) whose TOTP is `code`; None if none."""
    code = _typed_code(code)
    if len(code) != 6 or not (code.isascii() and code.isdigit()):  # compare_digest takes ASCII only
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(clock() // totp.interval)
    found = None
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # the latest one that matches
    return found


def spend_totp(operator: Operator, code: str) -> bool:
    """Whether `code` is the enrolled operator's current TOTP, not accepted before: its time step is written down in
    the same statement that checks it is later than the last one accepted (the request commits it)."""
    if operator.totp_enrolled_at is None or not operator.totp_secret:
        return False
    step = matched_step(operator.totp_secret, code)
    if step is None:
        return False
    spent = db.session.execute(
        update(Operator)
        .where(
            Operator.id == operator.id,
            Operator.totp_enrolled_at.is_not(None),
            or_(Operator.totp_last_step.is_(None), Operator.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return spent.rowcount == 1


def recovery_hash(code: str) -> str:
    return hashlib.sha256(_typed_code(code).encode()).hexdigest()


def spend_recovery_code(operator: Operator, code: str) -> bool:
    """Whether `code` is one of the operator's recovery codes not used before: marked used by the same statement."""
    typed = _typed_code(code)
    if len(typed) != _RECOVERY_LENGTH or not typed.isascii() or operator.totp_enrolled_at is None:
        return False
    spent = db.session.execute(
        update(OperatorRecoveryCode)
        .where(
            OperatorRecoveryCode.operator_id == operator.id,
            OperatorRecoveryCode.code_hash == recovery_hash(typed),
            OperatorRecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return spent.rowcount == 1


def spend_code(operator: Operator, code: str) -> str | None:
    """Which kind, "totp" or "recovery code", when `code` signs the operator in (spent from now on), else None."""
    if spend_totp(operator, code):
        return "totp"
    if spend_recovery_code(operator, code):
        return "recovery code"
    return None


def new_recovery_codes(operator: Operator) -> list[str]:
    """Ten new recovery codes (shown once: only their hashes are kept); every earlier one of the operator is void."""
    db.session.execute(delete(OperatorRecoveryCode).where(OperatorRecoveryCode.operator_id == operator.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        db.session.add(OperatorRecoveryCode(operator_id=operator.id, code_hash=recovery_hash(raw)))
    db.session.flush()
    return codes


def pending_secret(operator: Operator) -> str:
    """The secret an operator not yet enrolled is shown: kept on the server (not in the cookie) until confirmed, and
    the same one on every visit until then, so that a phone that scanned it once goes on working."""
    if not operator.totp_secret:
        operator.totp_secret = new_secret()
        db.session.flush()
    return operator.totp_secret


def confirm_enrolment(operator: Operator, code: str) -> bool:
    """Whether `code` is a current code of the pending secret: then the factor is enrolled (once, whoever confirms
    first) and the code's step counts as used."""
    if operator.totp_enrolled_at is not None or not operator.totp_secret:
        return False
    step = matched_step(operator.totp_secret, code)
    if step is None:
        return False
    enrolled = db.session.execute(
        update(Operator)
        .where(
            Operator.id == operator.id,
            Operator.totp_enrolled_at.is_(None),
            Operator.totp_secret == operator.totp_secret,
        )
        .values(totp_enrolled_at=utcnow(), totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if enrolled.rowcount != 1:
        return False
    db.session.refresh(operator)
    return True
