"""Stripe and LTIaaS for the tests: the local stand-ins (paygate.standins), each with a state of its own, behind
`responses`: every request to https://api.stripe.com or to LTIaaS is answered by the stand-in's blueprint."""

import copy
import json
import re
import secrets
import time
from types import SimpleNamespace
from urllib.parse import urlparse

import responses
import stripe
from flask import Blueprint, Flask

from paygate.standins import ltiaas_api
from paygate.standins import stripe as standin
from paygate.standins.ltiaas_api import CLOSE_HTML
from paygate.standins.stripe.state import make_price, make_product

STRIPE = "https://api.stripe.com"
__all__ = ["CLOSE_HTML", "STRIPE", "Ltiaas", "Stripe"]


# The stand-in's operation names that the tests know by shorter ones.
ALIASES = {
    "checkout_create": "create",
    "retrieve_checkout": "retrieve",
    "list_checkouts": "list",
    "refund_create": "refund",
    "retrieve_price": "price",
    "checkout_expire": "session_expire",
}


def _store(kind: str) -> property:
    return property(lambda self: self.state.stores[kind], doc=f"The stand-in's {kind} objects by id.")


class _Sessions(dict):
    """The stand-in's Checkout Sessions. One a test writes in by hand gets what it leaves out from a session of the
    configured Price (made, then dropped): mode, line items, totals, the stand-in's own bookkeeping."""

    def __init__(self, st):
        super().__init__()
        self.st = st

    def __setitem__(self, session_id, record):
        if "_seq" not in record:
            price = standin.prices.find(self.st, self.st.settings.stripe_price_id)
            made = standin.checkout.create(
                self.st,
                {"mode": "subscription" if price["recurring"] else "payment", "line_items": [{"price": price["id"]}]},
            )
            dict.pop(self, made["id"])
            record = {**made, **record}
        super().__setitem__(session_id, record)


