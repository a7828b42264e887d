"""Registering without paying, in the frame: "I already have a licence key" (`/flow/<token>/key`) and the free
pilot (`/flow/<token>/pilot`)."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, Registration
from paygate.licensing import keys, platforms
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.licences import buy


def _reg(client, token) -> Registration:
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).one()
        db.session.expunge(reg)
        return reg


def _bought_key(client, stripe_api, ltiaas_api) -> tuple[Registration, str]:
    pk, _ = buy(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        reg = db.session.get(Registration, pk)
        key = keys.shown(platforms.key_of(reg))
        db.session.expunge(reg)
        return reg, key


def test_the_pre_approval_page_offers_a_key_form(client, stripe_api, ltiaas_api):
    _, token, page = open_frame(client, ltiaas_api)
    assert "<summary>I already have a licence key</summary>" in page.text
    assert f'action="/flow/{token}/key"' in page.text and 'name="key"' in page.text
    assert 'id="start-pilot"' not in page.text  # PILOT_DAYS unset: no pilot


def test_a_key_registers_a_second_lms_without_paying_and_confirms_with_the_typed_key(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    sessions = len(stripe_api.sessions)
    _, token, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    page = client.post(f"/flow/{token}/key", data={"key": " " + key.lower().replace("-", " ") + " "})
    assert page.status_code == 200
    assert f'<code id="licence-key">{key}</code>' in page.text  # the key typed, as people read it
    assert f'href="http://paygate.test/licence/{key}"' in page.text
    assert '<section id="confirmation"' in page.text and 'id="finish"' in page.text
    assert "Joined your licence" in page.text and "No payment was made" in page.text
    assert f'data-status-url="/flow/{token}/status"' in page.text
    done = status(client, token)  # completed after the answer
    assert done["phase"] == "done" and "registered on your licence" in done["message"]
    assert key not in done["confirmation"]  # the status never knows a joined licence's key
    second = _reg(client, token)
    assert second.state == "completed" and second.licence_pk == first.licence_pk
    assert len(stripe_api.sessions) == sessions  # nothing made at Stripe
    active = {p["id"]: p["active"] for p in ltiaas_api.platforms.values()}
    assert active == {first.platform_id: True, second.platform_id: True}


@pytest.mark.parametrize(
    "typed",
    ["PG-0000-0000-0000-0000", "x" * 10_000, "PG-7K3Q\x07M2XD\x00", "\u0661\u0662\u0663\u0664", "", None],
    ids=["unknown", "10kB", "control", "arabic-indic", "empty", "missing"],
)
def test_a_wrong_or_malformed_key_gets_one_sentence_and_changes_nothing(client, stripe_api, ltiaas_api, typed):
    _bought_key(client, stripe_api, ltiaas_api)
    _, token, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    page = client.post(f"/flow/{token}/key", data={} if typed is None else {"key": typed})
    assert page.status_code == 404
    assert "No licence has this key." in page.text and 'id="pay"' in page.text  # paying still offered
    assert 'aria-invalid="true"' in page.text
    assert _reg(client, token).state == "pending" and status(client, token)["phase"] == "pay"


def test_a_key_of_a_lapsed_licence_says_so_links_its_page_and_leaves_paying(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        db.session.get(Licence, first.licence_pk).status = "canceled"  # refunded, revoked or lapsed
        db.session.commit()
    _, token, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    page = client.post(f"/flow/{token}/key", data={"key": key})
    assert page.status_code == 409
    assert "is not active" in page.text and f'href="http://paygate.test/licence/{key}"' in page.text
    assert 'id="pay"' in page.text
    assert _reg(client, token).state == "pending"


def test_wrong_keys_are_limited_per_address_and_a_right_one_does_not_count(client, stripe_api, ltiaas_api):
    _, key = _bought_key(client, stripe_api, ltiaas_api)
    _, token, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    for _ in range(9):
        assert client.post(f"/flow/{token}/key", data={"key": "PG-0000-0000-0000-0000"}).status_code == 404
    _, other, _ = open_frame(client, ltiaas_api, url="https://other.school.example")
    assert client.post(f"/flow/{other}/key", data={"key": key}).status_code == 200  # given back
    assert client.post(f"/flow/{token}/key", data={"key": "PG-0000-0000-0000-0000"}).status_code == 404  # the 10th
    refused = client.post(f"/flow/{token}/key", data={"key": key})  # spent: even a right key waits
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "Too many wrong licence keys" in refused.text
    assert _reg(client, token).state == "pending"


def test_a_key_for_a_registration_already_paid_changes_nothing(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        token = db.session.get(Registration, first.id).flow_token
    page = client.post(f"/flow/{token}/key", data={"key": key})
    assert page.status_code == 409 and "already paid for or finished" in page.text


@pytest.fixture
def pilot_client(database_url):
    app = make_app(database_url, pilot_days=30)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def test_a_free_pilot_registers_at_once_and_confirms_its_end_and_key(pilot_client, stripe_api, ltiaas_api):
    client = pilot_client
    _, token, page = open_frame(client, ltiaas_api, url="https://lms.school.example")
    assert "Start a free 30-day pilot" in page.text and f'action="/flow/{token}/pilot"' in page.text
    answer = client.post(f"/flow/{token}/pilot")
    assert answer.status_code == 200 and "free pilot" in answer.text
    done = status(client, token)
    assert done["phase"] == "done" and "free pilot has started" in done["message"]
    reg = _reg(client, token)
    with client.application.app_context():
        licence = db.session.get(Licence, reg.licence_pk)
        key = keys.shown(keys.derived(token, client.application.config["SETTINGS"].secret_key))
        assert licence.kind == "pilot" and keys.matches(keys.normal(key), licence.key_hash)
    assert "A free pilot of" in done["confirmation"] and "until" in done["confirmation"]
    assert f'<code id="licence-key">{key}</code>' in done["confirmation"]
    assert "No payment was made" in done["confirmation"]
    assert stripe_api.sessions == {} and reg.state == "completed"


def test_one_pilot_per_lms_url_but_each_on_a_shared_host(pilot_client, stripe_api, ltiaas_api):
    client = pilot_client
    _, first, _ = open_frame(client, ltiaas_api, url="https://lms.school.example")
    assert client.post(f"/flow/{first}/pilot").status_code == 200
    _, again, page = open_frame(client, ltiaas_api, url="https://LMS.school.example")
    assert 'id="start-pilot"' not in page.text  # not offered a second time
    refused = client.post(f"/flow/{again}/pilot")
    assert refused.status_code == 409 and "no longer available for this LMS" in refused.text
    assert 'id="pay"' in refused.text and _reg(client, again).state == "pending"
    for _ in range(2):  # cloud Canvas: one LMS URL, many schools
        _, shared, page = open_frame(client, ltiaas_api, url="https://canvas.instructure.com")
        assert 'id="start-pilot"' in page.text
        assert client.post(f"/flow/{shared}/pilot").status_code == 200
        assert _reg(client, shared).state == "completed"


def test_a_pilot_pressed_twice_shows_the_same_pilot(pilot_client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(pilot_client, ltiaas_api, url="https://lms.school.example")
    assert pilot_client.post(f"/flow/{token}/pilot").status_code == 200
    again = pilot_client.post(f"/flow/{token}/pilot")
    assert again.status_code == 200 and '<section id="confirmation"' in again.text


def test_no_pilot_when_none_is_offered(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    assert client.post(f"/flow/{token}/pilot").status_code == 404
    assert _reg(client, token).state == "pending"


def test_an_unknown_flow_token_is_a_404(client, stripe_api, ltiaas_api):
    for what in ("key", "pilot"):
        assert client.post(f"/flow/{'x' * 30}/{what}", data={"key": "PG-0000-0000-0000-0000"}).status_code == 404
