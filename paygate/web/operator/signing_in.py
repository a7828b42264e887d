"""The sign-in routes: `/operator/sign-in` (password, throttled per address and e-mail) and `/operator/sign-out`."""

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from paygate.web import throttling
from paygate.web.operator import auth
from paygate.web.operator.blueprint import bp


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_url = auth.safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(next_url or url_for("operator.registrations"))
        return render_template("operator/sign_in.html", email="", next_url=next_url)
    email = (request.form.get("email") or "").strip().lower()[:320]
    # Counted before the password is checked, so that parallel guesses cannot pass the rate.
    try:
        attempt = throttling.sign_in_attempt(email)
    except throttling.StoreUnavailable:
        return render_template(
            "operator/sign_in.html",
            email=email,
            next_url=next_url,
            error="Signing in is unavailable for a moment. Try again shortly.",
        ), 503
    if attempt is None:
        page = render_template(
            "operator/sign_in.html",
            email=email,
            next_url=next_url,
            error="Too many failed sign-ins from your address. Wait a few minutes, then try again.",
        )
        return page, 429, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    operator = auth.authenticate(email, request.form.get("password") or "")
    if operator is None:
        return render_template(
            "operator/sign_in.html", email=email, next_url=next_url, error="Wrong e-mail or password."
        ), 401
    attempt.succeeded()
    auth.sign_in(operator)
    return redirect(next_url or url_for("operator.registrations"), 303)


@bp.post("/sign-out")
def sign_out():
    auth.sign_out()
    flash("Signed out.", "info")
    return redirect(url_for("operator.sign_in"), 303)
