"""The admin's language: chosen from Accept-Language, sentences from the message catalogs in
paygate/translations (gettext, through Flask-Babel), amounts and dates formatted for the locale.

The frame has no cookies, so the language is never remembered: every request (the status poll too,
whose fetch sends the browser's Accept-Language) chooses it again from its header. That choice is
cached by header value, the catalogs are loaded once per process, and a formatted amount once per
amount, currency and language, so that the frame's hot paths stay cheap.

Adding a language is adding a catalog (README "Languages"): the languages offered are English plus
every catalog compiled under paygate/translations.
"""

import logging
import os
import re
from datetime import date, datetime
from decimal import Decimal

from babel import Locale
from babel.dates import format_date as _babel_format_date
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations
from flask import Flask, current_app, render_template
from flask.globals import _cv_request  # the request's context without LocalProxy hops (hot paths)
from flask_babel import Babel, get_translations
from jinja2 import nodes, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from paygate.core.money import ZERO_DECIMAL

log = logging.getLogger(__name__)

DEFAULT = "en"
TRANSLATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "translations")
# The locales Stripe Checkout speaks (its `locale` parameter); a language of ours Checkout lacks opens
# Checkout with `auto` (the browser's language).
CHECKOUT_LOCALES = frozenset(
    (
        "bg",
        "cs",
        "da",
        "de",
        "el",
        "en",
        "en-GB",
        "es",
        "es-419",
        "et",
        "fi",
        "fil",
        "fr",
        "fr-CA",
        "hr",
        "hu",
        "id",
        "it",
        "ja",
        "ko",
        "lt",
        "lv",
        "ms",
        "mt",
        "nb",
        "nl",
        "pl",
        "pt",
        "pt-BR",
        "ro",
        "ru",
        "sk",
        "sl",
        "sv",
        "th",
        "tr",
        "vi",
        "zh",
        "zh-HK",
        "zh-TW",
    )
)
# Amounts: the locale's digits and separators, and the currency's ISO code (unambiguous where "$" is
# not: "49.00 USD", "49,00 USD", "1 234,00 EUR"), in the currency's own number of decimals.
_MONEY_PATTERN = "#,##0.00 ¤¤"
_CACHE_LIMIT = 1024
_NULL = NullTranslations()


def compiled_languages(directory: str = TRANSLATIONS_DIR) -> tuple[str, ...]:
    """English, then every language with a compiled catalog (a .po without its .mo is reported)."""
    found = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        folder = os.path.join(directory, name, "LC_MESSAGES")
        if os.path.exists(os.path.join(folder, "messages.mo")):
            found.append(name)
        elif os.path.exists(os.path.join(folder, "messages.po")):
            log.warning(
                "the %s catalog is not compiled (paygate/translations/%s/LC_MESSAGES/messages.mo is missing): "
                "pages are not served in it; run `make install` or `pybabel compile -d paygate/translations`",
                name,
                name,
            )
    return (DEFAULT, *(name for name in found if name != DEFAULT))


LANGUAGES: tuple[str, ...] = ()
_LOCALES: dict[str, Locale] = {}
_CHOICES: dict[str, str] = {}  # Accept-Language header -> language
_MONEY: dict[tuple, str] = {}
_NUMBERS: dict[tuple, str] = {}
_DATE_PATTERNS: dict[str, str] = {}
_DAYS: dict[tuple, str] = {}  # (day, language) -> the day written out


def init_app(app: Flask) -> None:
    global LANGUAGES
    if not LANGUAGES:
        LANGUAGES = compiled_languages()
        _LOCALES.update((code, Locale.parse(code)) for code in LANGUAGES)
    Babel(app, locale_selector=_selected_locale, default_translation_directories=TRANSLATIONS_DIR)
    # Flask-Babel's template callables find the catalog anew through several context lookups for each of
    # a page's few dozen strings; these (Jinja's "newstyle" gettext: autoescaped, %-formatted) take it
    # from a dict by the request's language.
    app.jinja_env.newstyle_gettext = True
    app.jinja_env.globals.update(gettext=_jinja_gettext, _=_jinja_gettext, ngettext=_jinja_ngettext, page_lang=language)