class Stripe:
    """Stripe for the tests: the local stand-in (paygate.standins.stripe) behind `responses`, with a state of its
    own whose dials are turned as the tests expect (calls recorded, account-wide INV- numbers, Checkout payments
    forgotten with their session, repeat disputes) and a catalogue of one Price (`price`, of `product`).

    Its stores (sessions, customers, invoices, subscriptions, charges ...) are the stand-in's, private fields
    included; events are recorded, never delivered (tests deliver them). The helpers do what a person or Stripe
    does outside the service, through the stand-in's own functions (the dashboard's actions), and return the
    object's current JSON; `object_event` wraps any such JSON in an event for `signed`.
    """

    _STATE = ("lock", "refund_status")

    def __init__(self, rsps: responses.RequestsMock, config: dict, amount: int = 4900, currency: str = "usd"):
        settings = SimpleNamespace(
            **{k: config[k] for k in ("stripe_secret_key", "stripe_webhook_secret", "stripe_price_id", "public_url")}
        )
        st = standin.State(settings, deliver=lambda *_: None)  # events are recorded in st.events only
        st.calls, st.invoice_prefix, st.invoice_url = [], "INV", "https://invoice.stripe.test/i/{id}"
        st.payments_follow_sessions, st.one_dispute_per_charge = True, False
        st.prices = {
            config["stripe_price_id"]: make_price(config["stripe_price_id"], "prod_tool", amount, currency=currency)
        }
        st.products = {
            "prod_tool": make_product("prod_tool", "Tool registration", "One LTI tool registration for one LMS")
        }
        st.stores["checkout.session"] = _Sessions(st)
        object.__setattr__(self, "state", st)
        object.__setattr__(self, "config", config)
        app = Flask(__name__)
        app.testing = True  # a scripted exception reaches the caller, as a dropped connection would
        bp = Blueprint("stripe", __name__)
        standin.register(bp, st)
        app.register_blueprint(bp)
        object.__setattr__(self, "client", app.test_client())
        base = re.escape(STRIPE)
        # Checkout's create and list on their own (tests swap them for failures), the rest by method; no two match
        # one request (`responses` would answer it once only).
        rsps.add_callback("POST", STRIPE + "/v1/checkout/sessions", self._create)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/checkout/sessions(\?.*)?$"), self._forward)
        for method in ("GET", "POST", "DELETE"):
            rsps.add_callback(method, re.compile(base + r"/v1/(?!checkout/sessions(?:\?|$)).*"), self._forward)

    def __getattr__(self, name):
        if name in Stripe._STATE:
            return getattr(self.state, name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in Stripe._STATE:
            setattr(self.state, name, value)
        else:
            object.__setattr__(self, name, value)

    def _forward(self, request):
        return forward(self.client, "/stripe" + urlparse(request.url).path, request)

    _create = _forward

    # ---------------------------------------------------------------------------------------------
    # The stand-in's state, by the names the tests know

    sessions = _store("checkout.session")
    customers = _store("customer")
    invoices = _store("invoice")
    invoice_items = _store("invoiceitem")
    subscriptions = _store("subscription")
    payment_intents = _store("payment_intent")
    charges = _store("charge")
    refund_objects = _store("refund")
    disputes = _store("dispute")

    @property
    def price(self) -> dict:
        """The Price sold (tests edit it: archive it, rename its id to make it vanish)."""
        return self.state.prices[self.config["stripe_price_id"]]

    @property
    def product(self) -> dict:
        return self.state.products["prod_tool"]

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(operation, its idempotency key, else the object's id or the path) of each call made, in order."""
        return [(ALIASES.get(op, op), detail) for op, detail in self.state.calls]

    @property
    def probe(self):
        """Called with the operation's name (as in `calls`) while the service waits on Stripe."""
        return self.__dict__.get("_probe")

    @probe.setter
    def probe(self, fn) -> None:
        self.__dict__["_probe"] = fn
        self.state.probe = fn and (lambda op: fn(ALIASES.get(op, op)))

    @property
    def fail_next(self) -> dict[str, list]:
        """Operation name -> statuses (or exceptions) for its next calls; a 5xx is kept under its key."""
        return self.state.failures

    @property
    def fail_next_create(self) -> list:
        return self.state.failures.setdefault("checkout_create", [])

    @property
    def fail_next_refund(self) -> list:
        return self.state.failures.setdefault("refund_create", [])

    @property
    def refunds(self) -> dict[str, dict]:
        """Idempotency key -> the answer given to a refund request (kept, and replayed, as Stripe does)."""
        with self.lock:
            return {
                key: json.loads(text)
                for key, (fingerprint, _, text) in self.state.idempotency.items()
                if json.loads(fingerprint)[0].endswith("/v1/refunds")
            }

    @property
    def sent_invoices(self) -> list[str]:
        """Invoice ids, once per effective /send."""
        return [e["data"]["object"]["id"] for e in self.state.events if e["type"] == "invoice.sent"]

    def _json(self, obj: dict) -> dict:
        return standin.core.render(self.state, obj)

    def _get(self, kind: str, object_id: str) -> dict:
        if object_id not in self.state.stores[kind]:
            raise KeyError(f"the stand-in has no {kind} {object_id!r}")
        return self.state.stores[kind][object_id]

    # ---------------------------------------------------------------------------------------------
    # What a person or Stripe does, outside the service.

    def set_price(
        self,
        recurring: str | None = None,
        currency_options: dict | None = None,
        active: bool = True,
        amount: int | None = None,
    ) -> dict:
        """Reconfigure the Price: one-time or recurring ("year", "month"), other currencies ({"eur": 4500}),
        archived (active=False), another unit amount. Returns the Price with its expansions."""
        with self.lock:
            return standin.prices.change(
                self.state,
                self.config["stripe_price_id"],
                interval=recurring,
                currency_options=currency_options,
                active=active,
                unit_amount=amount,
            )

    def pay(
        self,
        session_id: str,
        email: str = "admin@school.example",
        payment_status: str = "paid",
        currency: str | None = None,
        promotion_code: str | None = None,
        fields: dict | None = None,
        address: dict | None = None,
        tax_id: str | dict | None = None,
    ) -> dict:
        """The buyer completes Checkout (payment_status="unpaid": by a delayed method; a second pay() of it: the
        money arrives). `currency` picks one of the Price's currency_options; `promotion_code` is the code typed on
        the page (one it cannot apply raises ValueError with Checkout's sentence); `fields` fill the custom fields by
        key (a required one left out gets "Springfield Elementary"); `address` ({"country", "postal_code"}) places
        the buyer (automatic tax without one: US 94105); `tax_id` a value (EU VAT) or {"type", "value"}."""
        with self.lock:
            record = self.sessions[session_id]
            paid = payment_status != "unpaid"
            if record["status"] == "complete":
                if paid and record["payment_status"] != "paid":
                    standin.checkout.settle(self.state, record, True)
                return self._json(record)
            currency = (currency or record["currency"]).lower()
            if currency != record["currency"] and currency not in record["_totals"]:
                raise ValueError(f"the price has no {currency!r} currency option")
            if promotion_code is not None:
                problem = standin.checkout_terms.apply_code(self.state, record, promotion_code)
                if problem:
                    raise ValueError(problem)
            given = dict(fields or {})
            for field in record["custom_fields"]:
                if not field["optional"]:
                    given.setdefault(field["key"], "Springfield Elementary")
            if address is None and record["automatic_tax"]["enabled"]:
                address = {"country": "US", "postal_code": "94105"}
            standin.checkout.pay(self.state, record, email, currency, not paid, "A. Admin", given, address, tax_id)
            return self._json(record)

    def expire(self, session_id: str) -> dict:
        with self.lock:
            standin.checkout.expire(self.state, self.sessions[session_id])
            return self._json(self.sessions[session_id])

    def only_session(self) -> dict:
        assert len(self.sessions) == 1, f"expected one Checkout Session, found {len(self.sessions)}"
        return next(iter(self.sessions.values()))

    def refund_in_dashboard(self, payment_intent: str, amount: int | None = None, status: str = "succeeded") -> dict:
        """Someone refunds in the Stripe dashboard (a PaymentIntent or a charge id). Returns the refund."""
        with self.lock:
            charge = standin.charges.find_charge(self.state, payment_intent)
            return self._json(standin.charges.refund(self.state, charge, amount, status=status))

    def fail_refund(self, refund_id: str, failure_reason: str = "expired_or_canceled_card") -> dict:
        """A (pending) refund fails: its amount goes back to the charge."""
        with self.lock:
            return self._json(standin.charges.fail_refund(self.state, self._get("refund", refund_id), failure_reason))

    def set_refund_status(self, refund_id: str, status: str) -> dict:
        """A pending refund moves on (succeeded, failed, canceled)."""
        with self.lock:
            return self._json(standin.charges.set_refund_status(self.state, self._get("refund", refund_id), status))

    def open_dispute(self, payment_intent: str, reason: str = "fraudulent") -> dict:
        """The buyer's bank disputes the payment (a PaymentIntent or a charge id)."""
        with self.lock:
            charge = standin.charges.find_charge(self.state, payment_intent)
            return self._json(standin.charges.open_dispute(self.state, charge, reason))

    def close_dispute(self, dispute_id: str, status: str = "lost") -> dict:
        assert status in ("won", "lost"), status
        with self.lock:
            dispute = self._get("dispute", dispute_id)
            return self._json(standin.charges.close_dispute(self.state, dispute, status == "won"))

    def set_subscription_status(self, sub_id: str, status: str) -> dict:
        """The subscription becomes `status` (active: by fiat, nothing is paid); the same status changes nothing."""
        with self.lock:
            sub = self._get("subscription", sub_id)
            if sub["status"] != status:
                standin.subscriptions.set_status(self.state, sub, status, collect=False)
            return self._json(sub)

    def renew_subscription(self, sub_id: str, paid: bool = True) -> dict:
        """The next period starts: its invoice (paid, with a new PaymentIntent and charge; or, with paid=False,
        open and due) becomes the latest invoice. Returns the subscription."""
        with self.lock:
            sub = self._get("subscription", sub_id)
            standin.subscriptions.renew(self.state, sub, "succeeded" if paid else None)
            return self._json(sub)

    def end_period(self, sub_id: str) -> dict:
        """The clock reaches the period's end: the subscription renews, or ends if set to cancel at period end."""
        with self.lock:
            sub = self._get("subscription", sub_id)
            standin.subscriptions.period_ends(self.state, sub)
            return self._json(sub)

    def change_quantity(self, sub_id: str, quantity: int, proration_behavior: str = "create_prorations") -> dict:
        """The vendor changes the subscription's quantity in the dashboard (customer.subscription.updated; prorations
        as `proration_behavior` says). Returns the subscription."""
        with self.lock:
            sub = self._get("subscription", sub_id)
            standin.subscriptions.change_quantity(self.state, sub, quantity, proration_behavior)
            return self._json(sub)

    def pay_invoice(self, invoice_id: str, out_of_band: bool = False) -> dict:
        """The customer pays the invoice (a PaymentIntent, a charge and an invoice payment), or it is marked
        paid out of band (none of them). A past_due/unpaid subscription whose latest invoice it is turns active."""
        with self.lock:
            invoice = self._get("invoice", invoice_id)
            standin.invoices.pay(self.state, invoice, out_of_band)
            return self._json(invoice)

    def void_invoice(self, invoice_id: str) -> dict:
        with self.lock:
            invoice = self._get("invoice", invoice_id)
            standin.invoices.void(self.state, invoice, drafts_too=True)
            return self._json(invoice)

    def mark_uncollectible(self, invoice_id: str) -> dict:
        with self.lock:
            invoice = self._get("invoice", invoice_id)
            standin.invoices.mark_uncollectible(self.state, invoice)
            return self._json(invoice)

    def make_overdue(self, invoice_id: str, days: int = 1) -> dict:
        """The invoice's due date is `days` days in the past."""
        with self.lock:
            invoice = self._get("invoice", invoice_id)
            standin.invoices.overdue(self.state, invoice, days)
            return self._json(invoice)

    def event(self, kind: str, session_id: str, event_id: str | None = None) -> dict:
        return self.object_event(kind, self._json(self.sessions[session_id]), event_id)

    def object_event(
        self, kind: str, obj: dict, event_id: str | None = None, previous_attributes: dict | None = None
    ) -> dict:
        """An event of any type whose data.object is a snapshot of `obj` (the JSON a helper returned)."""
        data = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(previous_attributes)
        return {
            "id": event_id or "evt_" + secrets.token_hex(10),
            "object": "event",
            "type": kind,
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "livemode": False,
            "data": data,
        }

    def signed(self, event: dict, secret: str | None = None, timestamp: int | None = None) -> tuple[bytes, dict]:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret or self.config["stripe_webhook_secret"], timestamp
        )
        return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


class Ltiaas:
    """LTIaaS for the tests: the local stand-in (paygate.standins.ltiaas_api) behind `responses`, with a state of
    its own. Its attributes (registrations, platforms, complete_calls, complete_failures, get_failure, delays,
    probe ...) are that state's; `add` and `calls_for` are its methods."""

    _STATE = (
        "registrations",
        "platforms",
        "complete_calls",
        "complete_bodies",
        "platform_calls",
        "get_failure",
        "complete_failures",
        "complete_delay",
        "activation_failures",
        "activation_delay",
        "probe",
        "add",
        "calls_for",
        "lock",
    )

    def __init__(self, rsps: responses.RequestsMock, config: dict):
        state = ltiaas_api.State(config["ltiaas_api_key"])
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "base", config["ltiaas_url"])
        app = Flask(__name__)
        app.testing = True  # a scripted exception reaches the caller, as a dropped connection would
        bp = Blueprint("ltiaas", __name__)
        ltiaas_api.register(bp, state, config["public_url"])
        app.register_blueprint(bp)
        object.__setattr__(self, "client", app.test_client())
        base = re.escape(self.base)
        rsps.add_callback("GET", re.compile(base + r"/api/registrations/[^/]+$"), self._forward)
        rsps.add_callback("POST", re.compile(base + r"/api/registrations/[^/]+/complete$"), self._forward)
        rsps.add_callback(
            "POST", re.compile(base + r"/(admin|api)/platforms/[^/]+/(activate|deactivate)$"), self._forward
        )

    def __getattr__(self, name):
        if name in Ltiaas._STATE:
            return getattr(self.state, name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in Ltiaas._STATE:
            setattr(self.state, name, value)
        else:
            object.__setattr__(self, name, value)

    @property
    def key(self) -> str:
        """The API key LTIaaS accepts (set another to make it refuse ours)."""
        return self.state.api_key

    @key.setter
    def key(self, value: str) -> None:
        self.state.api_key = value

    def _forward(self, request):
        return forward(self.client, "/ltiaas" + urlparse(request.url).path[len(urlparse(self.base).path) :], request)


def forward(client, path: str, request) -> tuple[int, dict, bytes]:
    """Answer a `responses` request with a stand-in's answer to it at `path` (query kept)."""
    query = urlparse(request.url).query
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    answer = client.open(
        path + ("?" + query if query else ""), method=request.method, headers=headers, data=request.body or b""
    )
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
    return answer.status_code, kept, answer.get_data()
