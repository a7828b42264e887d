"""The sign-in routes: `/operator/sign-in` (password), then, with OPERATOR_2FA=required, `/operator/sign-in/code` (a
code of the authenticator app or a recovery code) or, at the first sign-in, `/operator/sign-in/enrol`; and
`/operator/sign-out`. Every guess, password or code, is throttled per address and e-mail."""

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from paygate.core.db import db
from paygate.web import throttling
from paygate.web.operator import auth, factors
from paygate.web.operator.blueprint import bp
from paygate.web.operator.tokens import audit

UNAVAILABLE = "Signing in is unavailable for a moment. Try again shortly."
TOO_MANY = "Too many failed sign-ins from your address. Wait a few minutes, then try again."

# Where a signed-in operator starts: the overview (money, active schools, what needs attention).
LANDING = "operator.overview"


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_url = auth.safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_url or url_for(LANDING))
        return render_template("operator/sign_in.html", email="", next_url=next_url)
    email = (request.form.get("email") or "").strip().lower()[:320]
    # Counted before the password is checked, so that parallel guesses cannot pass the rate.
    attempt, refused = _attempt("operator/sign_in.html", email, email=email, next_url=next_url)
    if refused:
        return refused
    operator = auth.authenticate(email, request.form.get("password") or "")
    if operator is None:
        return render_template(
            "operator/sign_in.html", email=email, next_url=next_url, error="Wrong e-mail or password."
        ), 401
    attempt.succeeded()
    if auth.second_factor_required():
        auth.password_passed(operator)
        step = "operator.sign_in_code" if operator.totp_enrolled_at else "operator.sign_in_enrol"
        return redirect(url_for(step, next=next_url), 303)
    auth.sign_in(operator)
    return redirect(next_url or url_for(LANDING), 303)


@bp.route("/sign-in/code", methods=["GET", "POST"])
def sign_in_code():
    next_url = auth.safe_next(request.values.get("next"))
    operator, restart = _password_passed(next_url)
    if restart:
        return restart
    if operator.totp_enrolled_at is None:
        return redirect(url_for("operator.sign_in_enrol", next=next_url), 303)
    if request.method == "GET":
        return render_template("operator/sign_in_code.html", next_url=next_url)
    attempt, refused = _attempt("operator/sign_in_code.html", operator.email, next_url=next_url)
    if refused:
        return refused
    if not auth.second_factor(operator, request.form.get("code") or ""):
        db.session.rollback()
        return render_template(
            "operator/sign_in_code.html", next_url=next_url, error="Wrong code, or a code already used."
        ), 401
    attempt.succeeded()
    auth.sign_in(operator)
    return redirect(next_url or url_for(LANDING), 303)


@bp.route("/sign-in/enrol", methods=["GET", "POST"])
def sign_in_enrol():
    next_url = auth.safe_next(request.values.get("next"))
    operator, restart = _password_passed(next_url)
    if restart:
        return restart
    if operator.totp_enrolled_at is not None:
        return redirect(url_for("operator.sign_in_code", next=next_url), 303)
    secret = factors.pending_secret(operator)
    db.session.commit()  # the pending secret, the same on every visit until it is confirmed
    page = {
        "next_url": next_url,
        "secret": factors.grouped(secret),
        "qr": Markup(factors.qr_svg(factors.provisioning_uri(operator, secret))),  # noqa: S704 - segno's own SVG
        "email": operator.email,
    }
    if request.method == "GET":
        return render_template("operator/sign_in_enrol.html", **page)
    attempt, refused = _attempt("operator/sign_in_enrol.html", operator.email, **page)
    if refused:
        return refused
    if not factors.confirm_enrolment(operator, request.form.get("code") or ""):
        db.session.rollback()
        auth.log.warning("operator %s: enrolment code wrong, from %s", operator.email, request.remote_addr)
        error = "That code does not match. Check the phone's clock and type the code now shown."
        return render_template("operator/sign_in_enrol.html", error=error, **page), 401
    attempt.succeeded()
    codes = factors.new_recovery_codes(operator)
    audit(operator.email, "second factor enrolled", operator.email, f"{len(codes)} recovery codes")
    auth.log.info("operator %s enrolled a second factor, from %s", operator.email, request.remote_addr)
    auth.sign_in(operator)  # commits the enrolment, the codes' hashes and the session at once
    return render_template("operator/recovery_codes.html", codes=codes, next_url=next_url, first=True)


@bp.post("/sign-out")
def sign_out():
    auth.sign_out()
    flash("Signed out.", "info")
    return redirect(url_for("operator.sign_in"), 303)


def _password_passed(next_url):
    """(The operator whose password was right, None) or (None, the redirect back to the password)."""
    operator, ran_out = auth.passed_password()
    if operator is not None:
        return operator, None
    if ran_out:
        flash("The sign-in took too long. Enter your password again.", "error")
    return None, redirect(url_for("operator.sign_in", next=next_url), 303)


def _attempt(template: str, account: str, **page):
    """(A sign-in attempt counted for this address and e-mail, None), or (None, the answer refusing it)."""
    try:
        attempt = throttling.sign_in_attempt(account)
    except throttling.StoreUnavailable:
        return None, (render_template(template, error=UNAVAILABLE, **page), 503)
    if attempt is None:
        return None, (
            render_template(template, error=TOO_MANY, **page),
            429,
            {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)},
        )
    return attempt, None
