"""Strings from outside (what a payer typed into Checkout, what LTIaaS says of the LMS) are normalised where
they enter: control and invisible characters (NUL, U+202E...) dropped, white space folded, lengths bounded,
numbers taken as text. A payer's NUL no longer fails the payment's record on PostgreSQL (the paid
registration used to stay pending), operators read clean text, and the admin is served although LTIaaS
describes the LMS oddly. Only what the flow cannot work without refuses, with a page naming the LMS problem."""

import html
import re
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.operators import add_operator, give_token

GOOD = {
    "url": "https://moodle.school.example",
    "familyCode": "moodle",
    "version": "4.4.1+ (Build: 20240705)",
    "supportedScopes": ["openid"],
    "supportedMessages": [{"type": "LtiResourceLinkRequest"}],
}
HOSTILE_NAME = "Evil\x00 \u202eemaN\n\r\tSchool\u200b Board"
HOSTILE_EMAIL = "adm\x00in@school.example\n\u202e"
INVISIBLE = ("\x00", "\u202e", "\u200b", "\r", "\n", "\t", "\x07")


# Helpers (copied small, not imported from other test files)


def answer_with(ltiaas_api, body) -> str:
    """A registration id for which LTIaaS answers `body` (any JSON) to the lookup."""
    registration_id = secrets.token_urlsafe(12)
    ltiaas_api.registrations[registration_id] = body
    return registration_id


def registrations(app) -> list[Registration]:
    with app.app_context():
        return list(db.session.scalars(select(Registration)))


def count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Registration))


def text_of(page_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


def api_token(app) -> str:
    add_operator(app, email="ops@vendor.example", password="a long password here")
    return give_token(app, email="ops@vendor.example")


def sign_in(client) -> None:
    page = client.get("/operator/sign-in")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/operator/sign-in",
        data={"email": "ops@vendor.example", "password": "a long password here", "csrf_token": csrf},
    )
    assert answer.status_code == 303


def frame_token(page_text: str) -> str:
    return re.search(r'data-status-url="/flow/([^/]+)/status"', page_text).group(1)


def visible(text: str) -> bool:
    return not any(c in text for c in INVISIBLE)


# The one function


@pytest.mark.parametrize(
    "value, max_len, expected",
    [
        (None, 10, None),
        ("", 10, None),
        ("  \n\t ", 10, None),
        ("\x00\u202e", 10, None),
        ("a\x00b", 10, "ab"),
        ("Evil \u202eemaN", 20, "Evil emaN"),
        ("a\r\n\tb   c", 20, "a b c"),
        ("a\u2028b\u2029c", 20, "a b c"),
        ("x" * 50, 10, "x" * 10),
        ("  padded  ", 20, "padded"),
        (4.4, 10, "4.4"),
        (7, 10, "7"),
        (True, 10, "true"),
        ({"a": 1}, 10, None),
        ([1, 2], 10, None),
        ("zero\u200bwidth\ufeff", 20, "zerowidth"),
        ("e\u0301", 5, "\u00e9"),
        ("\ud800x", 5, "x"),
    ],
)
def test_clean(value, max_len, expected):
    from paygate.core.text import clean

    assert clean(value, max_len) == expected


# Payer data from Checkout


def test_a_payer_name_and_email_with_nul_bidi_and_line_breaks_still_complete_the_paid_registration(
    client, stripe_api, ltiaas_api
):
    """Success return and webhook alike: the payment is recorded and completed, on PostgreSQL too."""
    registration_id = ltiaas_api.add()
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    token = frame_token(page.text)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, email=HOSTILE_EMAIL)
    stripe_api.sessions[session_id]["customer_details"]["name"] = HOSTILE_NAME

    body, headers = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
    delivered = client.post("/webhooks/stripe", data=body, headers=headers)
    assert delivered.status_code == 200, delivered.text
    returned = client.get(f"/flow/{token}/paid?session_id={session_id}")
    assert returned.status_code == 200 and "payment was received" in returned.text
    body, headers = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
    assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 200  # a redelivery

    assert ltiaas_api.complete_calls == [registration_id]
    frame = client.get(f"/flow/{token}/status").get_json()
    assert frame["phase"] == "done"
    (reg,) = registrations(client.application)
    assert reg.state == "completed"
    assert reg.payer_email == "admin@school.example"
    assert reg.payer_name == "Evil emaN School Board"

    # Operators read clean text: the API, the detail page, the list and the export.
    token = api_token(client.application)
    found = client.get(f"/operator/api/registrations/{reg.id}", headers={"Authorization": f"Bearer {token}"})
    assert found.status_code == 200
    payment = found.get_json()["payment"]
    assert (payment["payer_email"], payment["payer_name"]) == ("admin@school.example", "Evil emaN School Board")
    sign_in(client)
    for path in (f"/operator/registrations/{reg.id}", "/operator/", "/operator/registrations.csv"):
        shown = client.get(path)
        assert shown.status_code == 200, path
        for invisible in ("\x00", "\u202e", "\u200b", "emaN\n", "example\n"):
            assert invisible not in shown.text, (path, invisible)
    assert "Evil emaN School Board" in text_of(client.get(f"/operator/registrations/{reg.id}").text)


def test_a_payer_email_that_is_only_invisible_characters_is_no_email(client, stripe_api, ltiaas_api):
    registration_id = ltiaas_api.add()
    token = frame_token(client.get(f"/pre-approval?registrationId={registration_id}").text)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, email="\x00\u202e \n")
    stripe_api.sessions[session_id]["customer_details"]["name"] = "\x00"
    assert client.get(f"/flow/{token}/paid?session_id={session_id}").status_code == 200
    (reg,) = registrations(client.application)
    assert reg.state == "completed" and reg.payer_email is None and reg.payer_name is None


