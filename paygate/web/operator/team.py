"""The operators page (admins): operators and their standing, the latest account changes, and the forms that add,
change, disable, remove and reset them; and the public set-password page its links open. The changes themselves are
paygate/web/operator/accounts.py's."""

import logging

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from paygate.core.db import db
from paygate.core.models import ROLES, Operator
from paygate.web.operator import accounts, actions, auth
from paygate.web.operator.blueprint import bp

log = logging.getLogger(__name__)


def _page(link: accounts.Link | None = None, status: int = 200):
    url = None
    if link is not None:
        base = current_app.config["SETTINGS"].public_url.rstrip("/")
        url = base + url_for("operator.set_password", token=link.token)
    page = render_template(
        "operator/team.html",
        rows=accounts.rows(),
        audit=accounts.recent_audit(),
        roles=ROLES,
        link=link,
        link_url=url,
        link_hours=accounts.LINK_HOURS,
    )
    return page, status


def _back(message: str, level: str = "ok"):
    flash(message, level)
    return redirect(url_for("operator.operators"), 303)


def _operator_or_404(operator_id: int) -> Operator:
    found = db.session.get(Operator, operator_id) if 0 < operator_id < 2**31 else None
    if found is None:
        abort(404, description="No such operator.")
    return found


def _form_id_or_400() -> str:
    form_id = request.form.get("form_id")
    if not actions.valid_form_id(form_id):
        abort(400, description="Reload the page and try again.")
    return form_id


@bp.get("/operators")
def operators():
    return _page()


@bp.post("/operators")
def add_operator():
    form_id = _form_id_or_400()
    email = accounts.email_of(request.form.get("email"))
    if email is None:
        return _back("Type the new operator's e-mail address.", "error")
    try:
        link = accounts.add(email, request.form.get("role", ""), current_user.email, form_id)
    except accounts.Refused as exc:
        db.session.rollback()
        return _back(str(exc), "error")
    db.session.commit()
    log.info("operator %s added by %s", email, current_user.email)
    return _page(link)  # the link is on this answer only: no redirect, no flash that would keep it in a cookie


@bp.post("/operators/<int:operator_id>/link")
def operator_link(operator_id: int):
    """A new set-password link (a password reset once it is used)."""
    form_id = _form_id_or_400()
    operator = _operator_or_404(operator_id)
    try:
        link = accounts.issue_link(operator, current_user.email, form_id)
    except accounts.Refused as exc:
        db.session.rollback()
        return _back(str(exc), "info")
    db.session.commit()
    log.info("set-password link for %s issued by %s", link.email, current_user.email)
    return _page(link)


@bp.post("/operators/<int:operator_id>/role")
def operator_role(operator_id: int):
    operator = _operator_or_404(operator_id)
    role = request.form.get("role", "")
    try:
        changed = accounts.change_role(operator, role, current_user.email)
    except accounts.Refused as exc:
        db.session.rollback()
        return _back(str(exc), "error")
    db.session.commit()
    if not changed:
        return _back(f"{operator.email} is {role} already.", "info")
    return _back(f"{operator.email} is {role} now.")


@bp.post("/operators/<int:operator_id>/disable")
def disable_operator(operator_id: int):
    operator = _operator_or_404(operator_id)
    try:
        changed = accounts.disable(operator, current_user.email)
    except accounts.Refused as exc:
        db.session.rollback()
        return _back(str(exc), "error")
    db.session.commit()
    if not changed:
        return _back(f"{operator.email} is disabled already.", "info")
    return _back(f"{operator.email} is disabled: signed out, and no session or API token of theirs works.")


@bp.post("/operators/<int:operator_id>/enable")
def enable_operator(operator_id: int):
    operator = _operator_or_404(operator_id)
    changed = accounts.enable(operator, current_user.email)
    db.session.commit()
    if not changed:
        return _back(f"{operator.email} is not disabled.", "info")
    return _back(f"{operator.email} is enabled again.")


@bp.post("/operators/<int:operator_id>/remove")
def remove_operator(operator_id: int):
    operator = _operator_or_404(operator_id)
    email = operator.email
    try:
        accounts.remove(operator, current_user.email)
    except accounts.Refused as exc:
        db.session.rollback()
        return _back(str(exc), "error")
    db.session.commit()
    log.info("operator %s removed by %s", email, current_user.email)
    if email == current_user.email:
        return redirect(url_for("operator.sign_in"), 303)
    return _back(f"{email} is removed: signed out, and their API tokens no longer work.")


@bp.post("/operators/<int:operator_id>/reset-factor")
def reset_operator_factor(operator_id: int):
    """Their second factor cleared: they enrol again at their next sign-in."""
    operator = _operator_or_404(operator_id)
    if operator.id == current_user.pk:
        return _back("Another admin resets your second factor: this one signs you in.", "error")
    accounts.reset_factor(operator, current_user.email)
    db.session.commit()
    return _back(f"{operator.email}'s second factor is reset: they are signed out and enrol again at sign-in.")


# The page a set-password link opens: public (whoever has the link), once, for LINK_HOURS.


@bp.route("/set-password/<token>", methods=["GET", "POST"])
def set_password(token: str):
    try:
        operator = accounts.operator_of_link(token, lock=request.method == "POST")
    except accounts.LinkInvalid as exc:
        db.session.rollback()
        return render_template("operator/set_password.html", error=str(exc), dead=True), exc.status
    if request.method == "GET":
        return render_template("operator/set_password.html", email=operator.email, token=token)
    password = request.form.get("password") or ""
    why = None if password == request.form.get("repeat") else "The two passwords differ: type the same one twice."
    try:
        if why:
            raise accounts.Refused(why)
        accounts.set_password(operator, password, operator.email)
    except accounts.Refused as exc:
        db.session.rollback()
        page = render_template("operator/set_password.html", email=operator.email, token=token, error=str(exc))
        return page, 400
    db.session.commit()
    log.info("operator %s set a password with a link", operator.email)
    if current_user.is_authenticated:
        auth.sign_out()  # whoever was signed in on this browser is not who the link was for
    flash("Your password is set: sign in with it.", "ok")
    return redirect(url_for("operator.sign_in"), 303)
