"""Operators see licences as schools hold them: the key's hint (never the key), the platforms on a licence (one
joined by key, one replaced), pilots and their end, the list's filter of pilots ending soon, and the CSV."""

import csv
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.licensing import keys, platforms
from paygate.sales import fulfilment
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.licences import buy
from tests.helpers.operators import add_operator, api_ids, csrf_token, seed, sign_in
from tests.web.test_operator_statuses import dd, row, text_of

SCHOOL_TEST_LMS = "https://test.school.example"
SCHOOL_NEW_LMS = "https://new.school.example"


def key_of(app, pk) -> str:
    """The key (normal form) of the licence registration `pk` opened, as its admin was shown it."""
    with app.app_context():
        return platforms.key_of(db.session.get(Registration, pk))


def join(client, ltiaas_api, key: str, url: str) -> int:
    """A second LMS registers with the licence's key and is completed onto it; its pk."""
    registration_id, _, _ = open_frame(client, ltiaas_api, url=url)
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        assert platforms.join(reg, keys.shown(key), "test").status == "ok"
        db.session.commit()
        fulfilment.complete(reg, "test")
        return reg.id


def platform_of(app, pk) -> str:
    with app.app_context():
        return db.session.get(Registration, pk).platform_id


@pytest.fixture
def shared(ops, stripe_api, ltiaas_api):
    """A paid licence with two platforms: (origin pk, joined pk, key)."""
    origin, _ = buy(ops, stripe_api, ltiaas_api)
    key = key_of(ops.application, origin)
    return origin, join(ops, ltiaas_api, key, SCHOOL_TEST_LMS), key


def test_the_json_licence_names_its_key_hint_and_platforms_oldest_first(ops, shared):
    origin, joined, key = shared
    ids = [platform_of(ops.application, origin), platform_of(ops.application, joined)]
    for pk in (origin, joined):
        response = ops.get(f"/operator/api/registrations/{pk}")
        licence = response.get_json()["licence"]
        assert licence["key_hint"] == key[-4:] and licence["platforms"] == ids
        assert licence["pilot_ends_at"] is None and licence["opened_by"] == origin
        assert licence["kind"] == "payment" and licence["standing"] == {"label": "paid", "active": True}
        assert key not in response.text and key[:12] not in response.text
    listed = ops.get("/operator/api/registrations").get_json()["items"]
    assert {item["id"]: item["licence"]["platforms"] for item in listed} == {origin: ids, joined: ids}


def test_a_replaced_platform_stays_on_the_licence_inactive(ops, shared, ltiaas_api):
    origin, joined, key = shared
    newest = join(ops, ltiaas_api, key, SCHOOL_NEW_LMS)
    ids = [platform_of(ops.application, pk) for pk in (origin, joined, newest)]
    body = ops.get(f"/operator/api/registrations/{origin}").get_json()
    assert body["licence"]["platforms"] == ids
    assert body["platform"]["replaced_at"] is not None and body["platform"]["active"] is False
    assert ops.get(f"/operator/api/registrations/{newest}").get_json()["platform"]["replaced_at"] is None
    page = ops.get(f"/operator/registrations/{newest}").text
    platforms_table = text_of(re.search(r'id="licence-platforms".*?</table>', page, re.S).group(0))
    assert f"opened the licence; replaced {utcnow():%Y-%m-%d}" in platforms_table
    # The replaced registration's badge is not the green of a platform in good standing.
    _, cells = row(ops.get("/operator/").text, origin)
    assert f"replaced {utcnow():%Y-%m-%d}" in cells[10]
    assert "state-ended" in ops.get(f"/operator/registrations/{origin}").text


def test_the_detail_page_shows_the_key_hint_and_the_platforms_never_the_key(ops, shared):
    origin, joined, key = shared
    for pk in (origin, joined):
        page = ops.get(f"/operator/registrations/{pk}").text
        assert dd(page, "licence-key") == f"key …{key[-4:]}"
        assert key not in page and keys.shown(key) not in page and key[:12] not in page
        table = re.search(r'id="licence-platforms".*?</table>', page, re.S).group(0)
        for other in (origin, joined):
            assert f'href="/operator/registrations/{other}"' in table
            assert platform_of(ops.application, other) in table
        assert "https://test.school.example" in table and "opened the licence" in text_of(table)
        assert "joined by key" in text_of(table) and text_of(table).count("active") == 2


