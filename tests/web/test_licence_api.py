"""The licence API, GET /api/v1/platforms/<platformId>/licence: what the vendor's tool reads at launch for each
state of a licence, its bearer token, its ETag and 304, hostile platform ids, and the link to the licence page."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import event, select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.licensing import access, platforms
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.licences import buy, completed_pilot, load
from tests.helpers.operators import form_id
from tests.helpers.webhooks import send

TOKEN = "licence-api-token-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FIELDS = {"status", "kind", "price_id", "product", "quantity", "seat_unit", "ends_at", "manage_url"}


@pytest.fixture
def app(database_url):
    """The service with LICENCE_API_TOKEN set (and pay by invoice and a pilot offered, 30 days each)."""
    app = make_app(database_url, licence_api_token=TOKEN, invoice_days_until_due=30, pilot_days=30)
    yield app
    with app.app_context():
        db.engine.dispose()


def url(platform_id: str) -> str:
    return f"/api/v1/platforms/{platform_id}/licence"


def ask(client, platform_id: str, **headers):
    return client.get(url(platform_id), headers={**AUTH, **headers})


def read(client, platform_id: str) -> dict:
    response = ask(client, platform_id)
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert set(body) == {"platform", "licence"} and set(body["licence"]) == FIELDS
    assert body["platform"]["id"] == platform_id
    return body


def bought(client, stripe_api, ltiaas_api) -> tuple[int, str, dict]:
    """A registration paid once by card: (pk, platform id, its Checkout Session)."""
    pk, session = buy(client, stripe_api, ltiaas_api)
    return pk, load(client, pk).platform_id, session


def day(at) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%S}Z"


# What each licence reads as


def test_a_paid_payment_is_active_with_what_was_bought(client, stripe_api, ltiaas_api):
    pk, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    body = read(client, platform_id)
    assert body["platform"] == {"id": platform_id, "active": True}
    shown = body["licence"]
    assert (shown["status"], shown["kind"], shown["price_id"], shown["quantity"]) == (
        "active",
        "payment",
        "price_registration",
        1,
    )
    assert shown["product"] == load(client, pk).product_name and shown["product"]
    assert shown["ends_at"] is None  # paid once: no period ends


def test_a_pilot_reads_pilot_until_its_end(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = completed_pilot(app, ltiaas_api)
    body = read(client, platform_id)
    assert body["platform"]["active"] is True
    assert (body["licence"]["status"], body["licence"]["kind"]) == ("pilot", "pilot")
    assert body["licence"]["ends_at"] == day(load(app, pk).licence.pilot_ends_at)


def test_a_subscription_past_due_is_in_grace(client, stripe_api, ltiaas_api, yearly):
    pk, platform_id, session = bought(client, stripe_api, ltiaas_api)
    assert read(client, platform_id)["licence"]["status"] == "active"
    sub = stripe_api.set_subscription_status(session["subscription"], "past_due")
    send(client, stripe_api, "customer.subscription.updated", sub)
    body = read(client, platform_id)
    assert body["platform"]["active"] is True and body["licence"]["status"] == "grace"
    assert body["licence"]["kind"] == "subscription"
    assert body["licence"]["ends_at"] == day(load(client, pk).licence.period_end)


def test_an_invoice_overdue_within_its_grace_is_in_grace(client, stripe_api, ltiaas_api):
    registration_id, token, page = open_frame(client, ltiaas_api)
    answer = client.post(
        f"/flow/{token}/invoice",
        data={
            "billing_email": "finance@school.example",
            "organisation": "Springfield Elementary",
            "po_number": "PO-1",
            "form_id": form_id(page.text, f"/flow/{token}/invoice"),
        },
    )
    assert answer.status_code == 303
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        platform_id, invoice_id = reg.platform_id, reg.licence.invoice_id
    before = read(client, platform_id)["licence"]
    assert (before["status"], before["kind"]) == ("active", "invoice")
    send(client, stripe_api, "invoice.overdue", stripe_api.make_overdue(invoice_id, days=3))
    body = read(client, platform_id)
    assert body["platform"]["active"] is True and body["licence"]["status"] == "grace"
    due = load(client, reg.id).licence.due_at
    assert due < utcnow() and body["licence"]["ends_at"] == day(due)


def test_a_refunded_payment_is_inactive(client, stripe_api, ltiaas_api):
    _pk, platform_id, session = bought(client, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    body = read(client, platform_id)
    assert body["platform"]["active"] is False and body["licence"]["status"] == "inactive"
    assert body["licence"]["kind"] == "payment"


def test_a_lapsed_pilot_is_inactive_even_before_the_worker_reviews_it(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = completed_pilot(app, ltiaas_api, ends_in=timedelta(days=3))
    assert read(client, platform_id)["licence"]["status"] == "pilot"
    # The clock passes the end; the stored decision (active) is not reviewed yet: the API decides afresh.
    with app.app_context():
        past = utcnow() - timedelta(minutes=1)
        db.session.execute(update(Licence).values(pilot_ends_at=past))
        db.session.execute(update(Registration).where(Registration.id == pk).values(access_review_at=past))
        db.session.commit()
    assert load(app, pk).access_wanted is True
    body = read(client, platform_id)
    assert body["platform"]["active"] is False and body["licence"]["status"] == "inactive"
    # Once reviewed, the stored decision says the same.
    with app.app_context():
        access.refresh(db.session.get(Registration, pk), "test")
        db.session.commit()
    assert load(app, pk).access_wanted is False
    assert read(client, platform_id) == body


def test_an_operator_revoking_access_turns_the_platform_off_not_the_licence(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    with app.app_context():
        assert access.set_override(db.session.get(Registration, pk), False, "test", "abuse")
        db.session.commit()
    body = read(client, platform_id)
    assert body["platform"]["active"] is False
    assert body["licence"]["status"] == "active"  # the licence's own decision: paid


def test_a_platform_without_a_licence_and_an_unknown_one(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    with app.app_context():
        product = db.session.get(Registration, pk).product_name
        db.session.execute(update(Registration).values(licence_pk=None, access_wanted=None))
        db.session.commit()
    body = read(client, platform_id)
    assert body["platform"] == {"id": platform_id, "active": False}
    assert body["licence"] == dict.fromkeys(FIELDS) | {"status": "inactive", "product": product}
    unknown = ask(client, "no-such-platform")
    assert unknown.status_code == 404 and unknown.get_json()["message"] == "No such platform."
    assert unknown.headers["Cache-Control"] == "no-store" and "ETag" not in unknown.headers


def test_the_newest_registration_of_a_platform_answers(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    with app.app_context():
        older = db.session.get(Registration, pk)
        newer = Registration(
            **{
                c.key: getattr(older, c.key)
                for c in Registration.__table__.columns
                if c.key not in ("id", "registration_id", "flow_token", "licence_pk", "access_wanted")
            },
            registration_id="reg-newer",
            flow_token="tok-newer",
        )
        db.session.add(newer)
        db.session.commit()
    assert read(client, platform_id)["licence"]["status"] == "inactive"  # the newer one has no licence


# The bearer token


def test_the_token_is_checked_before_anything_is_read(client, stripe_api, ltiaas_api):
    _, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    same_length = "x" * len(TOKEN)
    for headers in (
        {},
        {"Authorization": f"Bearer {same_length}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer \u00e9\u00e9"},
    ):
        for platform in (platform_id, "no-such-platform", ".."):
            response = client.get(url(platform), headers=headers)
            assert response.status_code == 401, (headers, platform)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.headers["Cache-Control"] == "no-store" and response.mimetype == "application/json"
            assert TOKEN not in response.text and platform_id not in response.text
    assert client.get(url(platform_id), headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200
    assert ask(client, platform_id).status_code == 200


def test_without_a_token_configured_the_api_is_not_served(database_url, stripe_api, ltiaas_api):
    app = make_app(database_url)
    try:
        client = app.test_client()
        _, platform_id, _ = bought(client, stripe_api, ltiaas_api)
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = client.get(url(platform_id), headers=headers)
            assert response.status_code == 404 and response.mimetype == "application/json"
            assert response.get_json()["error"] == "Not Found" and platform_id not in response.text
            assert response.headers["Cache-Control"] == "no-store"
    finally:
        with app.app_context():
            db.engine.dispose()


# Caching: ETag, 304


def test_an_unchanged_licence_is_revalidated_with_304(client, stripe_api, ltiaas_api):
    _, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    first = ask(client, platform_id)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'W/"[0-9a-f]{32}"', etag)
    assert first.headers["Cache-Control"] == "private, max-age=60" and first.headers["Vary"] == "Authorization"
    again = ask(client, platform_id)
    assert again.headers["ETag"] == etag  # a weak tag: the same facts, each answer with its own one-hour link
    assert again.json["licence"] == {**first.json["licence"], "manage_url": again.json["licence"]["manage_url"]}
    strong = etag.removeprefix("W/")
    for header in (etag, strong, f'"other", {etag}', f'"other" , {strong}', "*"):
        response = ask(client, platform_id, **{"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.data == b""
        assert response.headers["ETag"] == etag and response.headers["Cache-Control"] == "private, max-age=60"
        assert response.headers["Vary"] == "Authorization"
    for header in ('"other"', etag[:-2] + '"', "", "W/", etag.strip('"')):
        assert ask(client, platform_id, **{"If-None-Match": header}).status_code == 200, header
    # The token comes first, even for a matching tag.
    assert client.get(url(platform_id), headers={"If-None-Match": etag}).status_code == 401


def test_the_etag_changes_with_the_licence(client, stripe_api, ltiaas_api):
    _, platform_id, session = bought(client, stripe_api, ltiaas_api)
    etag = ask(client, platform_id).headers["ETag"]
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    changed = ask(client, platform_id, **{"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.get_json()["licence"]["status"] == "inactive"


# Hostile platform ids


@pytest.mark.parametrize(
    "platform_id",
    [
        "..",
        "%2E%2E",
        "..%2F..%2Fetc%2Fpasswd",
        "a%2Fb",
        "%00",
        "a%00b",
        "x" * 10_000,
        "x" * 129,
        "%C3%A9cole",
        "\u202egnp",
        "with%20space",
        "%20",
        "' OR '1'='1",
        "<script>",
        "%FF",
    ],
)
def test_hostile_platform_ids_get_a_json_refusal(client, stripe_api, ltiaas_api, platform_id):
    _, real, _ = bought(client, stripe_api, ltiaas_api)
    response = ask(client, platform_id)
    assert 400 <= response.status_code < 500 and response.mimetype == "application/json", response.status_code
    assert response.get_json()["error"] and response.headers["Cache-Control"] == "no-store"
    assert TOKEN not in response.text and real not in response.text
    assert "<script>" not in response.text and "passwd" not in response.text


def test_other_methods_and_paths_under_api_answer_json(client):
    for method, path in (
        ("post", url("p1")),
        ("put", url("p1")),
        ("delete", url("p1")),
        ("get", "/api/v1/platforms/p1"),
        ("get", "/api/v1/platforms/p1/licence/x"),
        ("get", "/api/v2/platforms/p1/licence"),
        ("get", "/api/"),
    ):
        response = getattr(client, method)(path, headers=AUTH)
        assert response.status_code in (404, 405), (method, path)
        assert response.mimetype == "application/json" and response.get_json()["error"], (method, path)
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers


# The link to the licence page


def test_manage_url_opens_the_licence_page_without_the_key(app, client, stripe_api, ltiaas_api):
    pk, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    with app.app_context():
        key = platforms.key_of(db.session.get(Registration, pk))
    response = ask(client, platform_id)
    manage_url = response.get_json()["licence"]["manage_url"]
    parts = urlsplit(manage_url)
    assert f"{parts.scheme}://{parts.netloc}" == "http://paygate.test" and parts.path.startswith("/licence/m/")
    for form in (key, key.lower(), "-".join(key[i : i + 4] for i in range(0, 16, 4))):
        assert form not in response.text
    page = client.get(parts.path)
    assert page.status_code == 200 and "Your licence" in page.text
    assert "Set-Cookie" not in response.headers


def test_an_answer_costs_one_read(app, client, stripe_api, ltiaas_api):
    _, platform_id, _ = bought(client, stripe_api, ltiaas_api)
    statements = []
    with app.app_context():
        engine = db.engine
    listen = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        etag = ask(client, platform_id).headers["ETag"]
        assert ask(client, platform_id, **{"If-None-Match": etag}).status_code == 304
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    # PostgreSQL's read goes to the driver itself, past SQLAlchemy's events; SQLite's is seen here, one per answer.
    expected = 2 if engine.dialect.name == "sqlite" else 0
    assert len(statements) == expected, statements