# What LTIaaS says of the LMS


@pytest.mark.parametrize(
    "field, value, stored",
    [
        ("version", 4.4, "4.4"),
        ("version", 12, "12"),
        ("version", "4.4\x00 \u202e(Build)\n", "4.4 (Build)"),
        ("familyCode", 7, "7"),
        ("familyCode", "moo\x00dle", "moodle"),
        ("familyCode", "c" * 100_000, "c" * 100),
        ("familyCode", None, None),
        ("familyCode", ["moodle"], None),
        ("version", {"major": 4}, None),
        ("url", "https://moodle.school\x00.example", "https://moodle.school.example"),
        ("url", " https://moodle.school.example/\u202e ", "https://moodle.school.example/"),
        ("supportedScopes", ["open\x00id", 5, None], None),
        ("supportedScopes", "openid", None),
        (
            "supportedMessages",
            [{"type": 5}, "x", {"type": "Lti\x00DeepLinkingRequest", "placements": [1, "a\x00b"]}],
            None,
        ),
    ],
)
def test_hostile_lms_display_fields_still_serve_the_admin(client, stripe_api, ltiaas_api, field, value, stored):
    registration_id = answer_with(ltiaas_api, {**GOOD, field: value})
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    assert visible(text_of(page.text)) and "\x00" not in page.text and "\u202e" not in page.text
    assert "49.00 USD" in page.text and 'href="/flow/' in page.text
    (reg,) = registrations(client.application)
    column = {"version": "lms_version", "familyCode": "lms_family", "url": "lms_url"}.get(field)
    if column:
        assert getattr(reg, column) == stored
    for text in (reg.lms_url, reg.lms_family or "", reg.lms_version or "", repr(reg.lms_details)):
        assert "\x00" not in text and "\u202e" not in text
    token = frame_token(page.text)
    assert client.get(f"/flow/{token}/status").get_json()["phase"] == "pay"


def test_lms_details_keep_what_makes_sense_of_odd_lists(client, stripe_api, ltiaas_api):
    body = {
        **GOOD,
        "supportedScopes": ["open\x00id", 5, None, "  "],
        "supportedMessages": [{"type": 5}, "x", {"type": "Lti\x00DeepLinkingRequest", "placements": [1, "a\x00b"]}],
    }
    assert client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}").status_code == 200
    (reg,) = registrations(client.application)
    assert reg.lms_details == {
        "supportedScopes": ["openid", "5"],
        "supportedMessages": [{"type": "5"}, {"type": "LtiDeepLinkingRequest", "placements": ["1", "ab"]}],
    }


@pytest.mark.parametrize(
    "url",
    [
        None,
        12345,
        "",
        "   ",
        "javascript:alert(1)",
        "moodle.school.example",
        "https://",
        "ftp://moodle.school.example",
        "https://x" + "y" * 600 + ".example",
        ["https://moodle.school.example"],
        "https://moodle .school.example",
    ],
)
def test_an_unusable_lms_url_gets_a_page_naming_the_lms_problem(client, stripe_api, ltiaas_api, url):
    body = {k: v for k, v in GOOD.items() if k != "url" or url is not None}
    if url is not None:
        body["url"] = url
    page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}")
    assert 400 <= page.status_code < 500, page.status_code
    shown = text_of(page.text)
    assert "LMS did not give a usable web address" in shown, shown
    assert "Start the registration again from your LMS." in shown
    assert count(client.application) == 0


def test_a_missing_registration_id_gets_a_page_naming_the_problem(client, stripe_api, ltiaas_api, mocked):
    for path in ("/pre-approval", "/pre-approval?registrationId=", "/pre-approval?registrationId=%20"):
        page = client.get(path)
        assert page.status_code == 400, path
        shown = text_of(page.text)
        assert "has no registration id" in shown and "Start the registration again from your LMS." in shown, shown
    assert len(mocked.calls) == 0 and count(client.application) == 0


# Whatever shape LTIaaS answers in

NASTY_TEXT = st.sampled_from(
    [
        "\x00",
        "\u202e",
        "\n",
        "\ud800",
        "\u2028",
        " ",
        "https://",
        "javascript:",
        "\ufeff",
        "x" * 3000,
        "<script>",
        "%00",
    ]
)
TEXTS = st.lists(st.text() | NASTY_TEXT, max_size=4).map("".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXTS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
URLS = JSON_VALUES | st.builds(lambda a, b: f"https://{a}moodle.example/{b}", TEXTS, TEXTS)
FIELDS = {
    "url": URLS,
    "familyCode": JSON_VALUES,
    "version": JSON_VALUES,
    "supportedScopes": JSON_VALUES,
    "supportedMessages": JSON_VALUES
    | st.lists(st.dictionaries(st.sampled_from(["type", "placements", "x"]), JSON_VALUES, max_size=3), max_size=3),
}
ANSWERS = st.fixed_dictionaries({}, optional=FIELDS).flatmap(
    lambda body: st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2).map(lambda extra: {**extra, **body})
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=ANSWERS)
def test_no_shape_of_registration_answer_gets_a_5xx(client, stripe_api, ltiaas_api, body):
    """Any JSON object LTIaaS may answer: the registration page, or a 4xx naming the LMS problem having
    stored nothing; never a 5xx, never an invisible character on the page."""
    before = count(client.application)
    admin = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"  # not throttled
    page = client.get(
        f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}", environ_base={"REMOTE_ADDR": admin}
    )
    assert page.status_code < 500, (page.status_code, page.text)
    assert page.status_code in (200, 422), page.status_code  # {} too: an answer without a usable LMS URL
    assert count(client.application) == before + (page.status_code == 200)
    assert "\x00" not in page.text and "\u202e" not in page.text
