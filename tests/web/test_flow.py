"""The admin's path through the frame and the popup, over HTTP, with Stripe and LTIaaS faked."""

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration
from tests.helpers.flow import open_frame, status


def test_pre_approval_shows_lms_and_price(client, stripe_api, ltiaas_api):
    _, token, page = open_frame(
        client, ltiaas_api, family="moodle", url="https://moodle.school.example", version="4.4.1+ (Build: 20240705)"
    )
    assert "https://moodle.school.example" in page.text
    assert "Moodle 4.4.1+" in page.text  # the LMS as admins know it (issue 9), not LTIaaS's codes
    assert "49.00 USD" in page.text
    assert f'href="/flow/{token}/pay"' in page.text
    # The frame must be embeddable by any LMS host, and must not rely on cookies.
    assert "X-Frame-Options" not in page.headers
    assert "frame-ancestors *" in page.headers["Content-Security-Policy"]
    assert "Set-Cookie" not in page.headers
    assert status(client, token)["phase"] == "pay"


def test_lms_strings_are_escaped(client, stripe_api, ltiaas_api):
    _, _, page = open_frame(client, ltiaas_api, family="<script>alert(1)</script>", version='"><img src=x>')
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert '"><img src=x>' not in page.text


def test_implausible_registration_id_is_refused_before_any_upstream_call(client, stripe_api, ltiaas_api, mocked):
    for bad in ["", "../admin/platforms", "a/b", "..", "x" * 300, "%2e%2e", "id with space"]:
        response = client.get("/pre-approval", query_string={"registrationId": bad})
        assert response.status_code == 400, bad
        assert "Start the registration again from your LMS" in response.text
    assert len(mocked.calls) == 0


def test_unknown_registration_id_says_restart(client, stripe_api, ltiaas_api):
    response = client.get("/pre-approval?registrationId=expired123")
    assert response.status_code == 410
    assert "Start the registration again from your LMS" in response.text
    with client.application.app_context():
        assert db.session.scalars(select(Registration)).first() is None


def test_reload_keeps_one_registration(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    again = client.get(f"/pre-approval?registrationId={registration_id}")
    assert f"/flow/{token}/status" in again.text
    with client.application.app_context():
        assert len(db.session.scalars(select(Registration)).all()) == 1


def test_ltiaas_refusing_our_key_is_not_blamed_on_the_admin(client, stripe_api, ltiaas_api):
    ltiaas_api.key = "rotated"
    page = client.get(f"/pre-approval?registrationId={ltiaas_api.add()}")
    assert page.status_code == 503 and "contact the vendor" in page.text
    assert "ltiaas-secret-api-key" not in page.text


def test_ltiaas_down_offers_a_retry_in_the_frame(client, stripe_api, ltiaas_api):
    registration_id = ltiaas_api.add()
    ltiaas_api.get_failure = 503
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 502 and f'href="/pre-approval?registrationId={registration_id}"' in page.text


def test_long_lms_strings_are_kept_within_bounds(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api, family="f" * 500, version="v" * 500)
    assert status(client, token)["phase"] == "pay"


def test_unknown_flow_token_is_a_clear_404(client):
    assert client.get("/flow/" + "x" * 40 + "/status").status_code == 404
    assert client.get("/flow/" + "x" * 40 + "/status").get_json()["error"] == "Not Found"
    page = client.get("/flow/nope/pay")
    assert page.status_code == 404 and "Start the registration again" in page.text


def test_lti_register_redirects_with_query_unchanged(client):
    query = (
        "openid_configuration=https%3A%2F%2Fcanvas.example%2Fapi%2Flti%2Fsecurity%2Fopenid-configuration"
        "&registration_token=abc.def%2Bghi"
    )
    response = client.get(f"/lti/register?{query}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"https://ltiaas.test/lti/register?{query}"


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_secrets_never_reach_pages(client, stripe_api, ltiaas_api):
    _, token, page = open_frame(client, ltiaas_api)
    bodies = page.text + client.get(f"/flow/{token}/status").text + client.get(f"/flow/{token}/pay").text
    for secret in ("ltiaas-secret-api-key", "sk_test_secret_key_for_tests", "whsec_test_secret"):
        assert secret not in bodies
