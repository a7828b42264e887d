"""The local stand-ins: LTIaaS, Stripe (driven by the real `stripe` library) and the LMS page."""

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import stripe
from flask import Flask

from paygate.core.config import Settings
from paygate.standins import create_standins_blueprint
from paygate.standins.stripe import send_event

BASE = "http://svc.test"
STRIPE_BASE = BASE + "/_local/stripe"
LTIAAS = BASE + "/_local/ltiaas"
AUTH = {"Authorization": "Bearer k"}


def make_settings(**overrides) -> Settings:
    return Settings(
        **{
            "app_env": "test",
            "public_url": BASE,
            "ltiaas_api_key": "k",
            "stripe_secret_key": "sk_test_x",
            "stripe_webhook_secret": "whsec_x",
            "stripe_price_id": "price_x",
            "stripe_api_base": STRIPE_BASE,
            "ltiaas_url": LTIAAS,
            **overrides,
        }
    )


_current: dict = {}


def state():
    """The Stripe stand-in's state in the test's app."""
    return _current["app"].extensions["standins"].stripe


@pytest.fixture
def app():
    app = Flask(__name__)
    app.register_blueprint(create_standins_blueprint(make_settings()))
    _current["app"] = app
    yield app
    _current.clear()


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
        for method in ("GET", "POST", "DELETE"):
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
            return [
                stripe.Webhook.construct_event(h.body, h.headers["Stripe-Signature"], "whsec_x")
                for h in self.hooks[:count]
            ]


@pytest.fixture
def net(app):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Network(app, rsps)


@pytest.fixture
def sc(net):
    return stripe.StripeClient("sk_test_x", base_addresses={"api": STRIPE_BASE}, max_network_retries=0)


def create_session(sc, key=None, **overrides):
    params = {
        "mode": "payment",
        "ui_mode": "hosted_page",
        "line_items": [{"price": "price_x", "quantity": 1}],
        "client_reference_id": "reg-1",
        "metadata": {"registration_id": "reg-1"},
        "success_url": BASE + "/done?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": BASE + "/back",
        "expires_at": int(time.time()) + 3600,
        **overrides,
    }
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
    assert (price.object, price.unit_amount, price.currency, price.type, price.recurring) == (
        "price",
        4900,
        "usd",
        "one_time",
        None,
    )
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


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"expires_at": int(time.time()) + 600}, "expires_at"),
        ({"expires_at": int(time.time()) + 90000}, "expires_at"),
        ({"line_items": [{"price": "price_nope", "quantity": 1}]}, "line_items[0][price]"),
        ({"ui_mode": "hosted"}, "ui_mode"),
        ({"line_items": [{"price": "price_local_yearly"}]}, "line_items[0][price]"),  # recurring in payment mode
        ({"mode": "subscription"}, "line_items"),  # one-time in subscription mode
        ({"line_items": [{"price": "price_local_archived"}]}, "line_items[0][price]"),
        (
            {
                "mode": "subscription",
                "line_items": [{"price": "price_local_yearly"}],
                "payment_intent_data": {"metadata": {"a": "b"}},
            },
            "payment_intent_data",
        ),
        ({"locale": "xx"}, "locale"),
    ],
)
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
    events = net.events(4)  # delivered by threads, like Stripe's: in no guaranteed order
    assert sorted((e.type, e.data.object.payment_status) for e in events) == sorted(
        [
            ("checkout.session.completed", "unpaid"),
            ("checkout.session.completed", "unpaid"),
            ("checkout.session.async_payment_succeeded", "paid"),
            ("checkout.session.async_payment_failed", "unpaid"),
        ]
    )
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
    state().stores["checkout.session"][session.id]["expires_at"] = int(time.time()) - 1
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "expired"
    assert net.events(1)[0].type == "checkout.session.expired"


