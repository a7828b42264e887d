"""The admin's path through the frame and the popup, over HTTP, with Stripe and LTIaaS faked."""
import re

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration

from .fakes import CLOSE_HTML


def open_frame(client, ltiaas_api, **lms):
    registration_id = ltiaas_api.add(**lms)
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    return registration_id, token, page


def status(client, token):
    response = client.get(f"/flow/{token}/status")
    assert response.status_code == 200
    return response.get_json()


def test_pre_approval_shows_lms_and_price(client, stripe_api, ltiaas_api):
    _, token, page = open_frame(client, ltiaas_api, family="moodle", url="https://moodle.school.example",
                                version="4.4.1+ (Build: 20240705)")
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


def test_pay_opens_one_checkout_session_and_reuses_it(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    first = client.get(f"/flow/{token}/pay")
    second = client.get(f"/flow/{token}/pay")
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    session = stripe_api.only_session()
    assert first.headers["Location"] == session["url"]
    assert session["client_reference_id"] == registration_id
    assert session["mode"] == "payment" and session["ui_mode"] == "hosted_page"
    assert session["success_url"] == f"http://paygate.test/flow/{token}/paid?session_id={{CHECKOUT_SESSION_ID}}"
    assert session["cancel_url"] == f"http://paygate.test/flow/{token}/cancel"
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        # The expiry fits inside the LMS token's hour, and within Stripe's 30-minute minimum.
        assert session["expires_at"] - session["created"] >= 30 * 60
        assert session["expires_at"] <= reg.created_at.timestamp() + 60 * 60 + 5
    creates = [c for c in stripe_api.calls if c[0] == "create"]
    assert len(creates) == 1 and creates[0][1].startswith("paygate-checkout-")


def test_no_new_checkout_while_a_delayed_payment_is_processing(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, payment_status="unpaid")
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    again = client.get(f"/flow/{token}/pay")
    assert again.status_code == 409 and "still being processed" in again.text
    assert len(stripe_api.sessions) == 1


def test_only_card_payments_by_default(client, stripe_api, ltiaas_api):
    """Delayed methods confirm days later, long after the LMS token has died."""
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    assert stripe_api.only_session()["payment_method_types"] == ["card"]


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


def test_success_return_confirms_with_stripe_and_completes_once(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"], email="it@school.example")
    page = client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert page.status_code == 200
    assert "payment was received" in page.text and "LMS window" in page.text
    assert ltiaas_api.complete_calls == [registration_id]
    frame = status(client, token)
    assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
    with client.application.app_context():
        reg = db.session.scalars(select(Registration)).one()
        assert reg.state == "completed" and reg.platform_id
        assert reg.payer_email == "it@school.example" and reg.amount_paid == 4900
        assert reg.payment_intent_id.startswith("pi_")
        causes = [(e.to_state, e.cause) for e in reg.timeline if e.kind == "state"]
        assert causes == [("pending", "pre-approval"), ("paid", "success return"),
                          ("completing", "success return"), ("completed", "success return")]


def test_success_url_alone_proves_nothing(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()  # open, unpaid
    page = client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert page.status_code == 409
    assert ltiaas_api.complete_calls == []
    assert status(client, token)["state"] == "pending"
    assert client.get(f"/flow/{token}/paid?session_id=../../v1/charges").status_code == 400


def test_completion_body_comes_from_configuration(database_url, stripe_api, ltiaas_api):
    from .conftest import make_app
    app = make_app(database_url, ltiaas_platform_name="Acme Quiz",
                   ltiaas_messages='[{"type": "LtiResourceLinkRequest", "placements": ["course_navigation"]}]')
    client = app.test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    stripe_api.pay(stripe_api.only_session()["id"])
    client.get(f"/flow/{token}/paid?session_id={stripe_api.only_session()['id']}")
    assert ltiaas_api.complete_bodies == [{"platformName": "Acme Quiz", "autoActivate": True, "messages": [
        {"type": "LtiResourceLinkRequest", "placements": ["course_navigation"]}]}]


def test_unset_completion_settings_leave_ltiaas_defaults_but_the_licence_decides_activation(client, stripe_api,
                                                                                             ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    stripe_api.pay(stripe_api.only_session()["id"])
    client.get(f"/flow/{token}/paid?session_id={stripe_api.only_session()['id']}")
    # autoActivate is never left to the portal's default: the paid licence says active.
    assert ltiaas_api.complete_bodies == [{"autoActivate": True}]


def test_cancel_tells_the_frame_and_pay_again_reuses_the_session(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    first = client.get(f"/flow/{token}/pay").headers["Location"]
    page = client.get(f"/flow/{token}/cancel")
    assert "No payment was made" in page.text
    frame = status(client, token)
    assert frame["phase"] == "pay" and "cancelled" in frame["message"]
    assert client.get(f"/flow/{token}/pay").headers["Location"] == first
    assert "cancelled" not in status(client, token)["message"]


def test_unknown_flow_token_is_a_clear_404(client):
    assert client.get("/flow/" + "x" * 40 + "/status").status_code == 404
    assert client.get("/flow/" + "x" * 40 + "/status").get_json()["error"] == "Not Found"
    page = client.get("/flow/nope/pay")
    assert page.status_code == 404 and "Start the registration again" in page.text


def test_lti_register_redirects_with_query_unchanged(client):
    query = "openid_configuration=https%3A%2F%2Fcanvas.example%2Fapi%2Flti%2Fsecurity%2Fopenid-configuration&registration_token=abc.def%2Bghi"
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
