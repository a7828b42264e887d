"""LTIaaS answers checked before anything is stored: fields that only describe the LMS to a person are
cleaned (numbers to text, control and format characters removed, lengths bounded) and the admin is served;
an LMS URL that cannot be one gets a page naming the LMS problem; an answer that is no JSON object gets the
"registration service answered unexpectedly" page with a retry link. Nothing is stored from a refused answer
and nothing becomes a 500 (on PostgreSQL a NUL or a number in a text column used to fail the insert)."""

import json
import re
import secrets
from urllib.parse import urlparse

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.fakes import CLOSE_HTML
from tests.helpers.apps import BASE_CONFIG
from tests.helpers.operators import paid_registration

GOOD = {
    "url": "https://moodle.school.example",
    "familyCode": "moodle",
    "version": "4.4.1+ (Build: 20240705)",
    "supportedScopes": ["openid"],
    "supportedMessages": [{"type": "LtiResourceLinkRequest"}],
}
COMPLETE = re.compile(re.escape(BASE_CONFIG["ltiaas_url"]) + r"/api/registrations/[^/]+/complete$")


def registrations(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Registration))


def answer_with(ltiaas_api, body) -> str:
    """A registration id for which LTIaaS answers `body` (any JSON) to the lookup."""
    registration_id = secrets.token_urlsafe(12)
    ltiaas_api.registrations[registration_id] = body
    return registration_id


@pytest.mark.parametrize(
    "field, value",
    [
        ("url", "https://moodle.school\x00.example"),
        ("familyCode", 7),
        ("familyCode", "moo\x00dle"),
        ("version", 4.4),
        ("version", "4.4\x00"),
        ("version", "4.4\u202e1"),
        ("familyCode", "m" * 100_000),
        ("supportedScopes", "openid"),
        ("supportedScopes", [1, 2]),
        ("supportedScopes", ["open\x00id"]),
        ("supportedMessages", [{"type": 5}]),
        ("supportedMessages", "LtiResourceLinkRequest"),
    ],
)
def test_a_display_field_that_does_not_fit_is_cleaned_and_the_admin_is_served(
    client, stripe_api, ltiaas_api, field, value
):
    """Fields that only describe the LMS to a person never stop the admin: numbers become text, control and
    format characters go, lengths are bounded; what is stored and shown is clean text."""
    registration_id = answer_with(ltiaas_api, {**GOOD, field: value})
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    assert "\x00" not in page.text and "\u202e" not in page.text
    assert registrations(client.application) == 1
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        stored = [reg.lms_url, reg.lms_family, reg.lms_version, json.dumps(reg.lms_details)]
    assert not any("\x00" in text or "\u202e" in text for text in stored if text)
    assert reg.lms_url == "https://moodle.school.example"
    assert len(reg.lms_family or "") <= 200
    if (field, value) == ("version", 4.4):
        assert reg.lms_version == "4.4"
    if (field, value) == ("familyCode", 7):
        assert reg.lms_family == "7"


@pytest.mark.parametrize(
    "url",
    [
        12345,
        None,
        "javascript:alert(1)",
        "",
        "https://",
        "moodle.school.example",
        "https://moodle school.example",
        "https://x.example/" + "a" * 600,
    ],
)
def test_an_lms_url_that_cannot_be_one_gets_a_page_naming_the_lms_problem_and_stores_nothing(
    client, stripe_api, ltiaas_api, url
):
    """Only what the flow cannot work without refuses: a usable LMS URL (the licence and the operators
    tell schools apart by it)."""
    registration_id = answer_with(ltiaas_api, {**GOOD, "url": url})
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 422, page.text
    assert "LMS not recognised" in page.text and "usable web address" in page.text
    assert registrations(client.application) == 0
    assert [call for call in stripe_api.calls if call[0] != "price"] == []  # nothing made at Stripe


