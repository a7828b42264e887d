"""An admin replaces the licence key of a registration's licence (paygate/web/operator/roles.py: admin only), e.g.
when a school lost its key or it leaked. A page-form POST with the CSRF token, a one-time form_id and a reason.

The new key is shown once, on this answer's page (no-store, like every operator page), and kept nowhere: not in a
flash message (which lives in the session cookie), a log line or the timeline, which gets its last 4 characters
only (paygate/licensing/licence_keys.py). Refusals are one sentence and change nothing.
"""

from flask import abort, current_app, render_template, request
from flask_login import current_user

from paygate.core.db import db
from paygate.core.models import Registration
from paygate.core.registrations import record
from paygate.core.text import clean
from paygate.licensing import keys, licence_keys, licences
from paygate.web.operator import actions, queries
from paygate.web.operator.blueprint import bp


def _refuse(status: int, sentence: str):
    db.session.rollback()
    abort(status, description=sentence)


@bp.post("/registrations/<int:pk>/licence-key")
def replace_licence_key(pk: int):
    """Give the licence this registration's platform is on a new key, and show it once."""
    reg = db.session.get(Registration, pk) if queries.valid_pk(pk) else None
    if reg is None:
        abort(404, description="No such registration.")
    form_id = request.form.get("form_id")
    if not actions.valid_form_id(form_id):
        _refuse(400, "Reload the page and try again.")
    reason = clean(request.form.get("text"), actions.NOTE_MAX)
    if not reason:
        _refuse(400, "Say why the key is replaced (for the timeline).")
    if request.form.get("told") != "yes":
        _refuse(400, "Confirm that the school will be told the new key: nothing was changed.")
    licence = licences.of(reg)
    if licence is None:
        _refuse(409, "This registration's platform is on no licence, so there is no key to replace.")
    if actions.already_done(reg, form_id):  # locks the licence, then the registration, and reads them afresh
        _refuse(
            409,
            "This form was sent already and the key was replaced then; its new key was shown once, on that answer. "
            "If nobody saw it, replace the key again from the registration's page.",
        )
    if not licence.key_hash:
        _refuse(409, "This licence has no key to replace.")
    email, old_hint = current_user.email, licence.key_hint
    cause = actions.cause_of(email)
    # The form's entry, with the reason, in the timeline of the registration acted on: a second send finds it.
    record(
        reg,
        "operator",
        cause=cause,
        message=f"Licence key replacement asked: {reason}",
        details={"form": form_id, "licence": licence.id, "note": reason},
    )
    new = licence_keys.replace_key(licence, cause, by=f"by operator {email}")
    if new is None:  # the licence page replaced it meanwhile (the lock makes this rare): that one stands
        _refuse(409, "The key was replaced meanwhile by someone else; nothing was changed here.")
    db.session.commit()
    shown = keys.shown(new)
    return render_template(
        "operator/licence_key.html",
        reg=reg,
        key=shown,
        old_hint=old_hint,
        link=f"{current_app.config['SETTINGS'].public_url.rstrip('/')}/licence/{shown}",
    ), 200
