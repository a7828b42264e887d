"""The offers as the frame shows them, in the admin's language: each offer's line, the seats field, the quote for a
choice (unit price, number, total, the Pay button's label) and the terms of what is bought. What can be chosen and
what it costs is decided in paygate/sales/offers.py; this module only says it."""

from flask import current_app
from markupsafe import Markup

from paygate.core import languages
from paygate.core.languages import N_, ngettext
from paygate.core.languages import gettext as _
from paygate.sales import offers

# Seat units (Price metadata `seat_unit`): the price line ("3.00 USD per student") and the seats field's label.
_PER = {
    "seat": N_("%(price)s per seat"),
    "student": N_("%(price)s per student"),
    "teacher": N_("%(price)s per teacher"),
    "user": N_("%(price)s per user"),
}
_LABEL = {
    "seat": N_("Number of seats"),
    "student": N_("Number of students"),
    "teacher": N_("Number of teachers"),
    "user": N_("Number of users"),
}


def count(quantity: int, unit: str | None) -> str:
    """ "120 students", "1 teacher" (the number in the admin's number format). Each unit is its own ngettext call:
    the catalogs then hold its plural forms."""
    n = languages.number(quantity)
    if unit == "student":
        return ngettext("%(count)s student", "%(count)s students", quantity, count=n)
    if unit == "teacher":
        return ngettext("%(count)s teacher", "%(count)s teachers", quantity, count=n)
    if unit == "user":
        return ngettext("%(count)s user", "%(count)s users", quantity, count=n)
    return ngettext("%(count)s seat", "%(count)s seats", quantity, count=n)


def offer_line(offer: offers.Offer) -> str:
    """ "3.00 USD per student per year (10 to 5,000 students)", "49.00 USD, paid once"."""
    price = offer.price
    if not offer.per_seat:
        return languages.price_line(offer.total(1), price.currency, price.period)
    unit = offer.seat_unit
    if price.tiers:
        first = price.tiers[0].unit_amount
        line = _("from %(price)s", price=_(_PER[unit], price=languages.money(first, price.currency)))
    else:
        line = _(_PER[unit], price=languages.money(price.unit_amount, price.currency))
    return _(
        "%(price_line)s (%(minimum)s to %(maximum)s)",
        price_line=languages.with_period(line, offer.price.period),
        minimum=languages.number(offer.min_seats),
        maximum=count(offer.max_seats, unit),
    )


def seats_label(offer: offers.Offer) -> str:
    return _(_LABEL[offer.seat_unit])


def refusal(exc: offers.ChoiceRefused) -> str:
    return offers.refusal(exc)


# Built once per Price read from Stripe (the same object while it is cached), language and choice: the frame's
# page is a hot path, and these sentences change only with them.
_BUILT: dict[tuple, object] = {}
_BUILT_LIMIT = 4096


def _once(key: tuple, keep: tuple, build):
    """`build()`, kept under `key`. The objects whose ids are in the key are kept with the value, so that no id
    is reused while its entry lives (the app's settings are in every key: terms depend on them)."""
    settings = current_app.config["SETTINGS"]
    key = (id(settings), *key)
    try:
        return _BUILT[key][1]
    except KeyError:
        value = build()
        if len(_BUILT) >= _BUILT_LIMIT:
            _BUILT.clear()  # Prices read again after their cache time: the old keys are dead
        _BUILT[key] = ((settings, *keep), value)
        return value


def offer_rows(on_sale: list[offers.Offer]) -> list[dict]:
    """Each offer as the frame's choice shows it."""
    key = ("rows", languages.language(), *(id(offer.price) for offer in on_sale))
    return _once(key, tuple(offer.price for offer in on_sale), lambda: [_row(offer) for offer in on_sale])


def choice_markup(on_sale: list[offers.Offer], chosen: offers.Choice | None) -> Markup:
    """The pay form's offers and seat field for this choice, rendered once per offer list, choice and language."""
    if chosen is None:
        return Markup("")
    key = ("markup", languages.language(), chosen.offer.id, chosen.quantity, *(id(o.price) for o in on_sale))

    def build():
        rows = offer_rows(on_sale)
        chosen_row = next(row for row in rows if row["id"] == chosen.offer.id)
        html = languages.render_page("_offers.html", offers=rows, chosen=chosen, chosen_row=chosen_row)
        return Markup(html)  # noqa: S704 - an autoescaped template, rendered whole

    return _once(key, tuple(o.price for o in on_sale), build)


