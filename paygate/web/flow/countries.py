"""The billing country list of the invoice form (STRIPE_TAX: Stripe Tax needs the school's country), named in the
admin's language from CLDR (Babel), sorted as the admin reads them; kept per language once built."""

from babel import Locale

from paygate.core import languages
from paygate.sales.invoice_form import NOT_COUNTRIES  # what the form accepts is what it lists

_BUILT: dict[str, list[tuple[str, str]]] = {}


def countries() -> list[tuple[str, str]]:
    """[(code, name)], e.g. ("ES", "España") for a Spanish-speaking admin."""
    lang = languages.language()
    if lang not in _BUILT:
        names = Locale.parse(lang).territories
        _BUILT[lang] = sorted(
            (
                (code, name)
                for code, name in names.items()
                if len(code) == 2 and code.isalpha() and code not in NOT_COUNTRIES
            ),
            key=lambda item: item[1].casefold(),
        )
    return _BUILT[lang]
