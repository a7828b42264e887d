"""The licence page, /licence/<key>: what the school bought, in its language; its platforms and receipts; the seats
of a subscription changed at Stripe with prorations; Stripe's customer portal without the key; a key replaced and
shown once; wrong keys refused alike and counted."""

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration, TimelineEntry
from paygate.core.redaction import redact
from paygate.licensing import keys, platforms
from paygate.sales import fulfilment
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.licences import buy
from tests.sales.test_offers import OFFERS, SEATS, add_offers

ES = {"Accept-Language": "es-ES,es;q=0.9"}


@pytest.fixture
def seats_client(database_url, stripe_api):
    """A client of an app selling OFFERS (3.00 USD per student per year first)."""
    add_offers(stripe_api)
    app = make_app(database_url, stripe_price_id=OFFERS)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def _key_of(client, pk) -> str:
    with client.application.app_context():
        return keys.shown(platforms.key_of(db.session.get(Registration, pk)))


def _bought(client, stripe_api, ltiaas_api):
    """A card payment completed: (registration pk, its licence key as shown)."""
    pk, _ = buy(client, stripe_api, ltiaas_api)
    return pk, _key_of(client, pk)


def _licence(client, pk, **changes) -> None:
    with client.application.app_context():
        licence = db.session.get(Registration, pk).licence
        for name, value in changes.items():
            setattr(licence, name, value)
        db.session.commit()


def _status(page) -> str:
    return re.search(r'data-status="([a-z]+)"><strong>([^<]*)</strong>', page.text).group(1, 2)


def _seat_licence(client, stripe_api, ltiaas_api, seats=120):
    """A subscription of 3.00 USD per student per year for `seats` students, completed: (pk, key, subscription id)."""
    _, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay?offer={SEATS}&seats={seats}").status_code == 303
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert status(client, token)["phase"] == "done"
    with client.application.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    return pk, _key_of(client, pk), stripe_api.sessions[session["id"]]["subscription"]