def _row(offer: offers.Offer) -> dict:
    return {
        "id": offer.id,
        "product": offer.price.product_name or offer.id,
        "description": offer.price.product_description,
        "line": offer_line(offer),
        "per_seat": offer.per_seat,
        "min": offer.min_seats,
        "max": offer.max_seats,
        "seats_label": seats_label(offer) if offer.per_seat else "",
        "refusal": offers.refusal(offers.ChoiceRefused("seats_whole", offer)) if offer.per_seat else "",
    }


def quote(choice: offers.Choice) -> dict:
    """What the frame shows for a choice before paying: the breakdown, the total, the Pay button's label."""
    key = ("quote", languages.language(), id(choice.offer.price), choice.quantity)
    return _once(key, (choice.offer.price,), lambda: _quote(choice))


def _quote(choice: offers.Choice) -> dict:
    offer, price = choice.offer, choice.offer.price
    total = choice.amount
    if not offer.per_seat:
        breakdown = languages.price_line(total, price.currency, price.period)
    elif price.tiers:  # Stripe's tiers decide: the total it will charge, not a unit price times the number
        breakdown = _(
            "%(seats)s: %(total)s",
            seats=count(choice.quantity, offer.seat_unit),
            total=languages.price_line(total, price.currency, price.period),
        )
    else:
        breakdown = _(
            "%(seats)s × %(unit_price)s = %(total)s",
            seats=count(choice.quantity, offer.seat_unit),
            unit_price=languages.money(price.unit_amount, price.currency),
            total=languages.price_line(total, price.currency, price.period),
        )
    return {
        "offer": offer.id,
        "seats": choice.quantity,
        "breakdown": breakdown,
        "total": languages.price_line(total, price.currency, price.period),
        "pay_label": languages.pay_label(total, price.currency, price.period),
        "terms": terms(offer),
    }


def stored_quote(reg) -> dict:
    """What a registration past choosing shows of its price: what it was priced at, from the registration."""
    line = languages.price_line(reg.amount, reg.currency, reg.price_interval)
    if getattr(reg, "seat_unit", None) and reg.quantity:
        line = _("%(seats)s: %(total)s", seats=count(reg.quantity, reg.seat_unit), total=line)
    return {
        "breakdown": "",
        "total": line,
        "pay_label": languages.pay_label(reg.amount, reg.currency, reg.price_interval),
        "terms": [],
    }


def terms(offer: offers.Offer) -> list[str]:
    """The terms of the offer, said before paying: renewal and where to cancel, or paid once; then the invoice's."""
    settings = current_app.config["SETTINGS"]
    every = languages.period(offer.price.period)
    if every is None:
        said = [_("Paid once: it does not renew.")]
    else:
        said = [
            _(
                "Renews automatically (%(period)s) until cancelled. To cancel, write to the vendor's support "
                "before the renewal date; the tool stays registered until the end of the paid period.",
                period=every,
            )
        ]
    if settings.promotion_codes:
        said.append(_("Have a promotion code? Enter it on the payment page (or in the invoice form)."))
    if settings.stripe_tax:
        said.append(_("Tax is added where it applies; the payment page shows it before you pay."))
    return said


def invoice_terms() -> list[str]:
    """What paying by invoice means: its due date, and what happens after the grace."""
    settings = current_app.config["SETTINGS"]
    said = [
        ngettext(
            "The invoice is due %(num)d day after it is sent.",
            "The invoice is due %(num)d days after it is sent.",
            settings.invoice_days_until_due or 0,
        )
    ]
    if settings.invoice_access == "on_payment":
        said.append(_("The tool is switched on when the invoice is paid."))
    else:
        said.append(
            ngettext(
                "The tool works at once; if the invoice is still unpaid %(num)d day after its due date, it is "
                "switched off until it is paid.",
                "The tool works at once; if the invoice is still unpaid %(num)d days after its due date, it is "
                "switched off until it is paid.",
                settings.licence_grace_days,
            )
        )
    return said
