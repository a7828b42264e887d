"""The local stand-ins: LTIaaS, Stripe (driven by the real `stripe` library) and the LMS page."""
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import stripe
from flask import Flask

from app.config import Settings
from app.standins import create_standins_blueprint, reset, send_event, stripe_api

BASE = "http://svc.test"
STRIPE_BASE = BASE + "/_local/stripe"
LTIAAS = BASE + "/_local/ltiaas"
AUTH = {"Authorization": "Bearer k"}


def make_settings(**overrides) -> Settings:
    return Settings(**{"app_env": "test", "public_url": BASE, "ltiaas_api_key": "k", "stripe_secret_key": "sk_test_x",
                       "stripe_webhook_secret": "whsec_x", "stripe_price_id": "price_x",
                       "stripe_api_base": STRIPE_BASE, "ltiaas_url": LTIAAS, **overrides})


@pytest.fixture
def app():
    reset()
    app = Flask(__name__)
    app.register_blueprint(create_standins_blueprint(make_settings()))
    yield app
    reset()


@pytest.fixture
def web(app):
    return app.test_client()


class Network:
    """Outgoing HTTP: calls to the service's /_local go to the test app; webhooks are captured."""

    def __init__(self, app, rsps):
        self.client = app.test_client()
        self.hooks = []
        self.arrived = threading.Condition()
        rsps.add_callback("POST", BASE + "/webhooks/stripe", self._webhook)
        for method in ("GET", "POST"):
            rsps.add_callback(method, re.compile(re.escape(BASE) + r"/_local/.*"), self._forward)

    def _forward(self, req):
        headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
        r = self.client.open(req.url, method=req.method, headers=headers, data=req.body)
        return r.status_code, dict(r.headers), r.get_data()

    def _webhook(self, req):
        with self.arrived:
            self.hooks.append(req)
            self.arrived.notify_all()
        return 200, {}, "{}"

    def events(self, count: int, timeout: float = 5) -> list[stripe.Event]:
        """The first `count` webhooks, each verified with the endpoint secret."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.hooks) >= count, timeout), self.hooks
            return [stripe.Webhook.construct_event(h.body, h.headers["Stripe-Signature"], "whsec_x")
                    for h in self.hooks[:count]]


@pytest.fixture
def net(app):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Network(app, rsps)


@pytest.fixture
def sc(net):
    return stripe.StripeClient("sk_test_x", base_addresses={"api": STRIPE_BASE}, max_network_retries=0)


def create_session(sc, key=None, **overrides):
    params = {"mode": "payment", "ui_mode": "hosted_page", "line_items": [{"price": "price_x", "quantity": 1}],
              "client_reference_id": "reg-1", "metadata": {"registration_id": "reg-1"},
              "success_url": BASE + "/done?session_id={CHECKOUT_SESSION_ID}", "cancel_url": BASE + "/back",
              "expires_at": int(time.time()) + 3600, **overrides}
    return sc.v1.checkout.sessions.create(params=params, options={"idempotency_key": key} if key else {})


def pay(web, session_id, **form):
    return web.post(f"/_local/stripe/checkout/{session_id}/pay", data={"email": "a@school.example", **form})


# --- Stripe ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["sk_live_abc", "rk_live_abc"])
def test_live_key_refused(key):
    with pytest.raises(RuntimeError, match="refuse to run with a live Stripe key"):
        create_standins_blueprint(make_settings(stripe_secret_key=key))


def test_price_retrieve_with_and_without_product(sc):
    price = sc.v1.prices.retrieve("price_x", params={"expand": ["product"]})
    assert (price.object, price.unit_amount, price.currency, price.type, price.recurring) == \
        ("price", 4900, "usd", "one_time", None)
    assert price.product.name == "Tool registration"
    assert sc.v1.prices.retrieve("price_x").product == "prod_local"
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.prices.retrieve("price_other")
    assert (err.value.http_status, err.value.code) == (404, "resource_missing")


def test_wrong_stripe_key_is_401(net):
    bad = stripe.StripeClient("sk_test_wrong", base_addresses={"api": STRIPE_BASE}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as err:
        bad.v1.prices.retrieve("price_x")
    assert err.value.http_status == 401 and "sk_test" not in str(err.value)


def test_session_create_and_idempotent_replay(sc):
    first = create_session(sc, key="k-1")
    assert first.id.startswith("cs_test_") and first.object == "checkout.session"
    assert (first.status, first.payment_status, first.amount_total, first.currency) == ("open", "unpaid", 4900, "usd")
    assert first.url == f"{BASE}/_local/stripe/checkout/{first.id}"
    assert first.metadata.to_dict() == {"registration_id": "reg-1"} and first.client_reference_id == "reg-1"
    again = create_session(sc, key="k-1", expires_at=first.expires_at)
    assert again.id == first.id and again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        create_session(sc, key="k-1", client_reference_id="reg-2")
    assert create_session(sc, key="k-2").id != first.id


@pytest.mark.parametrize("overrides, param", [
    ({"expires_at": int(time.time()) + 600}, "expires_at"),
    ({"expires_at": int(time.time()) + 90000}, "expires_at"),
    ({"line_items": [{"price": "price_nope", "quantity": 1}]}, "line_items[0][price]"),
    ({"ui_mode": "hosted"}, "ui_mode"),
])
def test_session_create_validates(sc, overrides, param):
    with pytest.raises(stripe.InvalidRequestError) as err:
        create_session(sc, **overrides)
    assert err.value.http_status == 400 and err.value.param == param


def test_retrieve_expands_line_items(sc):
    created = create_session(sc)
    plain = sc.v1.checkout.sessions.retrieve(created.id)
    assert "line_items" not in plain
    session = sc.v1.checkout.sessions.retrieve(created.id, params={"expand": ["line_items"]})
    item = session.line_items.data[0]
    assert (item.price.id, item.quantity, item.amount_total, item.currency) == ("price_x", 1, 4900, "usd")
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.checkout.sessions.retrieve("cs_test_unknown")


def test_list_paginates_newest_first(sc):
    ids = [create_session(sc).id for _ in range(5)]
    since = int(time.time()) - 60
    seen, after = [], None
    while True:
        params = {"limit": 2, "created": {"gte": since}, "expand": ["data.line_items"]}
        if after:
            params["starting_after"] = after
        page = sc.v1.checkout.sessions.list(params=params)
        assert all(s.line_items.data[0].price.id == "price_x" for s in page.data)
        seen += [s.id for s in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == list(reversed(ids))
    assert sc.v1.checkout.sessions.list(params={"created": {"gte": int(time.time()) + 60}}).data == []


def test_hosted_page_pay_sends_signed_webhook_and_redirects(sc, net, web):
    session = create_session(sc)
    page = web.get(f"/_local/stripe/checkout/{session.id}")
    html = page.get_data(as_text=True)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "Local Stripe stand-in — no real payment" in html and 'id="pay"' in html and "49.00 USD" in html
    assert 'value="admin@school.example"' in html and f'href="{BASE}/back"' in html
    paid = pay(web, session.id)
    assert paid.status_code == 303 and paid.headers["Location"] == f"{BASE}/done?session_id={session.id}"
    (event,) = net.events(1)
    assert event.type == "checkout.session.completed" and event.data.object.id == session.id
    assert event.api_version == stripe.api_version and event.data.object.payment_status == "paid"
    now = sc.v1.checkout.sessions.retrieve(session.id)
    assert (now.status, now.payment_status, now.customer_details.email) == ("complete", "paid", "a@school.example")
    assert now.payment_intent.startswith("pi_")
    assert pay(web, session.id).status_code == 400  # no second payment


def test_delayed_payment_settles_by_async_events(sc, net, web):
    ok, bad = create_session(sc), create_session(sc)
    for session in (ok, bad):
        assert pay(web, session.id, method="delayed").status_code == 303
    assert web.post(f"/_local/stripe/checkout/{ok.id}/settle", data={"outcome": "succeeded"}).status_code == 303
    assert web.post(f"/_local/stripe/checkout/{bad.id}/settle", data={"outcome": "failed"}).status_code == 303
    events = net.events(4)
    assert [(e.type, e.data.object.payment_status) for e in events] == [
        ("checkout.session.completed", "unpaid"), ("checkout.session.completed", "unpaid"),
        ("checkout.session.async_payment_succeeded", "paid"), ("checkout.session.async_payment_failed", "unpaid")]
    assert web.post(f"/_local/stripe/checkout/{ok.id}/settle", data={"outcome": "failed"}).status_code == 400


def test_expire(sc, net, web):
    session = create_session(sc)
    expired = sc.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    (event,) = net.events(1)
    assert event.type == "checkout.session.expired" and event.data.object.id == session.id
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.checkout.sessions.expire(session.id)
    assert pay(web, session.id).status_code == 400


def test_session_expires_by_itself(sc, net):
    session = create_session(sc)
    stripe_api._sessions[session.id]["session"]["expires_at"] = int(time.time()) - 1
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "expired"
    assert net.events(1)[0].type == "checkout.session.expired"


def test_refund_once(sc, web):
    session = create_session(sc)
    pay(web, session.id)
    pi = sc.v1.checkout.sessions.retrieve(session.id).payment_intent
    refund = sc.v1.refunds.create(params={"payment_intent": pi, "metadata": {"why": "test"}},
                                  options={"idempotency_key": "r-1"})
    assert (refund.object, refund.status, refund.amount, refund.currency) == ("refund", "succeeded", 4900, "usd")
    replay = sc.v1.refunds.create(params={"payment_intent": pi, "metadata": {"why": "test"}},
                                  options={"idempotency_key": "r-1"})
    assert replay.id == refund.id
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"payment_intent": pi})
    assert err.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"payment_intent": "pi_unknown"})
    assert (err.value.http_status, err.value.code) == (400, "resource_missing")


def test_send_event_is_signed_for_the_endpoint(net):
    sent = send_event("checkout.session.completed", {"id": "cs_test_1", "object": "checkout.session"})
    (event,) = net.events(1)
    assert event.id == sent["id"] and event.data.object.id == "cs_test_1" and not event.livemode
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(net.hooks[0].body, net.hooks[0].headers["Stripe-Signature"], "whsec_other")


def test_the_services_own_gateway_works_against_the_standin(net, web):
    from app.payments import Payments  # the module the service uses: catches drift between the two

    gateway = Payments("sk_test_x", "whsec_x", STRIPE_BASE, max_network_retries=0)
    assert gateway.get_price("price_x").unit_amount == 4900
    view = gateway.create_checkout_session(
        price_id="price_x", reference="reg-1", metadata={"registration_id": "reg-1"},
        success_url=BASE + "/done?session_id={CHECKOUT_SESSION_ID}", cancel_url=BASE + "/back",
        expires_at=datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1), idempotency_key="g-1")
    pay(web, view.id)
    net.events(1)
    hook = net.hooks[0]
    event = gateway.construct_event(hook.body, hook.headers["Stripe-Signature"])
    assert event["data"]["object"]["id"] == view.id
    done = gateway.retrieve_checkout_session(view.id)
    assert (done.status, done.payment_status, done.price_ids, done.payer_email) == \
        ("complete", "paid", ["price_x"], "a@school.example")
    assert [v.id for v in gateway.list_checkout_sessions(int(time.time()) - 60, page_size=1)] == [view.id]
    assert gateway.refund(done.payment_intent, "refund-1")["status"] == "succeeded"


# --- LTIaaS ---------------------------------------------------------------------------------------------------

def start_registration(web, query="openid_configuration=https%3A%2F%2Flms.example%2Foidc&registration_token=t0k"):
    r = web.get(f"/_local/ltiaas/lti/register?{query}")
    assert r.status_code == 302
    location = urlsplit(r.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{BASE}/pre-approval"
    (registration_id,) = parse_qs(location.query)["registrationId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", registration_id)
    return registration_id


def test_ltiaas_registration_completes_once(web):
    rid = start_registration(web)
    details = web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH)
    assert details.status_code == 200
    body = details.get_json()
    assert (body["url"], body["familyCode"]) == ("https://canvas.instructure.com", "canvas")
    assert {"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"]} in body["supportedMessages"]
    done = web.post(f"/_local/ltiaas/api/registrations/{rid}/complete", headers=AUTH,
                    json={"platformName": "School", "autoActivate": False})
    assert done.status_code == 200
    platform_id = done.get_json()["platformId"]
    assert re.fullmatch(r"[A-Za-z0-9]{19}", platform_id)
    assert "postMessage({subject:'org.imsglobal.lti.close'}, '*')" in done.get_json()["html"]
    gone = {"status": 404, "error": "Not Found", "details": {"message": "REGISTRATION_NOT_FOUND"}}
    again = web.post(f"/_local/ltiaas/api/registrations/{rid}/complete", headers=AUTH, json={})
    assert (again.status_code, again.get_json()) == (404, gone)
    assert web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).get_json() == gone

    platform = web.get(f"/_local/ltiaas/admin/platforms/{platform_id}", headers=AUTH).get_json()
    assert (platform["name"], platform["active"], platform["url"]) == ("School", False, "https://canvas.instructure.com")
    assert web.post(f"/_local/ltiaas/admin/platforms/{platform_id}/activate", headers=AUTH).status_code in (200, 204)
    listed = web.get(f"/_local/ltiaas/admin/platforms?id={platform_id}", headers=AUTH).get_json()["platforms"]
    assert [p["active"] for p in listed] == [True]
    assert web.get("/_local/ltiaas/admin/platforms?url=https://elsewhere", headers=AUTH).get_json() == {"platforms": []}
    assert web.get("/_local/ltiaas/admin/platforms/nope", headers=AUTH).status_code == 404


def test_ltiaas_wants_the_api_key(web):
    rid = start_registration(web)
    unauthorized = {"status": 401, "error": "Unauthorized", "details": {
        "message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k"}):
        r = web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=headers)
        assert (r.status_code, r.get_json()) == (401, unauthorized)
        assert web.post(f"/_local/ltiaas/api/registrations/{rid}/complete", headers=headers).status_code == 401
    assert web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).status_code == 200


def test_ltiaas_moodle_and_unknown_ids(web):
    rid = start_registration(web, "lms=moodle&openid_configuration=http%3A%2F%2Fmoodle.test%2Foidc&registration_token=t")
    body = web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).get_json()
    assert (body["url"], body["familyCode"]) == ("http://moodle.test", "moodle")
    assert web.get("/_local/ltiaas/api/registrations/unknown", headers=AUTH).status_code == 404


def test_the_services_own_ltiaas_client_works_against_the_standin(net, web):
    from app.ltiaas import Ltiaas

    client = Ltiaas(LTIAAS, "k", "/admin/platforms", timeout=2)
    rid = start_registration(web)
    assert client.get_registration(rid).family == "canvas"
    done = client.complete_registration(rid, {"autoActivate": False})
    assert client.get_platform(done.platform_id)["active"] is False
    client.set_platform_active(done.platform_id, True)
    assert client.get_platform(done.platform_id)["active"] is True


# --- LMS ------------------------------------------------------------------------------------------------------

def test_lms_page_points_at_the_service(web):
    html = web.get("/_local/lms", base_url="http://localhost:9999").get_data(as_text=True)
    assert f'value="{BASE}/lti/register"' in html and "localhost" not in html
    assert f"{BASE}/_local/lms/openid-configuration" in html and "local-token-" in html
    assert "org.imsglobal.lti.close" in html and "event.origin !== allowedOrigin" in html
    assert 'id="lms-status">Waiting for the tool…' in html and 'id="lms-log"' in html
    assert '"lms": "moodle"' in web.get("/_local/lms?lms=moodle").get_data(as_text=True)
    assert '"lms"' not in html