def _choose(header: str) -> str:
    choice = parse_accept_header(header, LanguageAccept).best_match(LANGUAGES, default=DEFAULT)
    if len(header) <= 200 and len(_CHOICES) < _CACHE_LIMIT:  # a bounded cache of the headers browsers send
        _CHOICES[header] = choice
    return choice


def language() -> str:
    """The request's language ("en", "es", "fr"...): the best of ours for its Accept-Language."""
    ctx = _cv_request.get(None)
    if ctx is None:
        return DEFAULT
    header = ctx.request.environ.get("HTTP_ACCEPT_LANGUAGE", "")
    try:
        return _CHOICES[header]
    except KeyError:
        return _choose(header)


def _selected_locale() -> Locale:
    return _LOCALES.get(language()) or Locale.parse(DEFAULT)


_CATALOGS: dict[str, object] = {DEFAULT: _NULL}  # language -> its catalog, as Flask-Babel loaded it


def _translations():
    lang = language()
    try:
        return _CATALOGS[lang]
    except KeyError:  # the first request in this language: Flask-Babel loads its .mo (once per process)
        _CATALOGS[lang] = translations = get_translations()
        return translations


_MARKUP: dict[tuple[str, str], Markup] = {}  # (language, msgid) -> its translation, ready for a page


def _jinja_gettext(__string, **variables):
    """Templates' `_()` and `{% trans %}` (Jinja's "newstyle": the result is %-formatted, so a literal %
    is written %%). Our templates are all autoescaped: the result is Markup, its variables escaped. A
    sentence without variables is looked up once per language: a page has a few dozen."""
    if not variables:
        key = (language(), __string)
        try:
            return _MARKUP[key]
        except KeyError:
            text = Markup(_translations().ugettext(__string))
            text = text % {} if "%" in text else text
            if len(_MARKUP) < 4 * _CACHE_LIMIT:
                _MARKUP[key] = text
            return text
    return Markup(_translations().ugettext(__string)) % variables


@pass_context
def _jinja_ngettext(__context, __singular, __plural, __num, **variables):
    variables.setdefault("num", __num)
    text = _translations().ungettext(__singular, __plural, __num)
    if __context.eval_ctx.autoescape:
        text = Markup(text)
    return text % variables


def gettext(message: str, **variables) -> str:
    """`message` in the request's language (itself outside a request); `%(name)s` filled from `variables`."""
    text = _translations().ugettext(message) if message else message  # "" would be the catalog's header
    return text % variables if variables else text


def ngettext(singular: str, plural: str, num: int, **variables) -> str:
    variables.setdefault("num", num)
    return _translations().ungettext(singular, plural, num) % variables


def pgettext(context: str, message: str) -> str:
    return _translations().upgettext(context, message)


def N_(message: str) -> str:
    """Marks a sentence for the catalogs where it is written; it is translated where it is shown."""
    return message


_ = gettext

# Werkzeug's own error titles and sentences, translated where our error pages show them.
WERKZEUG_TEXTS = (
    N_("Bad Request"),
    N_("The browser (or proxy) sent a request that this server could not understand."),
    N_("Not Found"),
    N_(
        "The requested URL was not found on the server. If you entered the URL manually please "
        "check your spelling and try again."
    ),
    N_("Method Not Allowed"),
    N_("The method is not allowed for the requested URL."),
    N_("Gone"),
    N_("Conflict"),
    N_("Request Entity Too Large"),
    N_("Too Many Requests"),
    N_("This user has exceeded an allotted request count. Try again later."),
    N_("Internal Server Error"),
    N_("Bad Gateway"),
    N_("Service Unavailable"),
)


