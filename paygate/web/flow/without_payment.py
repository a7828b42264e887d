"""Registering without paying, in the frame: with the key of a licence the school already has (`/key`), or as a
free pilot (`/pilot`) (the routes are in paygate/web/flow/__init__.py, beside the page they answer with on a
refusal). Either clears the registration to complete (paygate/licensing/platforms.py), commits, and
completes it after the answer, as a payment does; the answer is a page of the frame that says "registering…" and
then, from the same status poll as the pre-approval page, the confirmation and Finish.

A typed key is a secret: it is counted against the client's address before it is looked up (wrong keys: 10 a
minute, 30 an hour, as on the licence page), never logged, and sent back only in this answer's body.
"""

import logging

from flask import current_app, make_response, request

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import Registration, State
from paygate.licensing import keys, platforms
from paygate.sales.fulfilment import complete_later
from paygate.web import identity, throttling
from paygate.web.after_answer import after_answer
from paygate.web.flow import confirmation
from paygate.web.flow.pages import flow_url, message_page, retry_url
from paygate.web.flow.status import frame_status, without_payment

log = logging.getLogger(__name__)


def key(reg: Registration, preapproval_page):
    """The admin typed the key of a licence the school has; a refusal is `preapproval_page(reg, status, **said)`."""
    if reg.state not in (State.PENDING.value, State.ABANDONED.value):  # no key is looked up for nothing
        return _already(reg)
    try:
        attempt = throttling.key_attempt()  # before the lookup: parallel guesses cannot pass the rate
    except throttling.StoreUnavailable:
        body, status = message_page(
            _("Busy"),
            _("The registration service is busy. Try again in a moment."),
            503,
            reg,
            retry_url=retry_url(reg.registration_id),
        )
        return body, status, {"Retry-After": str(throttling.BUSY_RETRY_AFTER_SECONDS)}
    if attempt is None:
        page, status = preapproval_page(
            reg, 429, key_error=_("Too many wrong licence keys came from your network. Wait a while, then try again.")
        )
        return page, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    found = platforms.join(reg, request.form.get("key"), "licence key")
    if found.status in ("not_a_key", "unknown"):
        db.session.rollback()
        return preapproval_page(reg, 404, key_error=_("No licence has this key."))
    attempt.succeeded()  # the key names a licence: it is not a guess to count
    if found.status == "lapsed":
        db.session.rollback()
        url = f"{current_app.config['SETTINGS'].public_url.rstrip('/')}/licence/{keys.shown(found.key)}"
        return preapproval_page(
            reg,
            409,
            key_error=_(
                "The licence of this key is not active: it lapsed, was refunded or was revoked. Its licence page "
                "says why and how to pay for it; or pay here as usual."
            ),
            key_link=url,
        )
    if found.status != "ok":  # paid, or on another licence, meanwhile
        db.session.rollback()
        return _already(reg)
    db.session.commit()
    log.info("registration %s joined licence %s by its key", reg.id, found.licence.id)
    page = _registering(reg, typed_key=found.key)
    return after_answer(make_response(page, 200), complete_later(reg.id, "licence key"))


def pilot(reg: Registration, preapproval_page):
    """The admin starts a free pilot; a refusal is `preapproval_page(reg, status, **said)`."""
    if not current_app.config["SETTINGS"].pilot_days:
        return message_page(_("Not offered"), _("A free pilot is not offered for this tool."), 404, reg)
    if reg.state not in (State.PENDING.value, State.ABANDONED.value):
        if without_payment(reg) == "pilot":  # pressed twice: the pilot started by the first press
            return _registering(reg)
        return _already(reg)
    if platforms.start_pilot(reg, "pilot") is None:
        db.session.rollback()
        return preapproval_page(reg, 409, pilot_error=_("The free pilot is no longer available for this LMS."))
    db.session.commit()
    log.info("registration %s started a free pilot", reg.id)
    return after_answer(make_response(_registering(reg), 200), complete_later(reg.id, "pilot"))


def _already(reg):
    return message_page(
        _("Already registered"),
        _("This registration is already paid for or finished; nothing was changed."),
        409,
        reg,
        retry_url=retry_url(reg.registration_id),
        show_support=False,
    )


def _registering(reg, typed_key: str | None = None) -> str:
    """The frame's page while the registration completes: its status, and the confirmation shown once done."""
    status = frame_status(reg)
    return languages.render_page(
        "registering.html",
        identity=identity.of(reg),
        status=status,
        status_url=flow_url(reg.flow_token, "status"),
        confirmation=confirmation.render(reg, finish=True, typed_key=typed_key, hidden=status["phase"] != "done"),
    )
