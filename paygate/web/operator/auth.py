"""Who is an operator: sign-in sessions (Flask-Login, each kept on the server), the step between the password and
the second factor, API tokens and CSRF.

Failed sign-ins are throttled in the sign-in views (paygate/web/throttling.py decides the rates)."""

import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, jsonify, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import delete, select

from paygate.core.db import db, utcnow
from paygate.core.models import Operator, OperatorSession, OperatorToken
from paygate.web.operator import factors
from paygate.web.operator.passwords import check_password, hash_password

API_PREFIX = "/operator/api/"
TOKEN_PREFIX = "pgo_"  # noqa: S105 - what every operator API token starts with, not a token
# A signed-in session ends after this long, whatever the browser does with its cookie.
SESSION_MAX_AGE_SECONDS = 12 * 3600
# An API token works this long after it is made.
TOKEN_DAYS = 90
# A token's last use is written down to this precision (not a write on every call).
LAST_USE_PRECISION = timedelta(minutes=1)
# The key of the session's server-side id in the signed cookie.
SESSION_ID = "operator_session"
# The key of "the password was right for operator N at T" in the signed cookie, and how long that lasts.
PASSWORD_PASSED = "operator_password_passed"  # noqa: S105 - a session key, not a password
PASSWORD_PASSED_SECONDS = 5 * 60

log = logging.getLogger(__name__)
login_manager = LoginManager()
# Verifying against this when the e-mail is unknown keeps both answers equally slow.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class SignedIn(UserMixin):
    """The operator behind a request: from the session, or from an API token."""

    def __init__(self, operator: Operator, via: str):
        self.pk = operator.id
        self.email = operator.email
        self.role = operator.role
        self.via = via  # "session" or "token"
        self._stamp = password_stamp(operator)

    def get_id(self) -> str:
        # The stamp changes with the password: a reset signs every old session out.
        return f"{self.pk}.{self._stamp}"


def password_stamp(operator: Operator) -> str:
    return hashlib.sha256(operator.password_hash.encode()).hexdigest()[:16]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_expiry():
    return utcnow() + timedelta(days=TOKEN_DAYS)