# Pages of the flow in one language each: a Jinja environment per language (an overlay of the app's,
# sharing its loader, globals and filters) whose templates have their sentences translated when they
# are compiled, so that rendering them calls no gettext for a sentence without variables.

_DIRECTIVE = re.compile(r"%(?:\((\w+)\))?([^(])|%%")


class _Translate(NodeTransformer):
    """`_("...")`, `gettext("...")` and `{% trans %}` without variables become the constant translation;
    `page_lang()` the language. Sentences with variables stay calls, formatted at render time."""

    def __init__(self, lang: str, catalog):
        self.lang, self.catalog = lang, catalog

    def visit_Output(self, node):
        """A sentence with variables written out in a page (`{% trans %}` with variables): its
        translation's text becomes template data around the variables (escaped at render, as Jinja's
        newstyle gettext escapes them)."""
        node = self.generic_visit(node)
        children = []
        for child in node.nodes:
            pieces = self._pieces(child)
            children.extend(pieces if pieces is not None else [child])
        node.nodes = children
        return node

    def _pieces(self, call):
        if not (
            isinstance(call, nodes.Call)
            and isinstance(call.node, nodes.Name)
            and call.node.name in ("_", "gettext")
            and len(call.args) == 1
            and isinstance(call.args[0], nodes.Const)
            and isinstance(call.args[0].value, str)
            and call.kwargs
            and call.dyn_args is None
            and call.dyn_kwargs is None
        ):
            return None
        values = {keyword.key: keyword.value for keyword in call.kwargs}
        text, pieces, literal, at = self.catalog.ugettext(call.args[0].value), [], [], 0
        for match in _DIRECTIVE.finditer(text):
            literal.append(text[at : match.start()])
            at = match.end()
            if match.group(0) == "%%":
                literal.append("%")
            elif match.group(2) == "s" and match.group(1) in values:
                pieces.append(nodes.Const(Markup("".join(literal)), lineno=call.lineno))
                pieces.append(values[match.group(1)])
                literal = []
            else:  # any other directive: formatted at render time, as ever
                return None
        literal.append(text[at:])
        pieces.append(nodes.Const(Markup("".join(literal)), lineno=call.lineno))
        return pieces

    def visit_Call(self, node):
        node = self.generic_visit(node)
        name = node.node.name if isinstance(node.node, nodes.Name) else None
        if name == "page_lang" and not node.args and not node.kwargs:
            return nodes.Const(self.lang, lineno=node.lineno)
        if (
            name in ("_", "gettext")
            and len(node.args) == 1
            and isinstance(node.args[0], nodes.Const)
            and isinstance(node.args[0].value, str)
            and node.args[0].value
            and not node.kwargs
            and node.dyn_args is None
            and node.dyn_kwargs is None
        ):
            text = Markup(self.catalog.ugettext(node.args[0].value))  # as _jinja_gettext would say it
            return nodes.Const(text % {} if "%" in text else text, lineno=node.lineno)
        return node


def _environment(app: Flask, lang: str):
    environments = app.extensions.setdefault("paygate_languages", {})
    try:
        return environments[lang]
    except KeyError:
        pass
    env = app.jinja_env.overlay(cache_size=100)  # its own cache: templates compiled in this language
    base_parse, fold = env._parse, _Translate(lang, _translations())

    def parse(source, name, filename):
        return fold.visit(base_parse(source, name, filename))

    env._parse = parse
    return environments.setdefault(lang, env)


def render_page(template: str, **context) -> str:
    """`render_template` in the request's language (Flask's context, signals and all)."""
    return render_template(_environment(current_app, language()).get_template(template), **context)


def checkout_locale() -> str:
    """Stripe Checkout's `locale` for the request's language (`auto` where Checkout lacks it)."""
    lang = language()
    return lang if lang in CHECKOUT_LOCALES else "auto"


