"""Hosts, forwarded hosts and SCRIPT_NAME: bad input is answered 400 by a page that cannot fail, and
nothing a request says (Host, X-Forwarded-*, SCRIPT_NAME) reaches a URL sent outside: those come from
PUBLIC_URL alone. Also HSTS with an https PUBLIC_URL, and the SECRET_KEY length in production."""

import pytest

from paygate.application import create_app
from paygate.core.config import ConfigError, load_settings
from paygate.core.db import db
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.flow import open_frame

LONG_LABEL = "a" * 64  # over DNS's 63: IDNA encoding fails on it (it once crashed the error page)
BAD_HOSTS = [
    f"{LONG_LABEL}.example.com",
    "evil.example",
    "paygate.test.evil.example",
    "paygate.test:x",
    "[::1",
    "",
    "a b",
    "p\u00e4ygate.test",
]
PRODUCTION_SECRET = "s" * 32


@pytest.fixture
def proxied(database_url):
    app = make_app(database_url, trusted_proxies=1)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def _assert_refused(response, as_json=False):
    assert response.status_code == 400
    if as_json:
        assert response.get_json() == {
            "error": "Bad Request",
            "message": "This service does not answer to that host name.",
        }
    else:
        assert response.mimetype == "text/html"
        assert "This service does not answer to that host name." in response.text
    assert response.headers["X-Frame-Options"] == "DENY"
    assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_host_not_served_is_answered_400_by_a_page(client, host):
    _assert_refused(client.get("/pre-approval?registrationId=x", headers={"Host": host}))
    _assert_refused(client.get("/operator/sign-in", headers={"Host": host}))
    _assert_refused(client.post("/webhooks/stripe", data=b"{}", headers={"Host": host}), as_json=True)


def test_a_long_label_through_a_trusted_proxy_is_answered_400(proxied):
    forwarded = {
        "X-Forwarded-Host": f"{LONG_LABEL}.example.com",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
    }
    _assert_refused(proxied.get("/pre-approval?registrationId=x", headers=forwarded))
    _assert_refused(proxied.get("/flow/AAAAAAAAAAAAAAAAAAAAAAAA/status", headers=forwarded), as_json=True)
    _assert_refused(proxied.get("/", headers={"X-Forwarded-Host": "evil.example"}))
    # The proxy's last value is the one trusted: a client's own value before it changes nothing.
    assert proxied.get("/healthz", headers={"X-Forwarded-Host": "evil.example, paygate.test"}).status_code == 200
    # A scheme that is neither http nor https is refused too, before anything builds on it.
    refused = proxied.get("/operator/sign-in", headers={"X-Forwarded-Proto": "javascript"})
    assert refused.status_code == 400 and "only http and https" in refused.text


def test_a_forwarded_host_is_ignored_without_a_trusted_proxy(client):
    response = client.get("/operator/sign-in", headers={"X-Forwarded-Host": f"{LONG_LABEL}.example.com"})
    assert response.status_code == 200


def test_the_served_hosts(database_url, stripe_api, ltiaas_api):
    app = make_app(database_url)  # a test run: PUBLIC_URL's host and the loopback names
    client = app.test_client()
    for host in ("paygate.test", "PAYGATE.test:8080", "localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:80"):
        assert client.get("/operator/sign-in", headers={"Host": host}).status_code == 200, host
    with app.app_context():
        db.engine.dispose()
    production = create_app(
        {
            **BASE_CONFIG,
            "app_env": "production",
            "database_url": database_url,
            "public_url": "https://billing.vendor.example",
            "secret_key": PRODUCTION_SECRET,
        }
    )
    client = production.test_client()
    assert client.get("/operator/sign-in", headers={"Host": "billing.vendor.example"}).status_code == 200
    for host in ("localhost", "127.0.0.1:8000", "vendor.example"):
        _assert_refused(client.get("/operator/sign-in", headers={"Host": host}))
    # Load balancers and orchestrators probe by address: the probes answer whatever the host.
    assert client.get("/healthz", headers={"Host": "10.0.3.7:8000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": f"{LONG_LABEL}.example"}).status_code == 200
    with production.app_context():
        db.engine.dispose()


def test_a_script_name_does_not_move_the_urls_sent_to_stripe(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    # What gunicorn makes of `GET /evil/flow/<token>/pay` with a `SCRIPT_NAME: /evil` header: the prefix is
    # the path's again, so no route matches and nothing is opened at Stripe.
    moved = client.get(f"/flow/{token}/pay", base_url="http://paygate.test/evil")
    assert moved.status_code == 404 and stripe_api.sessions == {}
    # Neither Host nor a SCRIPT_NAME shows in the URLs sent to Stripe: PUBLIC_URL alone builds them.
    paid = client.get(f"/flow/{token}/pay", headers={"Host": "localhost:5000"})
    assert paid.status_code == 303
    session = next(iter(stripe_api.sessions.values()))
    assert session["success_url"] == f"http://paygate.test/flow/{token}/paid?session_id={{CHECKOUT_SESSION_ID}}"
    assert session["cancel_url"] == f"http://paygate.test/flow/{token}/cancel"


def test_absolute_urls_ignore_the_request_even_inside_flask(app):
    from paygate.web.flow.pages import absolute as _absolute

    with app.test_request_context("/flow/t/pay", base_url="https://evil.example:8443/evil"):
        assert _absolute("flow.paid", token="t") == "http://paygate.test/flow/t/paid"


def test_the_error_page_cannot_fail_on_a_request_flask_cannot_bind(app):
    """Were a host to reach Flask unchecked (the guard removed), the 400 still is a page, not a 500."""
    app.wsgi_app = app.wsgi_app.wsgi_app  # without paygate/web/guard.py's HostGuard
    response = app.test_client().get("/pre-approval?registrationId=x", headers={"Host": f"{LONG_LABEL}.example"})
    assert response.status_code == 400 and "<h1>Bad Request</h1>" in response.text


def test_hsts_with_an_https_public_url_only(database_url):
    https = make_app(database_url, public_url="https://billing.vendor.example")
    for path in ("/healthz", "/operator/sign-in", "/pre-approval?registrationId=x"):
        response = https.test_client().get(path, base_url="https://billing.vendor.example")
        assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains", path
    refused = https.test_client().get("/", headers={"Host": "evil.example"})
    assert refused.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    with https.app_context():
        db.engine.dispose()
    plain = make_app(database_url)  # http://paygate.test
    assert "Strict-Transport-Security" not in plain.test_client().get("/healthz").headers
    with plain.app_context():
        db.engine.dispose()


def test_a_short_secret_key_stops_production_start_up_with_one_line():
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE_CONFIG, "app_env": "production", "secret_key": "short-but-not-empty"})
    assert str(info.value).startswith("SECRET_KEY is malformed: must be at least 32 characters")
    assert "short-but-not-empty" not in str(info.value) and "\n" not in str(info.value)
    assert load_settings({**BASE_CONFIG, "app_env": "production", "secret_key": PRODUCTION_SECRET})
    # Local runs make their own; the test-suite's short key is a test run's.
    assert len(load_settings({"app_env": "local"}).secret_key) >= 32
    assert load_settings(BASE_CONFIG).secret_key == "test-secret-key"
