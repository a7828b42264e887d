"""What the frame shows once a registration is cleared to complete, until the admin presses Finish: what was
registered and bought, the licence key with its page, a reference of the payment or invoice, and how to reach
the vendor (README "Licence keys": nothing the admin must keep vanishes with the dialog).

Read only when there is something to confirm: the status poll asks once its state says done, the pages that
follow a payment, a key or a pilot ask once; the pending poll never does. The key is never stored: the one a
registration's own licence was opened with is derived from its flow token, and shown only while the licence
still has it (a key replaced on the licence page is not shown again); a registration that joined a licence by
key shows the key the admin typed, which only the answer to that form has.
"""

from dataclasses import dataclass

from flask import current_app
from markupsafe import Markup

from paygate.core import languages
from paygate.core.languages import gettext as _
from paygate.core.models import Registration
from paygate.licensing import keys, licences, platforms
from paygate.web import identity
from paygate.web.flow.choice import count
from paygate.web.flow.status import without_payment


@dataclass(frozen=True)
class Confirmation:
    """One registration's confirmation, said in the admin's language."""

    lms_name: str
    lms_url: str
    bought: str
    key: str | None  # as people read it (`PG-…`), or None when it is not shown here
    key_note: str  # what the key is for, or why it is not shown
    licence_url: str | None
    reference: str


def of(reg: Registration, typed_key: str | None = None) -> Confirmation | None:
    """The confirmation of `reg` (its licence read now), with `typed_key` (normal form) for a registration that
    has just joined a licence by it; None while it has no licence."""
    licence = licences.of(reg)
    if licence is None:
        return None
    free = without_payment(reg)
    key, note = _key(reg, licence, free, typed_key)
    url = f"{current_app.config['SETTINGS'].public_url.rstrip('/')}/licence/{keys.shown(key)}" if key else None
    return Confirmation(
        lms_name=identity.lms_name(reg),
        lms_url=reg.lms_url,
        bought=_bought(reg, licence, free),
        key=keys.shown(key) if key else None,
        key_note=note,
        licence_url=url,
        reference=_reference(reg, licence, free),
    )


def render(reg: Registration, *, finish: bool, typed_key: str | None = None, hidden: bool = False) -> Markup:
    """The confirmation's markup (`_confirmation.html`): with the Finish button in the frame, or a sentence
    sending the admin back to it (the payment popup)."""
    confirmation = of(reg, typed_key)
    if confirmation is None:
        return Markup("")
    html = languages.render_page("_confirmation.html", c=confirmation, finish=finish, hidden=hidden)
    return Markup(html)  # noqa: S704 - an autoescaped template, rendered whole


def _key(reg, licence, free, typed_key) -> tuple[str | None, str]:
    if free == "joined":
        if typed_key:
            return typed_key, _(
                "Keep this licence key: it opens your licence's page and registers another LMS without paying again."
            )
        return None, _("This LMS joined your licence with its key. The licence page opens with that key.")
    key = platforms.key_of(reg)
    if not keys.matches(key, licence.key_hash):  # replaced on the licence page since: that key no longer works
        return None, _(
            "The licence key was replaced since. The new key was shown, on the licence page, to whoever replaced it."
        )
    return key, _("Keep this licence key: it opens your licence's page and registers another LMS without paying again.")


def _bought(reg, licence, free) -> str:
    product = (licence.registration.product_name if free == "joined" else reg.product_name) or ""
    if free == "joined":
        return _("Joined your licence (%(product)s) with its key: nothing to pay.", product=product)
    if free == "pilot":
        return _(
            "A free pilot of %(product)s until %(date)s",
            product=product,
            date=languages.format_day(licence.pilot_ends_at),
        )
    amount = licence.amount if licence.amount is not None else reg.amount
    price = languages.price_line(amount, licence.currency or reg.currency, reg.price_interval)
    quantity, unit = licence.quantity or reg.quantity, licence.seat_unit or reg.seat_unit
    if unit and quantity:
        return _("%(product)s: %(seats)s, %(price)s", product=product, seats=count(quantity, unit), price=price)
    return _("%(product)s, %(price)s", product=product, price=price)


def _reference(reg, licence, free) -> str:
    # The registration's number is what Stripe's metadata carries (registration_pk) and what operators search by.
    if free is not None:
        return _("No payment was made (registration %(number)s).", number=str(reg.id))
    if licence.kind == "invoice" and licence.invoice_number:
        return _("Invoice %(number)s", number=licence.invoice_number)
    return _("Registration %(number)s", number=str(reg.id))