def test_a_joined_registration_reads_its_licence_money_and_offers_no_refund(ops, shared, stripe_api):
    origin, joined, _ = shared
    page = ops.get(f"/operator/registrations/{joined}").text
    assert dd(page, "licence-origin") == f"joined licence of registration #{origin} by its key"
    assert f'href="/operator/registrations/{origin}" id="licence-origin-link"' in page
    assert "49.00 USD" in dd(page, "paid") and f"made on registration #{origin}" in dd(page, "paid")
    assert dd(page, "licence-status") == "paid"
    above_timeline = text_of(page.split("<h2>Timeline")[0])  # the timeline quotes the join: "no payment."
    for owing in ("not paid", "unpaid", "no payment"):
        assert owing not in above_timeline
    assert 'id="refund-start"' not in page and 'id="refund-elsewhere"' in page
    assert 'id="refund-start"' in ops.get(f"/operator/registrations/{origin}").text
    # Asked anyway, the refund changes nothing and says where the licence's payment is refunded.
    refund_page = ops.get(f"/operator/registrations/{joined}/refund").text
    assert f"Refund the licence's payment on registration #{origin}" in text_of(refund_page)
    action = f"/operator/registrations/{joined}/refund"
    answer = ops.post(action, data={"csrf_token": csrf_token(ops, f"/operator/registrations/{joined}")})
    told = ops.get(answer.headers["Location"]).text
    assert f"refund the licence's payment on registration {origin}" in text_of(told)
    assert stripe_api.refunds == {}
    listed = ops.get("/operator/api/registrations").get_json()["items"]
    assert all(item["licence"]["standing"]["active"] for item in listed)
    _, cells = row(ops.get("/operator/").text, joined)
    assert f"paid on registration #{origin}" in cells[3] and "not paid" not in cells[3]
    assert f"joined by key (#{origin})" in cells[10]


