"""`GET /licence/<key>` and `GET /licence/m/<token>`: the licence page, in the admin's language.

What the school bought (vendor, product, price, seats), its status in words, the date that matters, its LMS
platforms, its receipts and invoices, and what can be done there (pay, change the seats, manage billing,
replace the key; paygate/web/licence/actions.py). The page asks nothing of Stripe: it shows what is stored.
Templates rely on `held` (the Held), `licence` and `base` (held.base, where the actions are posted).
"""

from flask import request

from paygate.core import languages
from paygate.core.languages import N_
from paygate.core.languages import gettext as _
from paygate.sales import seats
from paygate.web import identity
from paygate.web.licence import Held, bp, held
from paygate.web.licence import shown as say

# The one-line notices an action leaves after its redirect (`?done=...`: a word, never a sentence from outside).
NOTICES = {
    "seats": N_("The number of seats was changed. Stripe adds the difference to your next invoice."),
}


def render(held: Held, status: int = 200, **context):
    """The licence page for `held` (`seats_error`, `error`, `notice`: one sentence each, in the admin's language)."""
    licence = held.licence
    opened = licence.registration
    standing = say.status(licence)
    seat_range = seats.known_range(licence) if seats.changeable(licence) else None
    body = languages.render_page(
        "licence.html",
        title=_("Your licence"),
        held=held,
        licence=licence,
        base=held.base,
        identity=identity.of(opened),
        price=say.price(licence, opened),
        seats=say.seats(licence),
        standing=standing,
        when=say.when(licence, standing),
        platforms=say.platforms(licence),
        papers=say.papers(licence),
        can_change_seats=seats.changeable(licence),
        seat_range=seat_range,
        can_manage_billing=bool(licence.customer_id),
        **context,
    )
    return body, status


@bp.get("/<key>")
@bp.get("/m/<token>")
def licence_page(key=None, token=None):
    found = held(key, token, page=True)
    if not isinstance(found, Held):
        return found
    done = request.args.get("done")
    notice = _(NOTICES[done]) if isinstance(done, str) and done in NOTICES else None
    return render(found, notice=notice)
