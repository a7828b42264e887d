"""Issue 9: the admin's pages, the frame's sentences and Checkout in the admin's language (English,
Spanish, French, from Accept-Language; English otherwise), from message catalogs; amounts and dates
written for the locale; the catalogs complete and compiled."""

import io
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from sqlalchemy import select

from paygate.core import languages
from paygate.core.db import db
from paygate.core.models import CheckoutSession
from tests.helpers.apps import make_app
from tests.helpers.pages import dd, text_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRANSLATIONS = os.path.join(REPO, "paygate", "translations")
SPANISH, FRENCH = "es-ES,es;q=0.9,en;q=0.5", "fr-CA,fr;q=0.9"


def frame(client, ltiaas_api, language=None, **lms):
    headers = {"Accept-Language": language} if language else {}
    registration_id = ltiaas_api.add(**lms)
    page = client.get(f"/pre-approval?registrationId={registration_id}", headers=headers)
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    return registration_id, token, page


def lang_of(page_html: str) -> str:
    return re.search(r'<html lang="([^"]+)">', page_html).group(1)


@pytest.mark.parametrize(
    "header, lang, h1, price, status",
    [
        (None, "en", "Register this tool in your LMS", "49.00 USD, paid once", "Pay to finish registering"),
        ("de-DE,de;q=0.9", "en", "Register this tool in your LMS", "49.00 USD, paid once", "Pay to finish registering"),
        (SPANISH, "es", "Registre esta herramienta en su LMS", "49,00 USD, pago único", "Pague para terminar"),
        ("es-MX", "es", "Registre esta herramienta en su LMS", "49,00 USD, pago único", "Pague para terminar"),
        (FRENCH, "fr", "Enregistrer cet outil dans votre LMS", "49,00 USD, paiement unique", "Payez pour terminer"),
        (
            "de, fr;q=0.5, es;q=0.8",
            "es",
            "Registre esta herramienta en su LMS",
            "49,00 USD, pago único",
            "Pague para terminar",
        ),
    ],
)
def test_the_frame_speaks_the_admins_language(client, stripe_api, ltiaas_api, header, lang, h1, price, status):
    _, token, page = frame(client, ltiaas_api, header)
    assert lang_of(page.text) == lang
    assert f"<h1>{h1}</h1>" in page.text
    assert dd(page.text, "price") == price
    assert status in text_of(page.text)
    # The frame's poll sends the browser's Accept-Language too (no cookie remembers it): same language.
    headers = {"Accept-Language": header} if header else {}
    assert client.get(f"/flow/{token}/status", headers=headers).get_json()["message"].startswith(status)


def test_english_is_unchanged_by_the_catalogs(client, stripe_api, ltiaas_api):
    """Without Accept-Language (or in English) the sentences are the ones the English tests know."""
    _, _token, page = frame(client, ltiaas_api, "en-GB,en;q=0.9")
    text = text_of(page.text).replace(" ,", ",")  # a link's end tag before the comma
    for sentence in (
        "Pay to finish registering this tool in your LMS. The payment opens in a new window; keep this one open.",
        "Your browser blocked the payment window. Open the payment page, then come back to this window.",
        "After paying, reload this page to finish the registration.",
    ):
        assert sentence in text
    assert re.search(r'id="pay">Pay 49.00 USD by card<', page.text)


def test_every_sentence_of_the_spanish_and_french_frames_is_translated(client, stripe_api, ltiaas_api):
    english = text_of(frame(client, ltiaas_api)[2].text)
    for language in (SPANISH, FRENCH):
        _, _, page = frame(client, ltiaas_api, language)
        translated = text_of(page.text)
        for sentence in re.findall(r"[A-Z][a-z][^.;:<>]{12,}[.;]", english):
            if sentence.startswith(("One LTI tool", "Tool registration")):  # the vendor's own words
                continue
            assert sentence not in translated, (language, sentence)
        for attribute in ("opened", "blocked", "reopen", "unknown"):
            value = re.search(rf'data-{attribute}-text="([^"]*)"', page.text).group(1)
            english_value = re.search(rf'data-{attribute}-text="([^"]*)"', frame(client, ltiaas_api)[2].text)
            assert value and value != english_value.group(1), attribute


@pytest.mark.parametrize("header, locale", [(None, "en"), ("de", "en"), (SPANISH, "es"), (FRENCH, "fr")])
def test_checkout_opens_in_the_pages_language(client, stripe_api, ltiaas_api, header, locale):
    _, token, _ = frame(client, ltiaas_api, header)
    headers = {"Accept-Language": header} if header else {}
    assert client.get(f"/flow/{token}/pay", headers=headers).status_code == 303
    (session,) = stripe_api.sessions.values()
    assert session["locale"] == locale