def test_the_csv_ends_with_the_key_hint_pilot_end_and_platforms(ops, shared):
    origin, joined, key = shared
    rows = list(csv.reader(io.StringIO(ops.get("/operator/registrations.csv").get_data(as_text=True))))
    assert rows[0][-3:] == ["key_hint", "pilot_ends_at", "licence_platforms"]
    exported = {int(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    ids = " ".join(platform_of(ops.application, pk) for pk in (origin, joined))
    for pk in (origin, joined):
        assert exported[pk]["key_hint"] == key[-4:] and exported[pk]["licence_platforms"] == ids
        assert exported[pk]["pilot_ends_at"] == ""
    # The licence's payment counts once in a sum: on the row of the registration that paid it.
    assert exported[origin]["amount_major"] == "49.00" and exported[joined]["amount_major"] == ""
    assert key not in "\n".join(",".join(r) for r in rows)


@pytest.fixture
def piloting(database_url, stripe_api, ltiaas_api):
    """A client of an app that offers 30-day pilots, with an operator signed in."""
    app = make_app(database_url, pilot_days=30)
    add_operator(app)
    client = app.test_client()
    sign_in(client)
    yield client
    with app.app_context():
        db.engine.dispose()


def test_a_pilot_shows_its_end_in_the_json_the_list_and_the_detail(piloting, stripe_api, ltiaas_api):
    registration_id, _, _ = open_frame(piloting, ltiaas_api, url="https://lms.school.example")
    with piloting.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        licence = platforms.start_pilot(reg, "test")
        db.session.commit()
        fulfilment.complete(reg, "test")
        pk, ends, platform_id = reg.id, licence.pilot_ends_at, reg.platform_id
    licence = piloting.get(f"/operator/api/registrations/{pk}").get_json()["licence"]
    assert licence["kind"] == "pilot" and licence["pilot_ends_at"] == ends.isoformat() + "Z"
    assert licence["platforms"] == [platform_id] and licence["standing"]["active"] is True
    assert licence["standing"]["label"] == f"pilot until {ends:%Y-%m-%d}"
    _, cells = row(piloting.get("/operator/").text, pk)
    assert f"pilot until {ends:%Y-%m-%d}" in cells[10] and "free pilot" in cells[3]
    page = piloting.get(f"/operator/registrations/{pk}").text
    assert dd(page, "pilot-end") == f"pilot until {ends:%Y-%m-%d %H:%M:%S} UTC"
    assert "a free pilot, nothing charged" in dd(page, "offer-amount") and "not paid" not in text_of(page)
    assert stripe_api.sessions == {}
    with piloting.application.app_context():
        db.session.get(Licence, licence_pk(piloting, pk)).pilot_ends_at = utcnow() - timedelta(days=1)
        db.session.commit()
    ended = piloting.get(f"/operator/api/registrations/{pk}").get_json()["licence"]["standing"]
    assert ended["active"] is False and ended["label"].startswith("pilot ended ")


def licence_pk(client, pk) -> int:
    with client.application.app_context():
        return db.session.get(Registration, pk).licence_pk


def seed_licence(app, kind: str, pilot_ends_in: timedelta | None, hour: int) -> int:
    """A completed registration with a licence of `kind` written straight to the database; its pk."""
    (pk,) = seed(app, platform_id=f"P{hour}", created_at=utcnow() - timedelta(hours=hour))
    with app.app_context():
        db.session.add(
            Licence(
                registration_pk=pk,
                kind=kind,
                status="pilot" if kind == "pilot" else "succeeded",
                key_hint=f"K{hour:03d}",
                pilot_ends_at=utcnow() + pilot_ends_in if pilot_ends_in is not None else None,
                dispute_open=False,
                invoicing_attempt=0,
            )
        )
        db.session.commit()
    return pk


def test_pilots_ending_soon_lists_a_pilot_ending_in_3_days_only(app, ops):
    soon = seed_licence(app, "pilot", timedelta(days=3), 1)
    later = seed_licence(app, "pilot", timedelta(days=20), 2)
    ended = seed_licence(app, "pilot", timedelta(days=-1), 3)
    paid = seed_licence(app, "payment", timedelta(days=3), 4)  # a pilot paid for keeps its end
    assert api_ids(ops, licence="pilot_ending") == [soon]
    assert api_ids(ops, licence="pilot") == [soon, later, ended]
    page = ops.get("/operator/", query_string={"licence": "pilot_ending"}).text
    assert 'value="pilot_ending" selected' in page
    assert [int(pk) for pk in re.findall(r'class="reg-link">(\d+)<', page)] == [soon]
    listed = ops.get("/operator/").text
    for pk, label in ((soon, "pilot until"), (later, "pilot until"), (ended, "pilot ended")):
        assert label in row(listed, pk)[1][10]
    assert "pilot" not in row(listed, paid)[1][10]
    exported = ops.get("/operator/registrations.csv", query_string={"licence": "pilot_ending"})
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert [int(r["id"]) for r in rows] == [soon] and rows[0]["key_hint"] == "K001"
    assert rows[0]["pilot_ends_at"].startswith(f"{utcnow() + timedelta(days=3):%Y-%m-%d}")


def test_an_unknown_licence_filter_is_one_sentence_and_no_error(ops):
    response = ops.get("/operator/api/registrations", query_string={"licence": "pilots_soon"})
    assert response.status_code == 400 and "Unknown licence filter" in response.get_json()["message"]


def test_the_list_reads_every_licence_and_its_platforms_in_a_fixed_number_of_queries(app, ops):
    def statements() -> list[int]:
        counted = []
        with app.app_context():
            engine = db.engine

        def listener(*args):
            counted.append(1)

        found = []
        for path in ("/operator/", "/operator/api/registrations", "/operator/registrations.csv"):
            event.listen(engine, "before_cursor_execute", listener)
            try:
                assert ops.get(path).status_code == 200
            finally:
                event.remove(engine, "before_cursor_execute", listener)
            found.append(len(counted))
        return found

    def school(hour: int) -> None:
        origin = seed_licence(app, "pilot", timedelta(days=3), hour)
        seed(app, platform_id=f"J{hour}", licence_pk=licence_pk(ops, origin), replaced_at=utcnow())

    school(1)
    few = statements()
    for hour in range(2, 8):
        school(hour)
    assert statements() == few