def test_refund_once(sc, web):
    session = create_session(sc)
    pay(web, session.id)
    pi = sc.v1.checkout.sessions.retrieve(session.id).payment_intent
    refund = sc.v1.refunds.create(
        params={"payment_intent": pi, "metadata": {"why": "test"}}, options={"idempotency_key": "r-1"}
    )
    assert (refund.object, refund.status, refund.amount, refund.currency) == ("refund", "succeeded", 4900, "usd")
    replay = sc.v1.refunds.create(
        params={"payment_intent": pi, "metadata": {"why": "test"}}, options={"idempotency_key": "r-1"}
    )
    assert replay.id == refund.id
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"payment_intent": pi})
    assert err.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"payment_intent": "pi_unknown"})
    assert (err.value.http_status, err.value.code) == (400, "resource_missing")


def test_send_event_is_signed_for_the_endpoint(net):
    sent = send_event("checkout.session.completed", {"id": "cs_test_1", "object": "checkout.session"}, state())
    (event,) = net.events(1)
    assert event.id == sent["id"] and event.data.object.id == "cs_test_1" and not event.livemode
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(net.hooks[0].body, net.hooks[0].headers["Stripe-Signature"], "whsec_other")


def test_the_services_own_gateway_works_against_the_standin(net, web):
    from paygate.gateways.payments import Payments  # the module the service uses: catches drift between the two

    gateway = Payments("sk_test_x", "whsec_x", STRIPE_BASE, max_network_retries=0)
    assert gateway.get_price("price_x").unit_amount == 4900
    view = gateway.create_checkout_session(
        price_id="price_x",
        reference="reg-1",
        metadata={"registration_id": "reg-1"},
        success_url=BASE + "/done?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=BASE + "/back",
        expires_at=datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1),
        idempotency_key="g-1",
    )
    pay(web, view.id)
    net.events(1)
    hook = net.hooks[0]
    event = gateway.construct_event(hook.body, hook.headers["Stripe-Signature"])
    assert event["data"]["object"]["id"] == view.id
    done = gateway.retrieve_checkout_session(view.id)
    assert (done.status, done.payment_status, done.price_ids, done.payer_email) == (
        "complete",
        "paid",
        ["price_x"],
        "a@school.example",
    )
    assert [v.id for v in gateway.list_checkout_sessions(int(time.time()) - 60, page_size=1)] == [view.id]
    assert gateway.refund(done.payment_intent, "refund-1").status == "succeeded"


# --- Stripe: subscriptions, invoices, refunds, disputes, the dashboard -----------------------------------------

DASHBOARD = "/_local/stripe/dashboard"


def sent_types() -> list[str]:
    """The types of the events the stand-in has sent, oldest first."""
    return [e["type"] for e in state().events]


def subscribe(sc, web, price="price_local_yearly", **form):
    """A subscription bought through Checkout and paid on the hosted page: the completed session."""
    session = create_session(
        sc,
        mode="subscription",
        line_items=[{"price": price, "quantity": 1}],
        subscription_data={"metadata": {"registration_id": "reg-1"}},
        locale="fr",
        customer_email="it@school.example",
        allowed_payment_method_types=["card"],
    )
    assert pay(web, session.id, **form).status_code == 303
    return sc.v1.checkout.sessions.retrieve(session.id)


def open_invoice(sc, customer_id) -> str:
    """A finalised invoice of the configured price, sent by e-mail: its id."""
    draft = sc.v1.invoices.create(
        params={"customer": customer_id, "collection_method": "send_invoice", "days_until_due": 30}
    )
    sc.v1.invoice_items.create(params={"customer": customer_id, "invoice": draft.id, "pricing": {"price": "price_x"}})
    return sc.v1.invoices.finalize_invoice(draft.id).id


def act(web, kind, object_id, action, **form):
    """Press a dashboard button; it answers 303 back to the dashboard."""
    r = web.post(f"{DASHBOARD}/{kind}/{object_id}/{action}", data=form)
    assert r.status_code == 303 and r.headers["Location"].startswith(BASE + DASHBOARD + "?notice=")
    return r


