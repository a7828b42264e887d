"""What every page of the flow shares: the blueprint, its frame headers, the one-message pages (in the
admin's language, naming the vendor), absolute URLs on PUBLIC_URL and the registration of a flow token."""

import re

from flask import Blueprint, abort, current_app, g, request, url_for
from sqlalchemy import select

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import Registration
from paygate.web import identity, throttling
from paygate.web.flow.status import restart

bp = Blueprint("flow", __name__)

TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@bp.after_request
def _frame_headers(response):
    # Runs before the app's security headers (paygate/application/__init__.py), which read g.frameable: one hook
    # instead of a before- and an after-request hook on every poll.
    g.frameable = True
    response.headers["Cache-Control"] = "no-store"
    return response


def message_page(title: str, message: str, status: int, reg=None, **context):
    """A page of one message, in the admin's language (title and message come translated), naming the
    vendor and the product; an error page (4xx, 5xx) says how to reach the vendor."""
    context.setdefault("show_support", status >= 400)
    return languages.render_page(
        "message.html",
        title=title,
        message=message,
        identity=identity.of(reg) if reg is not None else identity.without_registration(),
        **context,
    ), status


def unknown_link() -> str:
    return _("This registration link is not known.") + " " + restart()


def absolute(endpoint: str, **values) -> str:
    """A URL on PUBLIC_URL alone: Stripe and LTIaaS must reach us where browsers do, whatever the request's
    Host, X-Forwarded-* or SCRIPT_NAME said (the path is built from the URL map, not from the request)."""
    path = current_app.url_map.bind("localhost", script_name="/").build(endpoint, values)
    return current_app.config["SETTINGS"].public_url.rstrip("/") + path


def flow_url(token: str, what: str) -> str:
    """`url_for("flow.<what>", token=token)` for the flow's /flow/<token>/<what> routes, without building it through
    the URL map on the frame's hot path (the token is URL-safe base64)."""
    return f"{request.script_root}/flow/{token}/{what}"


def registration(token: str) -> Registration:
    reg = None
    if TOKEN.match(token):
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).first()
    if reg is None:
        abort(404, description=unknown_link())
    return reg


def retry_url(registration_id: str) -> str:
    return url_for("flow.pre_approval", registrationId=registration_id)


def expired():
    return message_page(
        _("Registration expired"),
        _("This registration has expired, was abandoned or is already finished.") + " " + restart(),
        410,
    )


def too_many(retry_url: str, reg=None):
    body, status = message_page(
        _("Too many requests"),
        _("Too many requests came from your network just now. Wait a minute, then try again."),
        429,
        reg,
        retry_url=retry_url,
    )
    return body, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}


def busy(retry_url: str):
    body, status = message_page(
        _("Busy"), _("The registration service is busy. Try again in a moment."), 503, retry_url=retry_url
    )
    return body, status, {"Retry-After": str(throttling.BUSY_RETRY_AFTER_SECONDS)}


def not_sellable():
    return message_page(
        _("Not available"),
        _(
            "Registration is not available right now: the vendor's payment settings "
            "are incomplete. Please contact the vendor."
        ),
        503,
    )
