"""LTIaaS answers checked against what LTIaaS documents before anything is stored: an answer that does
not fit gets the admin a "registration service answered unexpectedly" page with a retry link, stores
nothing, is logged without secrets, and never becomes a 500 (on PostgreSQL a NUL or a number in a text
column used to fail the insert on every retry)."""
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

GOOD = {"url": "https://moodle.school.example", "familyCode": "moodle", "version": "4.4.1+ (Build: 20240705)",
        "supportedScopes": ["openid"], "supportedMessages": [{"type": "LtiResourceLinkRequest"}]}
COMPLETE = re.compile(re.escape(BASE_CONFIG["ltiaas_url"]) + r"/api/registrations/[^/]+/complete$")


def registrations(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Registration))


def answer_with(ltiaas_api, body) -> str:
    """A registration id for which LTIaaS answers `body` (any JSON) to the lookup."""
    registration_id = secrets.token_urlsafe(12)
    ltiaas_api.registrations[registration_id] = body
    return registration_id


@pytest.mark.parametrize("field, value", [
    ("url", "https://moodle.school\x00.example"), ("url", 12345), ("url", None), ("url", "javascript:alert(1)"),
    ("familyCode", 7), ("familyCode", "moo\x00dle"), ("version", 4.4), ("version", "4.4\x00"),
    ("supportedScopes", "openid"), ("supportedScopes", [1, 2]), ("supportedScopes", ["open\x00id"]),
    ("supportedMessages", [{"type": 5}]), ("supportedMessages", "LtiResourceLinkRequest"),
])
def test_an_answer_that_does_not_fit_gets_a_retry_page_and_stores_nothing(client, stripe_api, ltiaas_api, caplog,
                                                                         field, value):
    registration_id = answer_with(ltiaas_api, {**GOOD, field: value})
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 502, page.text
    assert "answered in a way we did not expect" in page.text and "nothing was saved" in page.text
    assert registrations(client.application) == 0
    # Logged with the field's name, never its value, the API key or the whole registration id.
    line = next(r.getMessage() for r in caplog.records if "answered unexpectedly" in r.getMessage())
    assert field in line and "moo\x00dle" not in line and "12345" not in line
    assert BASE_CONFIG["ltiaas_api_key"] not in caplog.text and registration_id not in caplog.text

    # The retry link works once LTIaaS answers properly.
    retry = re.search(r'id="retry" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    ltiaas_api.registrations[registration_id] = GOOD
    again = client.get(retry)
    assert again.status_code == 200 and "moodle.school.example" in again.text
    assert registrations(client.application) == 1


def test_an_answer_that_is_no_json_object_gets_the_retry_page(client, stripe_api, ltiaas_api):
    for body in (["https://moodle.school.example"], "https://moodle.school.example", 42):
        page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}")
        assert page.status_code == 502 and "answered in a way we did not expect" in page.text
    assert registrations(client.application) == 0


def test_a_valid_answer_with_extra_fields_and_long_names_is_accepted(client, stripe_api, ltiaas_api):
    """LTIaaS may add fields; a long version string is shortened for display, not refused."""
    body = {**GOOD, "version": "4." + "9" * 300, "newField": {"x": [1]},
            "supportedMessages": [{"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"], "label": "x"}]}
    page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, body)}")
    assert page.status_code == 200, page.text
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.lms_version == body["version"][:200]
        assert reg.lms_details["supportedMessages"] == [{"type": "LtiDeepLinkingRequest",
                                                         "placements": ["ContentArea"]}]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(GOOD)), value=JSON_VALUES)
def test_no_registration_answer_gets_a_500(client, stripe_api, ltiaas_api, field, value):
    """Whatever LTIaaS puts in a field: the registration page, or the retry page having stored nothing."""
    before = registrations(client.application)
    admin = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"  # not throttled
    page = client.get(f"/pre-approval?registrationId={answer_with(ltiaas_api, {**GOOD, field: value})}",
                      environ_base={"REMOTE_ADDR": admin})
    assert page.status_code in (200, 502), page.text
    assert registrations(client.application) == before + (page.status_code == 200)


def _complete_answers(mocked, ltiaas_api, body: str, status: int = 200):
    """LTIaaS answers Complete Registration with `body` (after registering the platform, as it would)."""
    mocked.remove(responses.POST, COMPLETE)

    def answer(request):
        ltiaas_api.registrations.pop(urlparse(request.url).path.split("/")[-2], None)
        return status, {}, body

    mocked.add_callback(responses.POST, COMPLETE, answer)


@pytest.mark.parametrize("body", [
    json.dumps({"platformId": "P1", "html": "<script>\x00</script>"}), json.dumps({"platformId": "P1"}),
    json.dumps({"platformId": "P1", "html": 5}), json.dumps({"platformId": "../x", "html": "<script></script>"}),
    "<html>Bad gateway</html>", json.dumps([1])])
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
    envelope = {"status": 400, "error": "Bad\x00Request",
                "details": {"message": "LMS\x00 refused", "n": [1, {"k": "\x07"}]}}
    _complete_answers(mocked, ltiaas_api, json.dumps(envelope), status=400)
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    found = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert found["state"] == "needs_attention" and found["attention"] == "completion_refused"
    error = found["attempts"]["last_error"]
    assert error["message"] == "LTIaaS answered 400" and error["details"] == {"message": "LMS refused",
                                                                              "n": [1, {"k": ""}]}
    assert ops.get(f"/operator/registrations/{pk}").status_code == 200


def test_a_long_completion_html_and_a_numeric_platform_id_are_taken(ops, stripe_api, ltiaas_api, mocked):
    """What LTIaaS documents, a little stretched: a script of a few kilobytes, an id as a number."""
    html = CLOSE_HTML.replace("<script>", "<script>/*" + "x" * 5000 + "*/")
    _complete_answers(mocked, ltiaas_api, json.dumps({"platformId": 12345, "html": html}))
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    found = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert found["state"] == "completed" and found["platform"]["id"] == "12345"