def test_fixed_prices_and_currency_options(sc):
    multi = sc.v1.prices.retrieve("price_local_multi", params={"expand": ["currency_options", "product"]})
    options = multi.currency_options.to_dict()
    assert {c: o["unit_amount"] for c, o in options.items()} == {"usd": 4900, "eur": 4500, "gbp": 3900}
    assert multi.product.description == "Registers the tool in your LMS for one institution."
    assert "currency_options" not in sc.v1.prices.retrieve("price_local_multi")
    yearly = sc.v1.prices.retrieve("price_local_yearly", params={"expand": ["product"]})
    assert (yearly.type, yearly.recurring.interval, yearly.unit_amount, yearly.product.name) == (
        "recurring",
        "year",
        4900,
        "Tool licence (yearly)",
    )
    monthly = sc.v1.prices.retrieve("price_local_monthly")
    assert (monthly.recurring.interval, monthly.unit_amount) == ("month", 900)
    assert sc.v1.prices.retrieve("price_local_archived").active is False


def test_the_configured_price_may_name_a_fixed_one(net):
    app = Flask(__name__)
    app.register_blueprint(create_standins_blueprint(make_settings(stripe_price_id="price_local_monthly")))
    body = (
        app.test_client()
        .get("/_local/stripe/v1/prices/price_local_monthly", headers={"Authorization": "Bearer sk_test_x"})
        .get_json()
    )
    assert (body["type"], body["unit_amount"]) == ("recurring", 900)


def test_subscription_checkout_makes_a_subscription_paid_by_its_first_invoice(sc, net, web):
    session = subscribe(sc, web)
    assert (session.mode, session.status, session.payment_status, session.payment_intent, session.locale) == (
        "subscription",
        "complete",
        "paid",
        None,
        "fr",
    )
    assert session.customer.startswith("cus_") and session.invoice.startswith("in_")
    sub = sc.v1.subscriptions.retrieve(session.subscription, params={"expand": ["latest_invoice.payments"]})
    assert (sub.status, sub.collection_method, sub.customer) == ("active", "charge_automatically", session.customer)
    assert sub.metadata.to_dict() == {"registration_id": "reg-1"} and "current_period_end" not in sub
    (item,) = sub["items"].data
    start, end = (datetime.fromtimestamp(t, UTC) for t in (item.current_period_start, item.current_period_end))
    assert end == start.replace(year=start.year + 1) and item.price.id == "price_local_yearly"
    invoice = sub.latest_invoice
    assert (invoice.id, invoice.status, invoice.amount_paid, invoice.amount_remaining) == (
        session.invoice,
        "paid",
        4900,
        0,
    )
    assert invoice.number and invoice.billing_reason == "subscription_create"
    assert invoice.parent.subscription_details.subscription == sub.id
    assert invoice.parent.subscription_details.metadata.to_dict() == {"registration_id": "reg-1"}
    (payment,) = invoice.payments.data
    assert (payment.object, payment.status, payment.payment.type) == ("invoice_payment", "paid", "payment_intent")
    pi = sc.v1.payment_intents.retrieve(payment.payment.payment_intent, params={"expand": ["latest_charge"]})
    assert (pi.status, pi.amount, pi.latest_charge.status, pi.latest_charge.paid) == (
        "succeeded",
        4900,
        "succeeded",
        True,
    )
    assert "payments" not in sc.v1.invoices.retrieve(invoice.id)  # only when expanded
    assert {"customer.subscription.created", "invoice.paid", "checkout.session.completed"} <= set(sent_types())
    assert {e.type for e in net.events(len(state().events))} == set(sent_types())


def test_a_delayed_subscription_payment_activates_it_when_it_arrives(sc, web):
    session = subscribe(sc, web, price="price_local_monthly", method="delayed")
    assert (session.payment_status, sc.v1.subscriptions.retrieve(session.subscription).status) == (
        "unpaid",
        "incomplete",
    )
    assert web.post(f"/_local/stripe/checkout/{session.id}/settle", data={"outcome": "succeeded"}).status_code == 303
    assert sc.v1.subscriptions.retrieve(session.subscription).status == "active"
    assert sc.v1.invoices.retrieve(session.invoice).status == "paid"
    assert sent_types()[-3:] == [
        "invoice.paid",
        "customer.subscription.updated",
        "checkout.session.async_payment_succeeded",
    ]