def test_a_retry_in_another_language_replays_the_same_checkout_request(client, stripe_api, ltiaas_api):
    """A generation's idempotency key replays one request: its locale is fixed with it."""
    _, token, _ = frame(client, ltiaas_api, FRENCH)
    stripe_api.fail_next_create.append(429)  # not kept by Stripe: the same generation is tried again
    assert client.get(f"/flow/{token}/pay", headers={"Accept-Language": FRENCH}).status_code == 503
    again = client.get(f"/flow/{token}/pay", headers={"Accept-Language": SPANISH})
    assert again.status_code == 303, again.text
    (session,) = stripe_api.sessions.values()
    assert session["locale"] == "fr"


def test_popup_and_error_pages_are_translated(client, stripe_api, ltiaas_api):
    _, token, _ = frame(client, ltiaas_api, FRENCH)
    client.get(f"/flow/{token}/pay", headers={"Accept-Language": FRENCH})
    cancelled = client.get(f"/flow/{token}/cancel", headers={"Accept-Language": FRENCH})
    assert lang_of(cancelled.text) == "fr" and "<h1>Paiement annulé</h1>" in cancelled.text
    assert "Aucun paiement n'a été effectué." in text_of(cancelled.text)
    with client.application.app_context():
        session_id = db.session.scalars(select(CheckoutSession.session_id)).one()
    stripe_api.pay(session_id)
    paid = client.get(f"/flow/{token}/paid?session_id={session_id}", headers={"Accept-Language": SPANISH})
    assert lang_of(paid.text) == "es" and "Gracias: hemos recibido su pago." in text_of(paid.text)

    unknown = client.get("/flow/tok_unknown_unknown_unknown/pay", headers={"Accept-Language": SPANISH})
    assert unknown.status_code == 404 and lang_of(unknown.text) == "es"
    assert "No reconocemos este enlace de registro. Vuelva a iniciar el registro desde su LMS." in text_of(unknown.text)
    poll = client.get("/flow/tok_unknown_unknown_unknown/status", headers={"Accept-Language": FRENCH})
    assert (
        poll.get_json()["message"] == "Ce lien d'enregistrement est inconnu. Recommencez l'enregistrement "
        "depuis votre LMS."
    )
    nowhere = client.get("/flow/nothing/here/at/all", headers={"Accept-Language": FRENCH})
    assert nowhere.status_code == 404 and "<h1>Introuvable</h1>" in nowhere.text
    damaged = client.get("/pre-approval?registrationId=bad!", headers={"Accept-Language": FRENCH})
    assert "Ce lien d'enregistrement est incomplet ou endommagé." in text_of(damaged.text)
    assert "Tool registration n'a indiqué aucun contact d'assistance." in text_of(damaged.text)


@pytest.fixture
def inv_client(database_url, stripe_api, ltiaas_api):
    app = make_app(database_url, invoice_days_until_due=30)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def test_the_invoice_form_its_refusals_and_its_due_date_are_translated(inv_client, stripe_api, ltiaas_api):
    _, token, page = frame(inv_client, ltiaas_api, SPANISH)
    text = text_of(page.text)
    assert "Pagar mediante factura" in text and "con vencimiento a 30 días" in text
    assert "Centro educativo u organización" in text
    refused = inv_client.post(
        f"/flow/{token}/invoice",
        headers={"Accept-Language": SPANISH},
        data={
            "billing_email": "finance@school.example",
            "organisation": "",
            "form_id": re.search(r'name="form_id" value="([^"]+)"', page.text).group(1),
        },
    )
    assert refused.status_code == 400
    assert "Indique el nombre de su centro educativo u organización." in text_of(refused.text)

    sent = inv_client.post(
        f"/flow/{token}/invoice",
        headers={"Accept-Language": FRENCH},
        data={
            "billing_email": "finance@school.example",
            "organisation": "École Jules Ferry",
            "form_id": re.search(r'name="form_id" value="([^"]+)"', page.text).group(1),
        },
    )
    assert sent.status_code == 303, sent.text
    fr = inv_client.get(f"/flow/{token}/status", headers={"Accept-Language": FRENCH}).get_json()["message"]
    en = inv_client.get(f"/flow/{token}/status").get_json()["message"]
    es = inv_client.get(f"/flow/{token}/status", headers={"Accept-Language": SPANISH}).get_json()["message"]
    assert re.search(r", due \d{4}-\d{2}-\d{2}, and the tool is registered", en)
    months_fr = "janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre"
    assert re.search(rf"à régler avant le \d{{1,2}} ({months_fr}) \d{{4}}, et l'outil est enregistré", fr), fr
    assert re.search(r"con vencimiento el \d{1,2} de [a-z]+ de \d{4}, y herramienta registrada", es), es