def test_the_page_says_what_was_bought_in_english_and_in_spanish(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    page = client.get(f"/licence/{key}")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert "Tool registration" in page.text and "49.00 USD, paid once" in page.text
    assert _status(page) == ("active", "Active")
    assert "Payment of 49.00 USD on" in page.text
    assert "https://canvas.instructure.com" in page.text and "Canvas (cloud)" in page.text  # its platform
    assert f'action="/licence/{key}/key"' in page.text
    # The key as an admin may type it: lower case, spaces; the page is the same licence's.
    assert client.get(f"/licence/{key.lower().replace('-', ' ')}").status_code == 200
    spanish = client.get(f"/licence/{key}", headers=ES)
    assert '<html lang="es">' in spanish.text
    assert "49,00 USD" in spanish.text and _status(spanish) == ("active", "Activa")
    assert "Plataformas" in spanish.text and "Recibos y facturas" in spanish.text


def test_status_words_for_pilot_paid_lapsed_and_refunded(client, stripe_api, ltiaas_api):
    pk, key = _bought(client, stripe_api, ltiaas_api)
    assert _status(client.get(f"/licence/{key}")) == ("active", "Active")
    ends = utcnow() + timedelta(days=10)
    _licence(client, pk, kind="pilot", pilot_ends_at=ends)
    page = client.get(f"/licence/{key}")
    assert _status(page) == ("pilot", f"Pilot until {ends:%Y-%m-%d}")
    assert "Pilot ends" in page.text
    _licence(client, pk, pilot_ends_at=utcnow() - timedelta(days=1))
    assert _status(client.get(f"/licence/{key}")) == ("lapsed", "Lapsed")
    _licence(client, pk, kind="payment")
    with client.application.app_context():
        payment = db.session.get(Registration, pk).licence.payments[0]
        payment.amount_refunded = payment.amount
        db.session.commit()
    page = client.get(f"/licence/{key}")
    assert _status(page) == ("refunded", "Refunded") and "(49.00 USD refunded)" in page.text
    assert _status(client.get(f"/licence/{key}", headers=ES)) == ("refunded", "Reembolsada")


def test_every_platform_is_listed_with_the_one_a_newer_platform_replaced(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    for url in ("https://test.school.example", "https://new.school.example"):
        registration_id, _, _ = open_frame(client, ltiaas_api, url=url)
        with client.application.app_context():
            reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
            assert platforms.join(reg, key, "test").status == "ok"
            db.session.commit()
            fulfilment.complete(reg, "test")
    page = client.get(f"/licence/{key}")
    rows = re.findall(r'<tr class="platform">(.*?)</tr>', page.text, re.S)
    assert len(rows) == 3
    assert "replaced by a newer platform" in rows[0]
    assert "test.school.example" in rows[1] and ">Active<" in rows[1]
    assert "new.school.example" in rows[2] and ">Active<" in rows[2]


def test_headers_keep_the_key_out_of_referers_indexes_cookies_and_frames(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    for path in (f"/licence/{key}", "/licence/PG-0000-0000-0000-0000"):
        answer = client.get(path)
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert "noindex" in answer.headers["X-Robots-Tag"]
        assert answer.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in answer.headers
        assert "Cookie" not in answer.headers.get("Vary", "")  # no session is read: it depends on no cookie
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    page = client.get(f"/licence/{key}").text
    assert "<img" not in page and "fonts." not in page  # nothing fetched elsewhere with the key in the page's URL


def test_an_unknown_key_gets_the_same_404_page_however_close_it_is(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    close = key[:-1] + ("0" if key[-1] != "0" else "1")
    answers = [client.get(f"/licence/{k}") for k in (close, "PG-ZZZZ-ZZZZ-ZZZZ-ZZZZ", "not-a-key")]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert "No licence has this key" in answers[0].text


def test_the_eleventh_wrong_key_in_a_minute_is_refused_and_a_right_key_is_not_counted(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    for _ in range(5):
        assert client.get(f"/licence/{key}").status_code == 200  # a right key costs nothing
    for i in range(10):
        assert client.get(f"/licence/PG-0000-0000-0000-{i:04d}").status_code == 404
        if i < 9:
            assert client.get(f"/licence/{key}").status_code == 200
    refused = client.get("/licence/PG-0000-0000-0000-0099")
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "Too many wrong licence keys" in refused.text


def test_wrong_keys_sent_at_once_are_all_counted_and_pass_the_rate_by_no_more_than_were_in_flight(
    client, stripe_api, ltiaas_api
):
    _, key = _bought(client, stripe_api, ltiaas_api)
    at_once, rounds = 8, 4  # 8 guessers, as many as the default deployment's web threads, 32 guesses
    start = threading.Barrier(at_once)

    def guesser(n):
        start.wait()
        own = client.application.test_client()
        return [own.get(f"/licence/PG-0000-0000-{n:04d}-{i:04d}").status_code for i in range(rounds)]

    with ThreadPoolExecutor(at_once) as pool:
        answers = [code for codes in pool.map(guesser, range(at_once)) for code in codes]
    looked_up = answers.count(404)
    assert set(answers) <= {404, 429} and 10 <= looked_up <= 10 + at_once
    refused = client.get(f"/licence/{key}")  # every wrong key was counted: the rate is spent for the right one too
    assert refused.status_code == 429 and "Too many wrong licence keys" in refused.text


def test_bad_input_in_the_key_is_a_404_page_never_a_5xx(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    for bad in ("A" * 10_000, key + "%00", "%1b%5b31m" + key, "PG-١٢٣٤-٥٦٧٨-٩٠١٢-٣٤٥٦", key[:-1] + "٣"):
        answer = client.get(f"/licence/{bad}")
        assert answer.status_code == 404, bad[:40]
        assert "No licence has this key" in answer.text
    for bad in ("x" * 5000, "%00"):
        assert client.get(f"/licence/m/{bad}").status_code == 404
        assert client.post(f"/licence/{bad}/key").status_code == 404


def test_seats_changed_within_the_range_reach_stripe_with_prorations_and_the_page_at_once(
    seats_client, stripe_api, ltiaas_api
):
    client = seats_client
    _, key, sub_id = _seat_licence(client, stripe_api, ltiaas_api)
    page = client.get(f"/licence/{key}")
    assert "120 students" in page.text and 'id="seats-form"' in page.text
    answer = client.post(f"/licence/{key}/seats", data={"seats": "150"})
    assert answer.status_code == 303 and answer.headers["Location"] == f"/licence/{key}?done=seats"
    assert stripe_api.subscriptions[sub_id]["items"]["data"][0]["quantity"] == 150
    update = [v for k, v in stripe_api.state.idempotency.items() if k.startswith("seats-")]
    assert len(update) == 1 and '["proration_behavior", "create_prorations"]' in update[0][0]
    prorations = [
        i
        for i in stripe_api.invoice_items.values()
        if (i["parent"] or {}).get("subscription_details", {}).get("subscription") == sub_id
    ]
    assert len(prorations) == 2 and {i["amount"] < 0 for i in prorations} == {True, False}
    page = client.get(answer.headers["Location"])
    assert "150 students" in page.text and "The number of seats was changed" in page.text
    with client.application.app_context():
        assert db.session.scalars(select(Licence.quantity)).one() == 150


def test_seats_out_of_range_or_not_whole_get_one_sentence_and_nothing_at_stripe(seats_client, stripe_api, ltiaas_api):
    client = seats_client
    _, key, sub_id = _seat_licence(client, stripe_api, ltiaas_api)
    calls = len(stripe_api.calls)
    for seats, sentence in (
        ("5", "The number of students must be from 10 to 5,000."),
        ("5001", "The number of students must be from 10 to 5,000."),
        ("12.5", "Enter the number of students as a whole number from 10 to 5,000."),
        ("١٢٠", "Enter the number of students as a whole number from 10 to 5,000."),
        ("", "Enter the number of students as a whole number from 10 to 5,000."),
    ):
        answer = client.post(f"/licence/{key}/seats", data={"seats": seats})
        assert answer.status_code == 400
        assert sentence in answer.text and "120 students" in answer.text
    assert not [op for op, _ in stripe_api.calls[calls:] if op != "price"]
    assert stripe_api.subscriptions[sub_id]["items"]["data"][0]["quantity"] == 120
    spanish = client.post(f"/licence/{key}/seats", data={"seats": "1"}, headers=ES)
    assert spanish.status_code == 400 and "El número de estudiantes debe estar entre 10 y 5.000." in spanish.text


def test_a_licence_sold_once_offers_no_seat_change(client, stripe_api, ltiaas_api):
    _, key = _bought(client, stripe_api, ltiaas_api)
    assert 'id="seats-form"' not in client.get(f"/licence/{key}").text
    answer = client.post(f"/licence/{key}/seats", data={"seats": "3"})
    assert answer.status_code == 400 and "cannot be changed here" in answer.text


def test_manage_billing_opens_the_portal_whose_return_url_has_no_key(seats_client, stripe_api, ltiaas_api):
    client = seats_client
    _, key, sub_id = _seat_licence(client, stripe_api, ltiaas_api)
    answer = client.post(f"/licence/{key}/billing", headers=ES)
    assert answer.status_code == 303
    portal = answer.headers["Location"]
    assert portal.startswith("http://paygate.test/_local/stripe/billing_portal/bps_")
    (session,) = stripe_api.state.stores["billing_portal.session"].values()
    assert session["customer"] == stripe_api.subscriptions[sub_id]["customer"] and session["locale"] == "es"
    normal = keys.normal(key)
    assert session["return_url"].startswith("http://paygate.test/licence/m/")
    assert normal not in session["return_url"] and key not in session["return_url"]
    back = client.get(urlsplit(session["return_url"]).path)
    assert back.status_code == 200 and "120 students" in back.text
    # The stand-in's portal: the customer's subscription and invoices, a way back, and cancelling it.
    hosted = stripe_api.client.get(urlsplit(portal).path.removeprefix("/_local"))
    assert hosted.status_code == 200 and sub_id in hosted.text and session["return_url"] in hosted.text
    cancelled = stripe_api.client.post(urlsplit(portal).path.removeprefix("/_local") + f"/cancel/{sub_id}")
    assert cancelled.status_code == 303
    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert stripe_api.state.events[-1]["type"] == "customer.subscription.deleted"


def test_a_licence_without_a_stripe_customer_offers_no_billing(client, stripe_api, ltiaas_api):
    pk, key = _bought(client, stripe_api, ltiaas_api)
    _licence(client, pk, customer_id=None)
    assert 'id="billing-form"' not in client.get(f"/licence/{key}").text
    answer = client.post(f"/licence/{key}/billing")
    assert answer.status_code == 400 and "no billing account" in answer.text
    assert not [op for op, _ in stripe_api.calls if "portal" in op]


def test_a_replaced_key_is_shown_once_and_the_old_one_stops_at_once(client, stripe_api, ltiaas_api, caplog):
    caplog.set_level(logging.DEBUG)
    pk, old = _bought(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        from paygate.web.licence import Held

        licence = db.session.get(Registration, pk).licence
        with client.application.test_request_context():
            link = urlsplit(Held(licence, key=keys.normal(old)).link()).path
    assert client.get(link).status_code == 200
    answer = client.post(f"/licence/{old}/key")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    new = re.search(r'id="new-key">([^<]+)<', answer.text).group(1)
    assert new != old and f'href="http://paygate.test/licence/{new}"' in answer.text
    assert client.get(f"/licence/{old}").status_code == 404
    assert client.get(link).status_code == 404  # links made with the old key end with it
    again = client.get(f"/licence/{new}")
    assert again.status_code == 200 and 'id="new-key"' not in again.text  # shown once; the page says its last 4
    assert f"ends in {keys.normal(new)[-4:]}" in again.text
    with client.application.app_context():
        entries = db.session.scalars(select(TimelineEntry.message).where(TimelineEntry.registration_pk == pk)).all()
        assert any("Licence key replaced" in m for m in entries)
        assert not any(keys.normal(new) in m or keys.normal(old) in m for m in entries)
    logged = " ".join(r.getMessage() for r in caplog.records)
    for k in (old, new, keys.normal(old), keys.normal(new)):
        assert k not in logged
        # An access line naming the page (the server's, gunicorn's) loses the key too.
        assert k not in redact(f'"GET /licence/{k} HTTP/1.1" 200 -') and k not in redact(f"POST /licence/{k}/key")