def test_currency_choice_on_the_hosted_page(sc, web):
    session = create_session(sc, line_items=[{"price": "price_local_multi", "quantity": 1}])
    html = web.get(f"/_local/stripe/checkout/{session.id}").get_data(as_text=True)
    assert '<select id="currency"' in html and "45.00 EUR" in html and "39.00 GBP" in html
    assert f'href="{BASE}/_local/stripe/dashboard"' in html
    assert '<select id="currency"' not in web.get(f"/_local/stripe/checkout/{create_session(sc).id}").get_data(
        as_text=True
    )
    assert pay(web, session.id, currency="jpy").status_code == 400
    pay(web, session.id, currency="eur")
    paid = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert (paid.currency, paid.amount_total, paid.line_items.data[0].currency) == ("eur", 4500, "eur")
    pi = sc.v1.payment_intents.retrieve(paid.payment_intent)
    assert (pi.currency, pi.amount) == ("eur", 4500)


def test_invoice_flow(sc, net):
    customer = sc.v1.customers.create(
        params={
            "email": "ap@school.example",
            "name": "School",
            "metadata": {"registration_id": "reg-9"},
            "invoice_settings": {"custom_fields": [{"name": "PO number", "value": "PO-1"}]},
        }
    )
    assert sc.v1.customers.retrieve(customer.id).invoice_settings.custom_fields[0].value == "PO-1"
    invoice = sc.v1.invoices.create(
        params={
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "metadata": {"registration_id": "reg-9"},
        }
    )
    assert (invoice.status, invoice.number, invoice.due_date, invoice.amount_due, invoice.hosted_invoice_url) == (
        "draft",
        None,
        None,
        0,
        None,
    )
    assert invoice.custom_fields[0].to_dict() == {"name": "PO number", "value": "PO-1"}
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.invoice_items.create(params={"customer": customer.id, "invoice": invoice.id, "price": "price_x"})
    assert err.value.code == "parameter_unknown"
    item = sc.v1.invoice_items.create(
        params={"customer": customer.id, "invoice": invoice.id, "pricing": {"price": "price_local_yearly"}}
    )
    assert (item.object, item.amount, item.invoice, item.pricing.price_details.price) == (
        "invoiceitem",
        4900,
        invoice.id,
        "price_local_yearly",
    )
    assert sc.v1.invoices.retrieve(invoice.id).amount_due == 4900
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.invoices.send_invoice(invoice.id)  # a draft cannot be sent
    final = sc.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": False})
    assert final.status == "open" and final.number.endswith("-0001") and final.amount_remaining == 4900
    assert abs(final.due_date - (time.time() + 14 * 86400)) < 60 and final.hosted_invoice_url.startswith(BASE)
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.invoices.finalize_invoice(invoice.id)
    sc.v1.invoices.send_invoice(invoice.id)
    paid = sc.v1.invoices.pay(invoice.id, params={"expand": ["payments"]})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 4900, 0)
    assert paid.status_transitions.paid_at and paid.payments.data[0].status == "paid"
    pi = sc.v1.payment_intents.retrieve(paid.payments.data[0].payment.payment_intent)
    assert sc.v1.charges.retrieve(pi.latest_charge).amount == 4900
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.invoices.void_invoice(invoice.id)

    assert sc.v1.invoices.void_invoice(open_invoice(sc, customer.id)).status == "void"
    written_off = sc.v1.invoices.mark_uncollectible(open_invoice(sc, customer.id))
    assert (written_off.status, written_off.number.endswith("-0003")) == ("uncollectible", True)
    out_of_band = sc.v1.invoices.pay(written_off.id, params={"paid_out_of_band": True, "expand": ["payments"]})
    assert (out_of_band.status, out_of_band.amount_paid, out_of_band.payments.data) == ("paid", 4900, [])
    assert sent_types() == [
        "invoice.finalized",
        "invoice.sent",
        "invoice.paid",
        "invoice.finalized",
        "invoice.voided",
        "invoice.finalized",
        "invoice.marked_uncollectible",
        "invoice.paid",
    ]