def test_an_answer_that_is_no_json_object_gets_the_retry_page(client, stripe_api, ltiaas_api):
    for body in (["https://moodle.school.example"], "https://moodle.school.example", 42):
        page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}")
        assert page.status_code == 502 and "answered in a way we did not expect" in page.text
    assert registrations(client.application) == 0


def test_a_valid_answer_with_extra_fields_and_long_names_is_accepted(client, stripe_api, ltiaas_api):
    """LTIaaS may add fields; a long version string is shortened for display, not refused."""
    body = {
        **GOOD,
        "version": "4." + "9" * 300,
        "newField": {"x": [1]},
        "supportedMessages": [{"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"], "label": "x"}],
    }
    page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}")
    assert page.status_code == 200, page.text
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.lms_version == body["version"][:200]
        assert reg.lms_details["supportedMessages"] == [
            {"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"]}
        ]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(sorted(GOOD)), value=JSON_VALUES)
def test_no_registration_answer_gets_a_500(client, stripe_api, ltiaas_api, field, value):
    """Whatever LTIaaS puts in a field: the registration page, or the retry page having stored nothing."""
    before = registrations(client.application)
    admin = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"  # not throttled
    page = client.get(
        f"/pre-approval?registrationId={answer_with(ltiaas_api, {**GOOD, field: value})}",
        environ_base={"REMOTE_ADDR": admin},
    )
    assert page.status_code in (200, 422, 502), page.text
    assert registrations(client.application) == before + (page.status_code == 200)


def _complete_answers(mocked, ltiaas_api, body: str, status: int = 200):
    """LTIaaS answers Complete Registration with `body` (after registering the platform, as it would)."""
    mocked.remove(responses.POST, COMPLETE)

    def answer(request):
        ltiaas_api.registrations.pop(urlparse(request.url).path.split("/")[-2], None)
        return status, {}, body

    mocked.add_callback(responses.POST, COMPLETE, answer)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"platformId": "P1", "html": "<script>\x00</script>"}),
        json.dumps({"platformId": "P1"}),
        json.dumps({"platformId": "P1", "html": 5}),
        json.dumps({"platformId": "../x", "html": "<script></script>"}),
        "<html>Bad gateway</html>",
        json.dumps([1]),
    ],
)
def test_a_completion_answer_that_does_not_fit_asks_an_operator(ops, stripe_api, ltiaas_api, mocked, body):
    """LTIaaS may have registered the platform: never called a success, never retried blindly."""
    _complete_answers(mocked, ltiaas_api, body)
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    found = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert found["state"] == "needs_attention" and found["attention"] == "completion_uncertain"
    assert "answered unexpectedly" in found["attempts"]["last_error"]["message"]


def test_an_error_envelope_with_control_characters_is_recorded_cleaned(ops, stripe_api, ltiaas_api, mocked):
    """LTIaaS's error text goes into the timeline: a NUL in it used to fail that insert, and the attempt
    stayed "completing" with nobody told."""
    envelope = {
        "status": 400,
        "error": "Bad\x00Request",
        "details": {"message": "LMS\x00 refused", "n": [1, {"k": "\x07"}]},
    }
    _complete_answers(mocked, ltiaas_api, json.dumps(envelope), status=400)
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    found = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert found["state"] == "needs_attention" and found["attention"] == "completion_refused"
    error = found["attempts"]["last_error"]
    assert error["message"] == "LTIaaS answered 400" and error["details"] == {
        "message": "LMS refused",
        "n": [1, {"k": ""}],
    }
    assert ops.get(f"/operator/registrations/{pk}").status_code == 200


def test_a_long_completion_html_and_a_numeric_platform_id_are_taken(ops, stripe_api, ltiaas_api, mocked):
    """What LTIaaS documents, a little stretched: a script of a few kilobytes, an id as a number."""
    html = CLOSE_HTML.replace("<script>", "<script>/*" + "x" * 5000 + "*/")
    _complete_answers(mocked, ltiaas_api, json.dumps({"platformId": 12345, "html": html}))
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    found = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert found["state"] == "completed" and found["platform"]["id"] == "12345"
