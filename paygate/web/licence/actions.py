"""What an admin does on the licence page, each a POST under the page's own URL (`<base>/...`: the key, or
the one-hour link, is the credential; no cookie, so no CSRF token: a forged form would need the key).

- `<base>/seats`: change the seats of a subscription (paygate/sales/seats.py), then back to the page;
- `<base>/billing`: a Stripe customer portal session for the licence's customer, returning to a one-hour
  link to the page (never the key);
- `<base>/key`: replace the key (paygate/licensing/licence_keys.py); the new key is shown once, on this
  answer only.
Bad input gets one sentence on the page and changes nothing.
"""

import logging

from flask import current_app, redirect, request

from paygate.core import languages
from paygate.core.db import db
from paygate.core.languages import gettext as _
from paygate.gateways import payments
from paygate.licensing import keys, licence_keys
from paygate.sales import offers, seats
from paygate.web import identity
from paygate.web.licence import Held, bp, held, unknown
from paygate.web.licence.page import render

log = logging.getLogger(__name__)

CAUSE = "licence page"


def _unreachable() -> str:
    return _("The payment provider could not be reached. Nothing was changed; try again in a moment.")


@bp.post("/<key>/seats")
@bp.post("/m/<token>/seats")
def change_seats(key=None, token=None):
    found = held(key, token)
    if not isinstance(found, Held):
        return found
    if not seats.changeable(found.licence):
        return render(found, 400, error=_("The number of seats of this licence cannot be changed here."))
    try:
        seats.change(found.licence, request.form.get("seats"), CAUSE)
    except offers.ChoiceRefused as exc:
        db.session.rollback()
        return render(found, 400, seats_error=offers.refusal(exc))
    except payments.PaymentProviderError:
        db.session.rollback()
        return render(found, 503, seats_error=_unreachable())
    return redirect(f"{found.base}?done=seats", 303)


@bp.post("/<key>/billing")
@bp.post("/m/<token>/billing")
def manage_billing(key=None, token=None):
    found = held(key, token)
    if not isinstance(found, Held):
        return found
    customer = found.licence.customer_id
    if not customer or not payments.valid_id(customer, "cus"):
        return render(found, 400, error=_("This licence has no billing account at Stripe to manage."))
    return_url = found.link()  # the page for one hour, without the key: Stripe never sees the key
    db.session.commit()  # no transaction open while Stripe is asked
    try:
        url = payments.gateway().create_portal_session(
            customer=customer, return_url=return_url, locale=languages.checkout_locale()
        )
    except payments.PaymentProviderError:
        db.session.rollback()
        return render(found, 503, billing_error=_unreachable())
    return redirect(url, 303)


@bp.post("/<key>/key")
@bp.post("/m/<token>/key")
def replace_key(key=None, token=None):
    found = held(key, token)
    if not isinstance(found, Held):
        return found
    new = licence_keys.replace_key(found.licence, CAUSE)
    if new is None:  # replaced by a simultaneous request: this key is no longer the licence's
        db.session.rollback()
        return unknown()
    db.session.commit()
    shown = keys.shown(new)
    page = languages.render_page(
        "licence_key.html",
        title=_("Your new licence key"),
        key=shown,
        link=f"{current_app.config['SETTINGS'].public_url.rstrip('/')}/licence/{shown}",
        identity=identity.of(found.licence.registration),
    )
    return page, 200