def test_invoiced_subscription_waits_for_its_first_invoice_to_be_finalised(sc, net):
    customer = sc.v1.customers.create(params={"email": "ap@school.example"})
    sub = sc.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": "price_local_yearly", "quantity": 1}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"registration_id": "reg-3"},
        },
        options={"idempotency_key": "sub-1"},
    )
    assert (sub.status, sub.collection_method, sub.days_until_due) == ("active", "send_invoice", 30)
    invoice = sc.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.amount_due, invoice.parent.subscription_details.subscription) == (
        "draft",
        4900,
        sub.id,
    )
    assert sc.v1.invoices.finalize_invoice(invoice.id).status == "open"
    canceled = sc.v1.subscriptions.cancel(sub.id)
    assert (canceled.status, bool(canceled.canceled_at)) == ("canceled", True)
    assert sent_types() == ["customer.subscription.created", "invoice.finalized", "customer.subscription.deleted"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": "price_x"}]})
    assert err.value.param == "items[0][price]"  # a one-time price


def test_unknown_ids_are_404_and_unknown_parameters_400(sc):
    for call in (
        sc.v1.subscriptions.retrieve,
        sc.v1.invoices.retrieve,
        sc.v1.customers.retrieve,
        sc.v1.charges.retrieve,
        sc.v1.refunds.retrieve,
        sc.v1.disputes.retrieve,
        sc.v1.payment_intents.retrieve,
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call("xx_unknown")
        assert (err.value.http_status, err.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.invoices.create(params={"customer": "cus_unknown"})
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.coupons.retrieve("c")
    assert err.value.http_status == 404


def test_refund_full_partial_and_already_refunded(sc, web):
    session = create_session(sc)
    pay(web, session.id)
    pi = sc.v1.payment_intents.retrieve(sc.v1.checkout.sessions.retrieve(session.id).payment_intent)
    part = sc.v1.refunds.create(params={"charge": pi.latest_charge, "amount": 1000})
    assert (part.amount, part.status, part.payment_intent) == (1000, "succeeded", pi.id)
    charge = sc.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (1000, False)
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"payment_intent": pi.id, "amount": 4000})
    assert err.value.code == "amount_too_large"
    rest = sc.v1.refunds.create(params={"payment_intent": pi.id})
    assert rest.amount == 3900 and sc.v1.refunds.retrieve(rest.id).status == "succeeded"
    charge = sc.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (4900, True)
    with pytest.raises(stripe.InvalidRequestError) as err:
        sc.v1.refunds.create(params={"charge": charge.id})
    assert err.value.code == "charge_already_refunded"
    assert sent_types()[1:] == ["charge.refunded", "refund.created"] * 2


def test_idempotent_customer_and_invoice_creation(sc):
    params = {"email": "ap@school.example", "name": "School", "metadata": {"registration_id": "reg-1"}}
    first = sc.v1.customers.create(params=params, options={"idempotency_key": "cus-1"})
    again = sc.v1.customers.create(params=params, options={"idempotency_key": "cus-1"})
    assert again.id == first.id and again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        sc.v1.customers.create(params={**params, "name": "Other"}, options={"idempotency_key": "cus-1"})
    invoice = {"customer": first.id, "collection_method": "send_invoice", "days_until_due": 30}
    made = sc.v1.invoices.create(params=invoice, options={"idempotency_key": "in-1"})
    assert sc.v1.invoices.create(params=invoice, options={"idempotency_key": "in-1"}).id == made.id
    with pytest.raises(stripe.IdempotencyError):
        sc.v1.invoices.create(params={**invoice, "days_until_due": 7}, options={"idempotency_key": "in-1"})
    assert len(state().stores["customer"]) == 1 and len(state().stores["invoice"]) == 1


def test_dashboard_payment_actions(sc, web):
    session = create_session(sc, payment_intent_data={"metadata": {"registration_id": "<b>reg-1</b>"}})
    pay(web, session.id)
    pi = sc.v1.payment_intents.retrieve(sc.v1.checkout.sessions.retrieve(session.id).payment_intent)
    charge = pi.latest_charge
    html = web.get(DASHBOARD).get_data(as_text=True)
    assert "&lt;b&gt;reg-1&lt;/b&gt;" in html and "<b>reg-1" not in html
    for button in (f"refund-{charge}", f"refund-half-{charge}", f"refund-fail-{charge}", f"dispute-{charge}"):
        assert f'id="{button}"' in html
    act(web, "charge", charge, "refund-half")
    act(web, "charge", charge, "refund-fail")
    assert (sc.v1.charges.retrieve(charge).amount_refunded, sc.v1.refunds.list().data[0].status) == (0, "failed")
    act(web, "charge", charge, "refund")
    assert sc.v1.charges.retrieve(charge).refunded is True
    assert "already been refunded" in act(web, "charge", charge, "refund").headers["Location"].replace("+", " ")
    act(web, "charge", charge, "dispute")
    (dispute,) = sc.v1.disputes.list(params={"payment_intent": pi.id}).data
    assert (dispute.status, dispute.charge, sc.v1.charges.retrieve(charge).disputed) == ("needs_response", charge, True)
    assert 6 * 86400 < dispute.evidence_details.due_by - time.time() <= 7 * 86400
    assert f'id="dispute-won-{dispute.id}"' in web.get(DASHBOARD).get_data(as_text=True)
    act(web, "dispute", dispute.id, "lost")
    assert sc.v1.disputes.retrieve(dispute.id).status == "lost"
    act(web, "dispute", dispute.id, "won")  # closed already: refused, nothing sent
    assert sent_types()[1:] == [
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "charge.refund.updated",
        "charge.refunded",
        "refund.created",
        "charge.dispute.created",
        "charge.dispute.closed",
    ]
    assert web.post(f"{DASHBOARD}/charge/{charge}/nothing").status_code == 404


def test_dashboard_subscription_and_invoice_actions(sc, web):
    session = subscribe(sc, web, price="price_local_monthly")
    sub_id = session.subscription
    html = web.get(DASHBOARD).get_data(as_text=True)
    for button in [f"sub-{s}-{sub_id}" for s in ("past_due", "unpaid", "canceled", "active", "renewal-failed")] + [
        f"invoice-{a}-{session.invoice}" for a in ("paid", "overdue", "void", "uncollectible")
    ]:
        assert f'id="{button}"' in html
    first_end = sc.v1.subscriptions.retrieve(sub_id)["items"].data[0].current_period_end
    del state().events[:]

    act(web, "subscription", sub_id, "renewal-failed")
    sub = sc.v1.subscriptions.retrieve(sub_id, params={"expand": ["latest_invoice"]})
    assert (sub.status, sub.latest_invoice.status, sub.latest_invoice.billing_reason) == (
        "past_due",
        "open",
        "subscription_cycle",
    )
    assert sub["items"].data[0].current_period_start == first_end
    act(web, "subscription", sub_id, "active")  # pays the open renewal
    assert sc.v1.invoices.retrieve(sub.latest_invoice.id).status == "paid"
    act(web, "subscription", sub_id, "unpaid")
    act(web, "subscription", sub_id, "active")  # nothing open: the next renewal, paid
    sub = sc.v1.subscriptions.retrieve(sub_id)
    assert sub.status == "active" and sub["items"].data[0].current_period_start > first_end
    act(web, "subscription", sub_id, "canceled")
    assert sent_types() == [
        "invoice.finalized",
        "invoice.payment_failed",
        "customer.subscription.updated",  # renewal fails
        "invoice.paid",
        "customer.subscription.updated",  # → active
        "customer.subscription.updated",  # → unpaid
        "invoice.finalized",
        "invoice.paid",
        "customer.subscription.updated",  # → active
        "customer.subscription.deleted",
    ]
    updates = [e for e in state().events if e["type"] == "customer.subscription.updated"]
    assert [(e["data"]["previous_attributes"]["status"], e["data"]["object"]["status"]) for e in updates] == [
        ("active", "past_due"),
        ("past_due", "active"),
        ("active", "unpaid"),
        ("unpaid", "active"),
    ]

    customer = sc.v1.customers.create(params={"email": "ap@school.example"})
    invoices = [open_invoice(sc, customer.id) for _ in range(3)]
    del state().events[:]
    act(web, "invoice", invoices[0], "overdue", days="3")
    assert abs(sc.v1.invoices.retrieve(invoices[0]).due_date - (time.time() - 3 * 86400)) < 60
    act(web, "invoice", invoices[0], "paid")
    act(web, "invoice", invoices[1], "void")
    act(web, "invoice", invoices[2], "uncollectible")
    assert [sc.v1.invoices.retrieve(i).status for i in invoices] == ["paid", "void", "uncollectible"]
    assert sent_types() == ["invoice.overdue", "invoice.paid", "invoice.voided", "invoice.marked_uncollectible"]

    snapshot = web.get(DASHBOARD + ".json").get_json()
    assert [i["id"] for i in snapshot["invoice"]][:3] == invoices[::-1]  # newest first
    assert snapshot["subscription"][0]["status"] == "canceled" and snapshot["events"][-1]["object"] == invoices[2]


def test_the_services_licence_calls_work_against_the_standin(net, web, sc):
    from paygate.gateways.payments import Payments  # the module the service uses: catches drift between the two

    gateway = Payments("sk_test_x", "whsec_x", STRIPE_BASE, max_network_retries=0)
    price = gateway.get_price("price_local_multi")
    assert price.currency_options == {"usd": 4900, "eur": 4500, "gbp": 3900}
    session = subscribe(sc, web)
    view = gateway.retrieve_checkout_session(session.id)
    assert view.subscription_view.status == "active" and view.subscription_view.latest_invoice.payment_intents
    payment = gateway.retrieve_payment(view.subscription_view.latest_invoice.payment_intents[0])
    assert (payment.status, payment.amount_refunded, payment.disputed) == ("succeeded", 0, False)
    act(web, "charge", payment.charge, "dispute")
    (dispute,) = gateway.disputes_of(payment.payment_intent)
    assert gateway.retrieve_dispute(dispute.id).status == "needs_response"
    customer = gateway.create_customer(
        email="ap@school.example", name="School", po_number="PO-1", metadata={}, idempotency_key="c-1"
    )
    sub = gateway.create_invoiced_subscription(
        customer=customer,
        price_id="price_local_yearly",
        days_until_due=30,
        metadata={"registration_id": "reg-2"},
        idempotency_key="s-1",
    )
    invoice = gateway.finalize_invoice(sub.latest_invoice_id, "f-1")
    assert (invoice.status, invoice.subscription, invoice.subscription_metadata) == (
        "open",
        sub.id,
        {"registration_id": "reg-2"},
    )
    assert gateway.send_invoice(invoice.id, "send-1").status == "open"
    assert gateway.cancel_subscription(sub.id, "cancel-1").status == "canceled"


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
    done = web.post(
        f"/_local/ltiaas/api/registrations/{rid}/complete",
        headers=AUTH,
        json={"platformName": "School", "autoActivate": False},
    )
    assert done.status_code == 200
    platform_id = done.get_json()["platformId"]
    assert re.fullmatch(r"[A-Za-z0-9]{19}", platform_id)
    assert "postMessage({subject:'org.imsglobal.lti.close'}, '*')" in done.get_json()["html"]
    gone = {"status": 404, "error": "Not Found", "details": {"message": "REGISTRATION_NOT_FOUND"}}
    again = web.post(f"/_local/ltiaas/api/registrations/{rid}/complete", headers=AUTH, json={})
    assert (again.status_code, again.get_json()) == (404, gone)
    assert web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).get_json() == gone

    platform = web.get(f"/_local/ltiaas/admin/platforms/{platform_id}", headers=AUTH).get_json()
    assert (platform["name"], platform["active"], platform["url"]) == (
        "School",
        False,
        "https://canvas.instructure.com",
    )
    assert web.post(f"/_local/ltiaas/admin/platforms/{platform_id}/activate", headers=AUTH).status_code in (200, 204)
    listed = web.get(f"/_local/ltiaas/admin/platforms?id={platform_id}", headers=AUTH).get_json()["platforms"]
    assert [p["active"] for p in listed] == [True]
    assert web.get("/_local/ltiaas/admin/platforms?url=https://elsewhere", headers=AUTH).get_json() == {"platforms": []}
    assert web.get("/_local/ltiaas/admin/platforms/nope", headers=AUTH).status_code == 404