def new_api_token() -> tuple[str, str]:
    """A new operator API token and the hash that is stored (the token itself never is)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


@login_manager.user_loader
def _load_from_session(user_id: str):
    pk, _, stamp = (user_id or "").partition(".")
    if not pk.isdigit():
        return None
    session_id = session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return None
    # The session must still exist on the server: signing out deleted it, whatever the cookie says.
    operator = db.session.scalars(
        select(Operator)
        .join(OperatorSession, OperatorSession.operator_id == Operator.id)
        .where(
            Operator.id == int(pk),
            Operator.disabled_at.is_(None),
            OperatorSession.token_hash == token_hash(session_id),
            OperatorSession.expires_at > utcnow(),
        )
    ).first()
    if operator is None or not hmac.compare_digest(password_stamp(operator), stamp):
        return None
    return SignedIn(operator, "session")


@login_manager.request_loader
def _load_from_token(req):
    """`Authorization: Bearer <token>`, for the JSON API only."""
    if not req.path.startswith(API_PREFIX):
        return None
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    now = utcnow()
    found = db.session.execute(
        select(Operator, OperatorToken)
        .join(OperatorToken, OperatorToken.operator_id == Operator.id)
        .where(
            OperatorToken.token_hash == token_hash(token),
            OperatorToken.revoked_at.is_(None),
            OperatorToken.expires_at > now,
            Operator.disabled_at.is_(None),
        )
    ).first()
    if found is None:
        return None
    operator, stored = found
    signed_in = SignedIn(operator, "token")
    if stored.last_used_at is None or now - stored.last_used_at > LAST_USE_PRECISION:
        # Written apart from the request's own work (a GET commits nothing), at most once a minute per token.
        stored.last_used_at = now
        db.session.commit()
    return signed_in


@login_manager.unauthorized_handler
def _unauthorized():
    if request.path.startswith(API_PREFIX):
        response = jsonify(error="Unauthorized", message="Sign in, or send Authorization: Bearer <operator API token>.")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="operator"'
        return response
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("operator.sign_in", next=safe_next(target)))


def safe_next(target: str | None) -> str | None:
    """Only a path of the operator pages, `/operator` or `/operator/...` (its query kept), may be returned
    to after signing in, the sign-in pages excepted. The path is judged percent-decoded (until nothing is
    left to decode): no `.` or `..` segment, no `//`, no backslash, no control character, no scheme or host."""
    if not target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme or parts.netloc or parts.fragment:
        return None
    path = parts.path
    for _ in range(3):  # %252e%252e is %2e%2e once decoded, .. twice
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return None
    if (path != "/operator" and not path.startswith("/operator/")) or path.startswith("/operator/sign-"):
        return None
    if "//" in path or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    return target.rstrip("?")


def authenticate(email: str, password: str) -> Operator | None:
    email = (email or "").strip().lower()
    # No operator's address has a control character (and PostgreSQL refuses a NUL in a query at all).
    known = email and email.isprintable()
    operator = db.session.scalars(select(Operator).where(Operator.email == email)).first() if known else None
    if operator is None:
        check_password(_DUMMY_HASH, password or "")
        log.warning("operator sign-in failed: no operator %s, from %s", _typed(email), request.remote_addr)
        return None
    if not check_password(operator.password_hash, password or ""):
        log.warning("operator sign-in failed: wrong password for %s, from %s", operator.email, request.remote_addr)
        return None
    # Checked after the password, so that the answer (and its time) says nothing of the account to a guesser.
    if operator.disabled_at is not None:
        log.warning("operator sign-in failed: %s is disabled, from %s", operator.email, request.remote_addr)
        return None
    if operator.password_set_at is None:
        log.warning(
            "operator sign-in failed: %s has not set a password yet, from %s", operator.email, request.remote_addr
        )
        return None
    return operator


def second_factor_required() -> bool:
    return current_app.config["SETTINGS"].operator_2fa == "required"


def password_passed(operator: Operator) -> None:
    """Remember, in the signed cookie and for a few minutes only, that the operator's password was right: not signed
    in yet, the second factor comes next."""
    session.clear()
    session[PASSWORD_PASSED] = {"operator": operator.id, "at": int(time.time()), "stamp": password_stamp(operator)}
    log.info("operator %s: password right, second factor next, from %s", operator.email, request.remote_addr)


def passed_password() -> tuple[Operator | None, bool]:
    """(The operator whose password was right lately in this browser, or None; whether such a step ran out.) Refused
    too when the operator was disabled or their password changed since."""
    passed = session.get(PASSWORD_PASSED)
    if not isinstance(passed, dict):
        return None, False
    pk, at, stamp = passed.get("operator"), passed.get("at"), passed.get("stamp")
    if not isinstance(pk, int) or not isinstance(at, int) or not isinstance(stamp, str):
        return None, False
    if not 0 <= time.time() - at <= PASSWORD_PASSED_SECONDS:
        session.pop(PASSWORD_PASSED, None)
        return None, True
    operator = db.session.get(Operator, pk)
    if operator is None or operator.disabled_at is not None or not hmac.compare_digest(password_stamp(operator), stamp):
        session.pop(PASSWORD_PASSED, None)
        return None, False
    return operator, False


def second_factor(operator: Operator, code: str) -> bool:
    """Whether `code` (of the authenticator app, or a recovery code) completes the operator's sign-in; spent if so.
    Logged either way, with the e-mail and never the code."""
    how = factors.spend_code(operator, code)
    if how is None:
        log.warning("operator sign-in failed: wrong or used code for %s, from %s", operator.email, request.remote_addr)
        return False
    if how == "recovery code":
        log.warning("operator %s used a recovery code, from %s", operator.email, request.remote_addr)
    return True


def _typed(email: str) -> str:
    """What was typed as the e-mail, for a log: a password typed in the wrong field is not written down."""
    if "@" in email and " " not in email and len(email) <= 320:
        return repr(email)  # quoted and escaped: nothing typed can forge a log line
    return "(not an e-mail address)"


def sign_in(operator: Operator) -> None:
    """A new server-side session for the operator, named by a random id in the signed cookie."""
    session.clear()  # nothing from before the sign-in survives it
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.execute(
        delete(OperatorSession).where(OperatorSession.operator_id == operator.id, OperatorSession.expires_at <= now)
    )
    db.session.add(
        OperatorSession(
            operator_id=operator.id,
            token_hash=token_hash(session_id),
            created_at=now,
            expires_at=now + timedelta(seconds=SESSION_MAX_AGE_SECONDS),
        )
    )
    db.session.commit()
    session[SESSION_ID] = session_id
    login_user(SignedIn(operator, "session"))
    log.info("operator %s signed in, from %s", operator.email, request.remote_addr)


def sign_out() -> None:
    """End the session on the server too: its cookie, wherever a copy of it is, is refused from now on."""
    session_id = session.get(SESSION_ID)
    email = current_user.email if current_user.is_authenticated else None
    if isinstance(session_id, str):
        db.session.execute(delete(OperatorSession).where(OperatorSession.token_hash == token_hash(session_id)))
        db.session.commit()
    logout_user()
    log.info("operator %s signed out", email or "(not signed in)")
    session.clear()


# Paths that never use a session: the LMS admin's flow (in the frame, where cookies are third-party
# anyway), Stripe's webhooks and the licence API (a bearer token).
SESSIONLESS_PREFIXES = ("/flow/", "/pre-approval", "/lti/register", "/webhooks/", "/api/", "/licence/")


class Sessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions (operators sign in with them), except on SESSIONLESS_PREFIXES:
    there the session is Flask's empty read-only one, so no cookie is read, signed or set, and no
    `Vary: Cookie` is added (those answers never depend on a cookie)."""

    def open_session(self, app: Flask, request):
        if request.path.startswith(SESSIONLESS_PREFIXES):
            return self.make_null_session(app)
        return super().open_session(app, request)