def test_amounts_and_dates_are_written_for_the_locale(app):
    for header, expected in (
        (None, ["49.00 USD", "1,234.50 EUR", "4,900 JPY", "every 3 months", "2025-01-31"]),
        ("es", ["49,00 USD", "1.234,50 EUR", "4.900 JPY", "cada 3 meses", "31 de enero de 2025"]),
        ("fr", ["49,00 USD", "1\u202f234,50 EUR", "4\u202f900 JPY", "tous les 3 mois", "31 janvier 2025"]),
    ):
        with app.test_request_context("/", headers={"Accept-Language": header} if header else {}):
            got = [
                languages.money(4900, "usd"),
                languages.money(123450, "eur"),
                languages.money(4900, "jpy"),
                languages.period("3 month"),
                languages.format_day(datetime(2025, 1, 31, 23, 0)),
            ]
            assert got == expected, header


def test_the_choice_of_language_is_cached_and_bounded(app):
    languages._CHOICES.clear()
    with app.test_request_context("/", headers={"Accept-Language": "fr-CH, fr;q=0.9"}):
        assert languages.language() == "fr" and languages._CHOICES["fr-CH, fr;q=0.9"] == "fr"
    long_header = "x-" + "a" * 300
    with app.test_request_context("/", headers={"Accept-Language": long_header}):
        assert languages.language() == "en" and long_header not in languages._CHOICES
    assert languages.language() == "en"  # outside a request


def test_adding_a_language_is_adding_a_catalog(tmp_path):
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "messages.po").write_text('msgid ""\nmsgstr ""\n"Language: de\\n"\n\nmsgid "Price"\nmsgstr "Preis"\n')
    assert languages.compiled_languages(str(tmp_path)) == ("en",)  # not compiled yet: not offered (and logged)
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pybabel"), "compile", "-d", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert languages.compiled_languages(str(tmp_path)) == ("en", "de")
    assert {"de", "es", "fr", "en"} <= languages.CHECKOUT_LOCALES and "eo" not in languages.CHECKOUT_LOCALES


def _catalogs():
    return sorted(name for name in os.listdir(TRANSLATIONS) if os.path.isdir(os.path.join(TRANSLATIONS, name)))


def test_the_catalogs_are_complete_checked_and_compiled():
    """Every sentence of the template in every catalog, translated (not fuzzy), its placeholders
    intact, and the .mo the build compiled matching its .po (`make catalogs`)."""
    with open(os.path.join(TRANSLATIONS, "messages.pot"), "rb") as f:
        template = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}
    assert _catalogs() == ["es", "fr"]
    for lang in _catalogs():
        po = os.path.join(TRANSLATIONS, lang, "LC_MESSAGES", "messages.po")
        with open(po, "rb") as f:
            catalog = read_po(f, locale=lang)
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
        assert ids == template, (lang, sorted(ids ^ template))
        for message in catalog:
            if not message.id:
                continue
            assert "fuzzy" not in message.flags, (lang, message.id)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            assert all(strings), (lang, message.id)
            assert not list(message.check(catalog)), (lang, message.id, list(message.check(catalog)))
            source = message.id if isinstance(message.id, str) else "".join(message.id)
            for sign in '<>"&':  # a page takes a translation as markup: it brings none of its own
                assert sign in source or not any(sign in text for text in strings), (lang, message.id, sign)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        mo = po[:-3] + ".mo"
        assert os.path.exists(mo), f"{mo} missing: run `make catalogs`"
        with open(mo, "rb") as f:
            assert f.read() == compiled.getvalue(), f"{mo} is older than its .po: run `make catalogs`"


def test_the_template_holds_every_sentence_of_the_sources(tmp_path):
    """`make messages` was run after the last change of an admin's sentence."""
    out = tmp_path / "now.pot"
    subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "pybabel"),
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(out),
            "--no-location",
            ".",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )

    def ids(path):
        with open(path, "rb") as f:
            return {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in read_po(f) if m.id}

    missing = ids(out) - ids(os.path.join(TRANSLATIONS, "messages.pot"))
    assert not missing, f"sentences not in the catalogs (run `make messages`, translate, `make catalogs`): {missing}"


@pytest.mark.parametrize("header", [None, SPANISH, FRENCH])
def test_pages_compiled_in_a_language_say_what_the_catalog_says_at_render_time(
    client, stripe_api, ltiaas_api, header, monkeypatch
):
    """The flow's pages are compiled per language with their sentences translated in (the hot path);
    they are identical to the same templates translated call by call."""
    from flask import render_template

    from paygate.web.flow import _preapproval_page
    from paygate.web.flow.status import flow_view

    registration_id, _, _ = frame(client, ltiaas_api, header)
    app = client.application
    with app.test_request_context("/", headers={"Accept-Language": header} if header else {}):
        app.preprocess_request()
        view = flow_view(registration_id=registration_id)
        folded, _ = _preapproval_page(view)
        pages = [languages.render_page("message.html", title="T", message="M", show_support=True, retry_url="/x")]
        monkeypatch.setattr(languages, "render_page", render_template)  # the app's environment: gettext per call
        runtime, _ = _preapproval_page(view)
        pages.append(languages.render_page("message.html", title="T", message="M", show_support=True, retry_url="/x"))
    assert folded == runtime and pages[0] == pages[1]
    assert "{{" not in folded and "%(" not in folded
