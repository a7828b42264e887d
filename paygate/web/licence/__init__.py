"""The licence page's blueprint, and how a request names its licence.

A licence page is reached by its key (`/licence/<key>`: the key is the credential, no sign-in, no cookie)
or by a link good for one hour (`/licence/m/<token>`, paygate/licensing/keys.py: what Stripe's return
URLs carry, so that the key never reaches a third party). A wrong key counts against the client's address
(paygate/web/throttling.py `key_guess`: 10 a minute, 30 an hour, checked before the key is looked up, then 429)
and gets a 404 page that says nothing of how close it was. Every answer is `no-store`, `Referrer-Policy:
no-referrer` (the key is in the URL) and `noindex`.
"""

from dataclasses import dataclass

from flask import Blueprint, current_app, g
from sqlalchemy.orm import joinedload

from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.core.models import Licence
from paygate.licensing import keys, platforms
from paygate.web import throttling
from paygate.web.flow.pages import message_page
from paygate.web.licence import view

bp = Blueprint("licence", __name__, url_prefix="/licence")
# What the page shows of a licence, read with it in one query: its platforms (the registration that opened it is
# one of them) and its payments.
PAGE_LOAD = (joinedload(Licence.platforms), joinedload(Licence.payments))


# Where the page's forms lead after their redirect (Stripe's customer portal and Checkout): browsers hold a
# form's redirect to the page's CSP form-action (paygate/application/__init__.py reads g.form_targets).
FORM_TARGETS = " https://billing.stripe.com https://checkout.stripe.com"


@bp.after_request
def _headers(response):
    g.form_targets = FORM_TARGETS
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@dataclass(frozen=True)
class Held:
    """A licence as this request reached it: by its key (`key`, normal form) or by a one-hour link (`token`)."""

    licence: Licence | view.LicenceView  # the view when only the page is shown
    key: str | None = None
    token: str | None = None

    @property
    def base(self) -> str:
        """The path under which this page's actions are posted (the same credential as the page's)."""
        return f"/licence/{keys.shown(self.key)}" if self.key else f"/licence/m/{self.token}"

    def link(self) -> str:
        """An absolute link to this licence's page good for one hour, without the key (for Stripe's return URLs)."""
        settings = current_app.config["SETTINGS"]
        token = keys.link_token(self.licence.id, self.licence.key_hash or "", settings.secret_key)
        return f"{settings.public_url.rstrip('/')}/licence/m/{token}"


def unknown():
    return message_page(_("Licence not found"), _("No licence has this key. Check the key and try again."), 404)


def by_key(typed: str, page: bool = False):
    """The licence `typed` names, as a Held; or the answer to give (404, 429, 503) when there is none.
    `page`: for showing the page only, read as paygate/web/licence/view.py does (one Core read), not the ORM."""
    try:
        guess = throttling.key_guess()
    except throttling.StoreUnavailable:
        body, status = message_page(_("Busy"), _("The registration service is busy. Try again in a moment."), 503)
        return body, status, {"Retry-After": str(throttling.BUSY_RETRY_AFTER_SECONDS)}
    if guess is None:
        body, status = message_page(
            _("Too many requests"),
            _("Too many wrong licence keys came from your network. Wait a while, then try again."),
            429,
        )
        return body, status, {"Retry-After": str(throttling.RETRY_AFTER_SECONDS)}
    if page:
        key = keys.normal(typed)
        licence = view.by_key(key) if key is not None else None
    else:
        found = platforms.find(typed, *PAGE_LOAD)
        key, licence = found.key, found.licence if found.status == "ok" else None
    if licence is None:
        guess.wrong()
        return unknown()
    return Held(licence, key=key)


def by_link(token: str, page: bool = False):
    """The licence a one-hour link names, as a Held; or a 404 page (forged, old, or its key replaced since).
    `page`: as for `by_key`."""
    target = keys.link_target(token, current_app.config["SETTINGS"].secret_key)
    licence = None
    if target:
        licence = view.by_id(target[0]) if page else db.session.get(Licence, target[0], options=PAGE_LOAD)
    if licence is None or not (licence.key_hash or "").startswith(target[1]):
        return message_page(
            _("Link expired"),
            _("This link to the licence page has expired. Open the licence page with its licence key."),
            404,
        )
    return Held(licence, token=token)


def held(key: str | None = None, token: str | None = None, page: bool = False):
    """The Held a route under both credentials names (`/licence/<key>...` or `/licence/m/<token>...`), or the answer
    to give instead (404, 429, 503); `page`: only to show the page (its licence is then paygate/web/licence/view.py's,
    read in one query, not the ORM's)."""
    return by_link(token, page) if token is not None else by_key(key, page)