def _remember_me_on_operator_pages_only(app: Flask) -> None:
    """Flask-Login's after-request hook sets or clears a remember-me cookie, which only signing in or out
    on the operator pages can ask for: run it for the operator blueprint's requests only, not on every
    request of the service (the frame's status poll, Stripe's webhooks). (Rates are counted inside the
    views that cause work, by paygate/web/throttling.py: no rate-limit hook runs on any request.)"""
    hook = login_manager._update_remember_cookie  # what LoginManager.init_app registered
    app.after_request_funcs[None].remove(hook)
    app.after_request_funcs.setdefault("operator", []).append(hook)


def _bearer_api_call() -> bool:
    """An operator API call that names a token: a browser sends no Authorization header across sites (not without
    a CORS preflight, which nothing here answers), so it needs no CSRF token."""
    scheme = request.headers.get("Authorization", "").partition(" ")[0]
    return request.path.startswith(API_PREFIX) and scheme.lower() == "bearer"


def init_app(app: Flask) -> None:
    """Flask-Login and CSRF (every form but the webhook and the local stand-ins)."""
    app.session_interface = Sessions()
    # No template outside the operator pages uses current_user: the operator blueprint provides it
    # (paygate/web/operator/views.py), so that other pages do not load a user to render.
    login_manager.init_app(app, add_context_processor=False)
    login_manager.session_protection = "basic"
    _remember_me_on_operator_pages_only(app)
    csrf = CSRFProtect()
    # Flask-WTF's own check looks up the view's exemptions before the method; asked here only for the
    # methods it protects, so that a GET (a status poll, a page) costs one comparison.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)

    @app.before_request
    def _csrf_protect():
        if request.method in app.config["WTF_CSRF_METHODS"] and app.config["WTF_CSRF_ENABLED"]:
            if _bearer_api_call():
                # Exempt only as the token's operator: a token that is not one is refused here, before a session
                # cookie sent beside it could sign the request in without a CSRF token.
                return None if _load_from_token(request) is not None else _unauthorized()
            csrf.protect(apply_exemptions=True)

    for name in ("webhooks", "standins"):  # Stripe and the stand-ins' Stripe-style calls carry no token of ours
        if name in app.blueprints:
            csrf.exempt(app.blueprints[name])
    # The invoice form runs in the LMS frame, where no cookie (so no CSRF cookie) exists: the flow
    # token in its URL and its signed one-time form id protect it instead (paygate/sales/invoicing.py).
    csrf.exempt("paygate.web.flow.invoice")
    # So are the frame's licence-key and pilot forms (the flow token in their URL names the registration).
    csrf.exempt("paygate.web.flow.key")
    csrf.exempt("paygate.web.flow.pilot")