def test_ltiaas_wants_the_api_key(web):
    rid = start_registration(web)
    unauthorized = {
        "status": 401,
        "error": "Unauthorized",
        "details": {"message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"},
    }
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k"}):
        r = web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=headers)
        assert (r.status_code, r.get_json()) == (401, unauthorized)
        assert web.post(f"/_local/ltiaas/api/registrations/{rid}/complete", headers=headers).status_code == 401
    assert web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).status_code == 200


def test_ltiaas_moodle_and_unknown_ids(web):
    rid = start_registration(
        web, "lms=moodle&openid_configuration=http%3A%2F%2Fmoodle.test%2Foidc&registration_token=t"
    )
    body = web.get(f"/_local/ltiaas/api/registrations/{rid}", headers=AUTH).get_json()
    assert (body["url"], body["familyCode"]) == ("http://moodle.test", "moodle")
    assert web.get("/_local/ltiaas/api/registrations/unknown", headers=AUTH).status_code == 404


def test_the_services_own_ltiaas_client_works_against_the_standin(net, web):
    from paygate.gateways.ltiaas import Ltiaas

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


# --- the local run keeps the stand-ins' state across restarts ---------------------------------------------------


def test_a_restart_of_the_local_app_keeps_the_standins_state(tmp_path):
    from paygate.application import create_app

    def start():
        app = create_app(
            {
                "app_env": "local",
                "database_url": f"sqlite:///{tmp_path / 'local.sqlite'}",
                "secret_key": "local-restart-test-" + "k" * 20,
            },
            standins_state_dir=str(tmp_path),
        )
        settings = app.config["SETTINGS"]
        return app.test_client(), {"Authorization": f"Bearer {settings.stripe_secret_key}"}, settings

    web, auth, settings = start()
    created = web.post(
        "/_local/stripe/v1/checkout/sessions",
        headers={**auth, "Idempotency-Key": "k1"},
        data={
            "mode": "payment",
            "line_items[0][price]": "price_local_registration",
            "expires_at": int(time.time()) + 3600,
        },
    )
    assert created.status_code == 200, created.text
    session_id = created.get_json()["id"]
    started = web.get("/_local/ltiaas/lti/register", query_string={"registration_token": "t0k"})
    registration_id = parse_qs(urlsplit(started.headers["Location"]).query)["registrationId"][0]
    assert sorted(p.name for p in tmp_path.glob("standin-*.json")) == ["standin-ltiaas.json", "standin-stripe.json"]

    web, auth, settings = start()  # as after a restart: a new app from the same instance folder
    again = web.get(f"/_local/stripe/v1/checkout/sessions/{session_id}", headers=auth)
    assert again.status_code == 200 and again.get_json()["status"] == "open"
    replayed = web.post(
        "/_local/stripe/v1/checkout/sessions",
        headers={**auth, "Idempotency-Key": "k1"},
        data={"mode": "payment", "line_items[0][price]": "price_local_registration", "expires_at": "1"},
    )
    assert replayed.status_code == 400  # the key is remembered too: other parameters are refused
    lookup = web.get(
        f"/_local/ltiaas/api/registrations/{registration_id}",
        headers={"Authorization": f"Bearer {settings.ltiaas_api_key}"},
    )
    assert lookup.status_code == 200 and lookup.get_json()["familyCode"] == "canvas"


def test_without_a_state_folder_the_standins_keep_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.register_blueprint(create_standins_blueprint(make_settings()))
    web = app.test_client()
    web.get("/_local/ltiaas/lti/register", query_string={"registration_token": "t0k"})
    assert list(tmp_path.rglob("*.json")) == []