def money(amount: int | None, currency: str | None) -> str:
    """4900, "usd" -> "49.00 USD" (en), "49,00 USD" (es, fr); "" when unknown."""
    if amount is None or not currency:
        return ""
    lang = language()
    key = (amount, currency, lang)
    try:
        return _MONEY[key]
    except KeyError:
        pass
    units = Decimal(amount) if currency.lower() in ZERO_DECIMAL else Decimal(amount) / 100
    text = format_currency(
        units, currency.upper(), _MONEY_PATTERN, currency_digits=True, locale=_LOCALES.get(lang) or DEFAULT
    )
    if len(_MONEY) < _CACHE_LIMIT:
        _MONEY[key] = text
    return text


def number(value: int) -> str:
    """A whole number as the admin writes it: 1,200 (en), 1.200 (es), 1 200 (fr)."""
    lang = language()
    key = (value, lang)
    text = _NUMBERS.get(key)
    if text is None:
        text = format_decimal(value, locale=_LOCALES.get(lang) or DEFAULT)
        if len(_NUMBERS) < _CACHE_LIMIT:
            _NUMBERS[key] = text
    return text


def format_day(day: date | datetime) -> str:
    """A date as the catalog's translators chose to write it (English: 2025-01-31; es: 31 de enero de 2025)."""
    lang = language()
    # A date pattern writes the day only (Babel drops a datetime's time too): one text per day and language.
    key = (day.date() if isinstance(day, datetime) else day, lang)
    text = _DAYS.get(key)
    if text is not None:
        return text
    pattern = _DATE_PATTERNS.get(lang)
    if pattern is None:
        # Translators: a CLDR date pattern for due dates (https://babel.pocoo.org/en/latest/dates.html),
        # e.g. "d 'de' MMMM 'de' y" for Spanish; keep yyyy-MM-dd if unsure.
        pattern = _DATE_PATTERNS[lang] = pgettext("date pattern", "yyyy-MM-dd")
    text = _babel_format_date(key[0], pattern, locale=_LOCALES.get(lang) or DEFAULT)
    if len(_DAYS) < _CACHE_LIMIT:
        _DAYS[key] = text
    return text


_PER_UNIT = {"day": N_("per day"), "week": N_("per week"), "month": N_("per month"), "year": N_("per year")}


def period(interval: str | None) -> str | None:
    """A recurring Price's period: "year" -> "per year", "3 month" -> "every 3 months"; None if paid once."""
    if not interval:
        return None
    count, _sep, unit = interval.rpartition(" ")
    if not count:
        return gettext(_PER_UNIT[unit]) if unit in _PER_UNIT else f"per {unit}"
    n = int(count)
    if unit == "day":
        return ngettext("every %(num)d day", "every %(num)d days", n)
    if unit == "week":
        return ngettext("every %(num)d week", "every %(num)d weeks", n)
    if unit == "month":
        return ngettext("every %(num)d month", "every %(num)d months", n)
    if unit == "year":
        return ngettext("every %(num)d year", "every %(num)d years", n)
    return f"every {count} {unit}s"


def price_line(amount: int | None, currency: str | None, interval: str | None) -> str:
    """ "49.00 USD, paid once", "49.00 USD per year"."""
    return with_period(money(amount, currency), interval)


def with_period(price: str, interval: str | None) -> str:
    """A price already written out, with how often it is charged: "…, paid once", "… per year"."""
    every = period(interval)
    if every is None:
        return gettext("%(price)s, paid once", price=price)
    return gettext("%(price)s %(period)s", price=price, period=every)


def pay_label(amount: int | None, currency: str | None, interval: str | None) -> str:
    """The Pay button: "Pay 49.00 USD by card", "Pay 49.00 USD per year by card"."""
    price, every = money(amount, currency), period(interval)
    if every is None:
        return gettext("Pay %(price)s by card", price=price)
    return gettext("Pay %(price)s %(period)s by card", price=price, period=every)
