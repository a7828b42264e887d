"""Fakes behind `responses`: LTIaaS is the local stand-in; Stripe is still a wire-format fake of its own."""
import copy
import functools
import json
import re
import secrets
import threading
import time
from urllib.parse import parse_qsl, unquote, urlparse

import responses
import stripe
from flask import Blueprint, Flask

from paygate.standins import ltiaas_api
from paygate.standins.ltiaas_api import CLOSE_HTML
from paygate.standins.stripe import checkout

STRIPE = "https://api.stripe.com"
__all__ = ["CLOSE_HTML", "STRIPE", "Ltiaas", "Stripe"]


_INTERVAL_DAYS = {"year": 365, "month": 30, "week": 7, "day": 1}
_REPLAYED = {"Idempotent-Replayed": "true"}
_SAME_PARAMS = "Keys for idempotent requests can only be used with the same parameters they were first used with."


def _form(body) -> dict:
    """Stripe's form encoding (a[b][0][c]=v) as a flat dict of bracketed keys."""
    if isinstance(body, bytes):
        body = body.decode()
    return dict(parse_qsl(body or "", keep_blank_values=True))


def _query(request) -> list[tuple[str, str]]:
    return parse_qsl(unquote(urlparse(request.url).query), keep_blank_values=True)


def _expansions(request) -> set[str]:
    """`expand[]=a&expand[0]=b&expand=c` → {"a", "b", "c"}."""
    return {v for k, v in _query(request) if k == "expand" or k.startswith("expand[")}


def _sub(form: dict, prefix: str) -> dict:
    """`metadata[k]=v` (prefix "metadata") → {"k": "v"}; one level only."""
    start = prefix + "["
    return {k[len(start):-1]: v for k, v in form.items()
            if k.startswith(start) and k.endswith("]") and "[" not in k[len(start):-1]}


def _rows(form: dict, prefix: str) -> list[dict] | None:
    """`custom_fields[0][name]=a&custom_fields[0][value]=b` → [{"name": "a", "value": "b"}]; None if absent."""
    rows: dict[int, dict] = {}
    pattern = re.compile(re.escape(prefix) + r"\[(\d+)\]\[([^\]]+)\]$")
    for k, v in form.items():
        m = pattern.match(k)
        if m:
            rows.setdefault(int(m.group(1)), {})[m.group(2)] = v
    if not rows:
        return [] if form.get(prefix) == "" else None  # `custom_fields=` empties the list
    return [rows[i] for i in sorted(rows)]


def _plain(obj: dict) -> dict:
    """A deep copy without the fake's own bookkeeping (keys starting with `_`)."""
    return copy.deepcopy({k: v for k, v in obj.items() if not k.startswith("_")})


# Checkout's `locale` values (Stripe's documented list), as the stand-in knows them.
CHECKOUT_LOCALES = set(checkout.LOCALES)


class Stripe:
    """Stripe's API for the calls the service makes, with state, idempotency and failure injection.

    Besides the Checkout flow: prices (one-time or recurring, with currency_options), customers,
    invoices and invoice items, subscriptions, payment intents, charges, refunds and disputes, plus
    helpers for what a person or Stripe does outside the service (dashboard refunds, disputes,
    renewals, overdue invoices...). Every helper returns the object's current JSON; `object_event`
    wraps any such JSON in an event for `signed`.
    """

    def __init__(self, rsps: responses.RequestsMock, config: dict, amount: int = 4900, currency: str = "usd"):
        self.config = config
        self.lock = threading.Lock()
        self.price = {"id": config["stripe_price_id"], "object": "price", "active": True, "currency": currency,
                      "unit_amount": amount, "type": "one_time", "recurring": None, "product": "prod_tool"}
        self.product = {"id": "prod_tool", "object": "product", "name": "Tool registration",
                        "description": "One LTI tool registration for one LMS", "active": True,
                        "livemode": False, "metadata": {}}
        self.currency_options: dict[str, int] = {}  # other currencies of the Price: {"eur": 4500}
        self.sessions: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[dict, dict]] = {}
        self.calls: list[tuple[str, str]] = []
        # HTTP statuses (or exceptions) for the next creations. Like Stripe, a 5xx is kept under its
        # idempotency key and replayed; a 429 or a request that never arrived is not.
        self.fail_next_create: list = []
        self.refunds: dict[str, dict] = {}  # idempotency key → the answer given (replayed as is)
        self.fail_next_refund: list[int] = []  # statuses; a 5xx is kept under its key, as Stripe does
        self.probe = None  # called with the call's name while the service waits on Stripe
        # Billing objects by id.
        self.customers: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.invoice_items: dict[str, dict] = {}
        self.payment_intents: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}
        self.refund_objects: dict[str, dict] = {}  # refund id → current refund (API and dashboard ones)
        self.disputes: dict[str, dict] = {}
        self.sent_invoices: list[str] = []  # invoice ids, once per effective /send
        self.refund_status = "succeeded"  # status of refunds created through the API
        # Failure injection by operation name ("customer_create", "retrieve_invoice", ...): statuses
        # (or exceptions to raise), one popped per call. A 5xx is kept under the idempotency key.
        self.fail_next: dict[str, list] = {}
        self._replays: dict[str, tuple[str, dict, int, str]] = {}  # key → (endpoint, form, status, body)
        self._invoice_numbers = 0

        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/prices/[^/?]+"), self._price)
        rsps.add_callback("POST", STRIPE + "/v1/checkout/sessions", self._create)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/checkout/sessions/[^/?]+(\?.*)?$"), self._retrieve)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/checkout/sessions(\?.*)?$"), self._list)
        rsps.add_callback("POST", STRIPE + "/v1/refunds", self._refund)

        def get(path, op, render, expandable=()):
            rsps.add_callback("GET", re.compile(STRIPE + path + r"/([^/?]+)(\?.*)?$"),
                              lambda request: self._read(request, op, render, set(expandable)))

        get("/v1/subscriptions", "retrieve_subscription", self._subscription_json,
            ("latest_invoice", "latest_invoice.payments", "customer"))
        get("/v1/invoices", "retrieve_invoice", self._invoice_json, ("payments", "customer"))
        get("/v1/payment_intents", "retrieve_payment_intent", self._payment_intent_json, ("latest_charge",))
        get("/v1/charges", "retrieve_charge", self._charge_json)
        get("/v1/refunds", "retrieve_refund", self._refund_json)
        get("/v1/disputes", "retrieve_dispute", self._dispute_json)
        get("/v1/customers", "retrieve_customer", self._customer_json)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/disputes(\?.*)?$"), self._list_disputes)
        for path, op, store, render, keys in (
                ("/v1/customers", "list_customers", "customers", self._customer_json, ("email",)),
                ("/v1/invoices", "list_invoices", "invoices", self._invoice_json, ("customer", "status")),
                ("/v1/subscriptions", "list_subscriptions", "subscriptions", self._subscription_json,
                 ("customer",)),
                ("/v1/refunds", "list_refunds", "refund_objects", self._refund_json, ("payment_intent", "charge"))):
            rsps.add_callback("GET", re.compile(STRIPE + path + r"(\?.*)?$"),
                              functools.partial(self._list_objects, op, store, render, keys))

        def write(method, path, op, handler):
            rsps.add_callback(method, re.compile(STRIPE + path + r"(\?.*)?$"),
                              lambda request: self._write(request, op, handler))

        write("POST", "/v1/customers", "customer_create", self._create_customer)
        write("POST", "/v1/invoices", "invoice_create", self._create_invoice)
        write("POST", "/v1/invoiceitems", "invoiceitem_create", self._create_invoice_item)
        write("POST", r"/v1/invoices/[^/?]+/finalize", "invoice_finalize", self._finalize_invoice)
        write("POST", r"/v1/invoices/[^/?]+/send", "invoice_send", self._send_invoice)
        write("POST", "/v1/subscriptions", "subscription_create", self._create_subscription)
        write("DELETE", r"/v1/subscriptions/[^/?]+", "subscription_cancel", self._cancel_subscription)
        write("POST", r"/v1/checkout/sessions/[^/?]+/expire", "session_expire", self._expire_session)

    def _authorized(self, request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.config['stripe_secret_key']}"

    @staticmethod
    def _error(status, message, code=None, kind="invalid_request_error", param=None):
        error = {"type": kind, "message": message, "code": code}
        if param is not None:
            error["param"] = param
        return status, {}, json.dumps({"error": error})

    def _missing(self, kind: str, object_id: str, param: str = "id"):
        return self._error(404, f"No such {kind}: '{object_id}'", "resource_missing", param=param)

    def _injected(self, op: str):
        """The error answer for an injected failure of `op`, or None. Call with the lock held."""
        queue = self.fail_next.get(op)
        if not queue:
            return None
        failure = queue.pop(0)
        if isinstance(failure, BaseException):
            raise failure
        if failure == 404:
            return self._error(404, "No such object", "resource_missing", param="id")
        if failure == 429:
            return self._error(429, "Too many requests", "rate_limit", kind="invalid_request_error")
        if failure < 500:
            return self._error(failure, "Stripe refused the request", kind="invalid_request_error")
        return self._error(failure, "Stripe is having trouble", kind="api_error")

    # ---------------------------------------------------------------------------------------------
    # Prices

    def _price_json(self, expand=()) -> dict:
        body = dict(self.price)
        if "product" in expand and body.get("product") == self.product["id"]:
            body["product"] = dict(self.product)
        if "currency_options" in expand:
            options = {self.price["currency"]: self.price["unit_amount"], **self.currency_options}
            body["currency_options"] = {
                currency: {"unit_amount": amount, "unit_amount_decimal": str(amount), "tax_behavior": "unspecified",
                           "custom_unit_amount": None, "tiers": None}
                for currency, amount in options.items()}
        return body

    def _price(self, request):
        self.probe and self.probe("price")
        self.calls.append(("price", request.url))
        if not self._authorized(request):
            return self._error(401, "Invalid API Key provided")
        price_id = urlparse(request.url).path.rsplit("/", 1)[1]
        with self.lock:
            failed = self._injected("retrieve_price")
            if failed:
                return failed
            if price_id != self.price["id"]:
                return self._error(404, "No such price", "resource_missing")
            return 200, {}, json.dumps(self._price_json(_expansions(request)))

    def set_price(self, recurring: str | None = None, currency_options: dict | None = None, active: bool = True,
                  amount: int | None = None) -> dict:
        """Reconfigure the Price: one-time or recurring ("year", "month"), other currencies ({"eur": 4500}),
        archived (active=False), another unit amount. Returns the Price with its expansions."""
        with self.lock:
            self.price.update(
                active=active, type="recurring" if recurring else "one_time",
                recurring={"interval": recurring, "interval_count": 1, "usage_type": "licensed", "meter": None,
                           "trial_period_days": None} if recurring else None)
            if amount is not None:
                self.price["unit_amount"] = amount
            self.currency_options = {k.lower(): v for k, v in (currency_options or {}).items()
                                     if k.lower() != self.price["currency"]}
            return self._price_json({"product", "currency_options"})

    def _amount_in(self, currency: str) -> int | None:
        if currency == self.price["currency"]:
            return self.price["unit_amount"]
        return self.currency_options.get(currency)

    def _period_seconds(self) -> int:
        recurring = self.price.get("recurring") or {}
        return _INTERVAL_DAYS.get(recurring.get("interval"), 365) * int(recurring.get("interval_count") or 1) * 86400

    # ---------------------------------------------------------------------------------------------
    # Checkout Sessions

    def _create(self, request):
        self.probe and self.probe("create")
        form = _form(request.body)
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            self.calls.append(("create", key))
            if key in self.idempotency:
                first_form, first_body = self.idempotency[key]
                if first_form != form:
                    return self._error(400, _SAME_PARAMS, kind="idempotency_error")
                if "error" in first_body:
                    return 500, dict(_REPLAYED), json.dumps(first_body)
                return 200, dict(_REPLAYED), json.dumps(first_body)
            if self.fail_next_create:
                failure = self.fail_next_create.pop(0)
                if isinstance(failure, BaseException):
                    raise failure
                status, headers, body = self._error(failure, "Stripe is having trouble", kind="api_error")
                if failure >= 500:
                    self.idempotency[key] = (form, json.loads(body))
                return status, headers, body
            expires_in = int(form["expires_at"]) - time.time()
            if not 30 * 60 - 5 <= expires_in <= 24 * 3600:
                return self._error(400, "The `expires_at` timestamp must be between 30 minutes and 24 hours "
                                        "after Checkout Session creation.", "parameter_invalid_integer")
            mode = form.get("mode")
            if form.get("locale") is not None and form["locale"] not in CHECKOUT_LOCALES:
                return self._error(400, "Invalid locale", "parameter_invalid_string", param="locale")
            if form.get("line_items[0][price]") == self.price["id"]:
                recurring = self.price["type"] == "recurring"
                if mode == "payment" and recurring:
                    return self._error(400, "You specified `payment` mode but passed a recurring price. Either "
                                            "switch to `subscription` mode or use only one-time prices.",
                                       param="line_items[0][price]")
                if mode == "subscription" and not recurring:
                    return self._error(400, "You specified `subscription` mode but did not pass any recurring "
                                            "prices.", param="line_items[0][price]")
                if not self.price["active"]:
                    return self._error(400, "The price specified is inactive. This field only accepts active prices.",
                                       param="line_items[0][price]")
            if mode == "subscription" and any(k.startswith("payment_intent_data") for k in form):
                return self._error(400, "You can not pass `payment_intent_data` in `subscription` mode.",
                                   param="payment_intent_data")
            session_id = "cs_test_" + secrets.token_hex(12)
            session = {
                "id": session_id, "object": "checkout.session", "status": "open", "payment_status": "unpaid",
                "mode": mode, "ui_mode": form.get("ui_mode"),
                "client_reference_id": form.get("client_reference_id"),
                "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "amount_total": self.price["unit_amount"], "currency": self.price["currency"],
                "payment_intent": None, "customer_details": None, "created": int(time.time()),
                "expires_at": int(form["expires_at"]), "success_url": form.get("success_url"),
                "cancel_url": form.get("cancel_url"), "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                "customer": form.get("customer"), "subscription": None, "invoice": None,
                "locale": form.get("locale"), "_price": form.get("line_items[0][price]"), "_form": form,
            }
            self.sessions[session_id] = session
            body = self._public(session)
            self.idempotency[key] = (form, body)
        return 200, {}, json.dumps(body)

    def _public(self, session: dict, expand_line_items: bool = False) -> dict:
        body = {k: v for k, v in session.items() if not k.startswith("_")}
        if expand_line_items:
            price = dict(self.price, id=session["_price"])
            body["line_items"] = {"object": "list", "has_more": False, "url": "/v1/line_items", "data": [
                {"id": "li_1", "object": "item", "price": price, "quantity": 1,
                 "amount_total": session["amount_total"], "currency": session["currency"]}]}
        return body

    def _retrieve(self, request):
        self.probe and self.probe("retrieve")
        session_id = urlparse(request.url).path.rsplit("/", 1)[1]
        with self.lock:
            self.calls.append(("retrieve", session_id))
            session = self.sessions.get(session_id)
            if session is None:
                return self._error(404, f"No such checkout.session: '{session_id}'", "resource_missing")
            return 200, {}, json.dumps(self._public(session, "line_items" in urlparse(request.url).query))

    def _list(self, request):
        self.probe and self.probe("list")
        query = dict(parse_qsl(urlparse(request.url).query))
        with self.lock:
            self.calls.append(("list", request.url))
            items = sorted(self.sessions.values(), key=lambda s: (s["created"], s["id"]), reverse=True)
            gte = int(query.get("created[gte]", 0))
            items = [s for s in items if s["created"] >= gte]
            if "starting_after" in query:
                ids = [s["id"] for s in items]
                items = items[ids.index(query["starting_after"]) + 1:]
            limit = int(query.get("limit", 10))
            page, more = items[:limit], len(items) > limit
            data = [self._public(s, "line_items" in urlparse(request.url).query) for s in page]
        return 200, {}, json.dumps({"object": "list", "data": data, "has_more": more, "url": "/v1/checkout/sessions"})

    # ---------------------------------------------------------------------------------------------
    # Refunds

    def _payment_intent(self, pi_id: str) -> dict | None:
        """The PaymentIntent. One of a Checkout Session exists as long as a session names it (tests remove or
        edit sessions to make Stripe forget a payment); a session whose payment_intent was set by hand gets
        its PaymentIntent and charge made here. Call with the lock held."""
        session = next((s for s in self.sessions.values() if s.get("payment_intent") == pi_id), None)
        pi = self.payment_intents.get(pi_id)
        if pi is not None and pi.get("_session") and session is None:
            return None
        if pi is None and session is not None:
            pi = self._new_payment(session.get("amount_total") or 0, session.get("currency") or "usd",
                                   session.get("customer"), pi_id=pi_id, session_id=session["id"])
        return pi

    def _charge_of(self, reference: str) -> dict | None:
        """The charge of a PaymentIntent (or a charge id). Call with the lock held."""
        if reference in self.charges:
            return self.charges[reference]
        pi = self._payment_intent(reference)
        return self.charges.get(pi["latest_charge"]) if pi else None

    def _new_refund(self, charge: dict, amount: int, status: str, metadata=None, reason=None) -> dict:
        refund = {"id": "re_" + secrets.token_hex(8), "object": "refund", "amount": amount,
                  "currency": charge["currency"], "charge": charge["id"], "payment_intent": charge["payment_intent"],
                  "status": status, "failure_reason": None, "reason": reason, "metadata": dict(metadata or {}),
                  "created": int(time.time()), "livemode": False}
        if status not in ("failed", "canceled"):
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self.refund_objects[refund["id"]] = refund
        return refund

    def _refund(self, request):
        self.probe and self.probe("refund")
        form = _form(request.body)
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            self.calls.append(("refund", key))
            if key in self.refunds:
                kept = self.refunds[key]
                return (500 if "error" in kept else 200), dict(_REPLAYED), json.dumps(kept)
            if self.fail_next_refund:
                status, headers, body = self._error(self.fail_next_refund.pop(0), "Stripe is having trouble",
                                                    kind="api_error")
                self.refunds[key] = json.loads(body)
                return status, headers, body
            if form.get("charge"):
                charge = self.charges.get(form["charge"])
                if charge is None:
                    return self._missing("charge", form["charge"], "charge")
            elif form.get("payment_intent"):
                charge = self._charge_of(form["payment_intent"])
                if charge is None:
                    return self._error(404, "No such payment_intent", "resource_missing")
            else:
                return self._error(400, "One of `charge` or `payment_intent` is required.", "parameter_missing")
            if charge["refunded"] or charge["amount_refunded"] >= charge["amount"]:
                return self._error(400, f"Charge {charge['id']} has already been refunded.",
                                   "charge_already_refunded")
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = int(form["amount"]) if form.get("amount") else remaining
            if amount <= 0:
                return self._error(400, "Invalid positive integer", "parameter_invalid_integer", param="amount")
            if amount > remaining:
                return self._error(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                                        f"({remaining})", "amount_too_large", param="amount")
            refund = self._new_refund(charge, amount, self.refund_status, _sub(form, "metadata"), form.get("reason"))
            body = _plain(refund)
            self.refunds[key] = body
        return 200, {}, json.dumps(body)

    # ---------------------------------------------------------------------------------------------
    # Reads

    def _read(self, request, op: str, render, expandable: set):
        self.probe and self.probe(op)
        object_id = urlparse(request.url).path.rsplit("/", 1)[1]
        expand = _expansions(request)
        with self.lock:
            self.calls.append((op, object_id))
            if not self._authorized(request):
                return self._error(401, "Invalid API Key provided")
            failed = self._injected(op)
            if failed:
                return failed
            unknown = sorted(expand - expandable)
            if unknown:
                return self._error(400, f"This property cannot be expanded ({unknown[0]}). (The test fake expands "
                                        f"only: {sorted(expandable) or 'nothing'}.)", param="expand")
            body = render(object_id, expand)
            if body is None:
                return self._missing(op.split("_", 1)[1], object_id)
            return 200, {}, json.dumps(body)

    def _customer_json(self, customer_id: str, expand=()) -> dict | None:
        customer = self.customers.get(customer_id)
        return _plain(customer) if customer else None

    def _invoice_json(self, invoice_id: str, expand=()) -> dict | None:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return None
        body = _plain(invoice)
        if "payments" in expand:
            body["payments"] = {"object": "list", "has_more": False, "url": "/v1/invoice_payments",
                                "data": copy.deepcopy(invoice["_payments"])}
        if "customer" in expand and body.get("customer") in self.customers:
            body["customer"] = self._customer_json(body["customer"])
        return body

    def _subscription_json(self, subscription_id: str, expand=()) -> dict | None:
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            return None
        body = _plain(sub)
        if ("latest_invoice" in expand or "latest_invoice.payments" in expand) and body["latest_invoice"]:
            body["latest_invoice"] = self._invoice_json(
                body["latest_invoice"], {"payments"} if "latest_invoice.payments" in expand else set())
        if "customer" in expand and body.get("customer") in self.customers:
            body["customer"] = self._customer_json(body["customer"])
        return body

    def _payment_intent_json(self, pi_id: str, expand=()) -> dict | None:
        pi = self._payment_intent(pi_id)
        if pi is None:
            return None
        body = _plain(pi)
        if "latest_charge" in expand and body["latest_charge"]:
            body["latest_charge"] = self._charge_json(body["latest_charge"])
        return body

    def _charge_json(self, charge_id: str, expand=()) -> dict | None:
        charge = self.charges.get(charge_id)
        return _plain(charge) if charge else None

    def _refund_json(self, refund_id: str, expand=()) -> dict | None:
        refund = self.refund_objects.get(refund_id)
        return _plain(refund) if refund else None

    def _dispute_json(self, dispute_id: str, expand=()) -> dict | None:
        dispute = self.disputes.get(dispute_id)
        return _plain(dispute) if dispute else None

    def _list_objects(self, op: str, store: str, render, keys: tuple, request):
        """A list endpoint filtered by equality on `keys` (customers by email, invoices by customer...)."""
        self.probe and self.probe(op)
        query = dict(_query(request))
        with self.lock:
            self.calls.append((op, request.url))
            if not self._authorized(request):
                return self._error(401, "Invalid API Key provided")
            failed = self._injected(op)
            if failed:
                return failed
            items = sorted(getattr(self, store).values(), key=lambda o: (o["created"], o["id"]), reverse=True)
            for key in keys:
                if query.get(key):
                    items = [o for o in items if o.get(key) == query[key]]
            limit = int(query.get("limit", 10))
            data = [render(o["id"]) for o in items[:limit]]
            return 200, {}, json.dumps({"object": "list", "data": data, "has_more": len(items) > limit,
                                        "url": urlparse(request.url).path})

    def _list_disputes(self, request):
        self.probe and self.probe("list_disputes")
        query = dict(_query(request))
        with self.lock:
            self.calls.append(("list_disputes", request.url))
            if not self._authorized(request):
                return self._error(401, "Invalid API Key provided")
            failed = self._injected("list_disputes")
            if failed:
                return failed
            items = sorted(self.disputes.values(), key=lambda d: (d["created"], d["id"]), reverse=True)
            if query.get("payment_intent"):
                items = [d for d in items if d["payment_intent"] == query["payment_intent"]]
            if query.get("charge"):
                items = [d for d in items if d["charge"] == query["charge"]]
            if query.get("starting_after"):
                ids = [d["id"] for d in items]
                items = items[ids.index(query["starting_after"]) + 1:] if query["starting_after"] in ids else []
            limit = int(query.get("limit", 10))
            data = [_plain(d) for d in items[:limit]]
            return 200, {}, json.dumps({"object": "list", "data": data, "has_more": len(items) > limit,
                                        "url": "/v1/disputes"})

    # ---------------------------------------------------------------------------------------------
    # Writes

    def _write(self, request, op: str, handler):
        self.probe and self.probe(op)
        url = urlparse(request.url)
        form = _form(request.body) if request.method == "POST" else dict(_query(request))
        key = request.headers.get("Idempotency-Key")
        endpoint = f"{request.method} {url.path}"
        with self.lock:
            self.calls.append((op, key))
            if not self._authorized(request):
                return self._error(401, "Invalid API Key provided")
            if key is not None:
                if key in self._replays:
                    first_endpoint, first_form, status, body = self._replays[key]
                    if first_endpoint != endpoint:
                        return self._error(400, "Keys for idempotent requests can only be used for the same "
                                                f"endpoint they were first used for ('{first_endpoint}' vs "
                                                f"'{endpoint}').", kind="idempotency_error")
                    if first_form != form:
                        return self._error(400, _SAME_PARAMS, kind="idempotency_error")
                    return status, dict(_REPLAYED), body
                if key in self.idempotency or key in self.refunds:
                    return self._error(400, "Keys for idempotent requests can only be used for the same endpoint "
                                            "they were first used for.", kind="idempotency_error")
            failed = self._injected(op)
            if failed:
                if failed[0] >= 500 and key is not None:
                    self._replays[key] = (endpoint, form, failed[0], failed[2])
                return failed
            segments = url.path.strip("/").split("/")[1:]  # without "v1"
            if segments[0] == "checkout":
                segments = segments[1:]
            path_id = segments[1] if len(segments) > 1 else None
            result = handler(form, path_id)
            if not isinstance(result, dict):  # an error answer: not kept, as for a validation failure
                return result
            body = json.dumps(result)
            if key is not None:
                self._replays[key] = (endpoint, form, 200, body)
            return 200, {}, body

    def _customer_or_error(self, customer_id):
        if not customer_id:
            return None, self._error(400, "Missing required param: customer.", "parameter_missing", param="customer")
        if customer_id not in self.customers:
            return None, self._missing("customer", customer_id, "customer")
        return self.customers[customer_id], None

    def _create_customer(self, form, _):
        fields = _rows(form, "invoice_settings[custom_fields]")
        customer = self._new_customer(form.get("email"), form.get("name"), _sub(form, "metadata"), fields)
        return _plain(customer)

    def _create_invoice(self, form, _):
        customer, error = self._customer_or_error(form.get("customer"))
        if error:
            return error
        method = form.get("collection_method", "charge_automatically")
        if method == "send_invoice" and not (form.get("days_until_due") or form.get("due_date")):
            return self._error(400, "Invoices with `collection_method=send_invoice` require `days_until_due` "
                                    "or `due_date`.", "parameter_missing", param="days_until_due")
        fields = _rows(form, "custom_fields")
        if fields is not None and (len(fields) > 4 or any(len(f.get("name", "")) > 40 or
                                                          len(f.get("value", "")) > 140 for f in fields)):
            return self._error(400, "Invalid custom_fields: at most 4, names up to 40 and values up to 140 "
                                    "characters.", "parameter_invalid_string", param="custom_fields")
        invoice = self._new_invoice(
            customer, (form.get("currency") or self.price["currency"]).lower(), method,
            days_until_due=int(form["days_until_due"]) if form.get("days_until_due") else None,
            metadata=_sub(form, "metadata"), custom_fields=fields,
            auto_advance=form.get("auto_advance", "true") == "true")
        if form.get("due_date"):
            invoice["_due_date"] = int(form["due_date"])
        if form.get("description"):
            invoice["description"] = form["description"]
        if form.get("pending_invoice_items_behavior") == "include":
            for item in self.invoice_items.values():
                if item["customer"] == customer["id"] and item["invoice"] is None:
                    item["invoice"] = invoice["id"]
                    self._add_line(invoice, item["amount"], item["currency"], item["pricing"]["price_details"]["price"])
        return self._invoice_json(invoice["id"])

    def _create_invoice_item(self, form, _):
        customer, error = self._customer_or_error(form.get("customer"))
        if error:
            return error
        if "price" in form:
            return self._error(400, "Received unknown parameter: price. Did you mean pricing?", "parameter_unknown",
                               param="price")
        invoice = None
        if form.get("invoice"):
            invoice = self.invoices.get(form["invoice"])
            if invoice is None:
                return self._missing("invoice", form["invoice"], "invoice")
            if invoice["status"] != "draft":
                return self._error(400, "You can only add invoice items to draft invoices.", param="invoice")
        currency = invoice["currency"] if invoice else (form.get("currency") or self.price["currency"]).lower()
        price_id = form.get("pricing[price]")
        if price_id:
            if price_id != self.price["id"]:
                return self._missing("price", price_id, "pricing[price]")
            unit = self._amount_in(currency)
            if unit is None:
                return self._error(400, f"The price `{price_id}` has no `{currency}` currency option.",
                                   param="pricing[price]")
        elif form.get("amount"):
            unit = int(form["amount"])
        else:
            return self._error(400, "Missing required param: pricing[price] or amount.", "parameter_missing",
                               param="pricing")
        quantity = int(form.get("quantity") or 1)
        item = {"id": "ii_" + secrets.token_hex(8), "object": "invoiceitem", "customer": customer["id"],
                "invoice": invoice["id"] if invoice else None, "amount": unit * quantity, "currency": currency,
                "quantity": quantity, "description": form.get("description") or self.product["name"],
                "pricing": {"type": "price_details", "unit_amount_decimal": str(unit),
                            "price_details": {"price": price_id, "product": self.product["id"]} if price_id else None},
                "metadata": _sub(form, "metadata"), "date": int(time.time()), "livemode": False,
                "parent": None, "period": {"start": int(time.time()), "end": int(time.time())}}
        self.invoice_items[item["id"]] = item
        if invoice:
            self._add_line(invoice, item["amount"], currency, price_id, description=item["description"])
        return _plain(item)

    def _finalize_invoice(self, form, invoice_id):
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return self._missing("invoice", invoice_id)
        if invoice["status"] != "draft":
            return self._error(400, "This invoice is already finalized, you can't re-finalize a non-draft "
                                    "invoice.", "invoice_not_editable")
        if "auto_advance" in form:
            invoice["auto_advance"] = form["auto_advance"] == "true"
        self._finalize(invoice)
        return self._invoice_json(invoice_id)

    def _send_invoice(self, form, invoice_id):
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return self._missing("invoice", invoice_id)
        if invoice["collection_method"] != "send_invoice":
            return self._error(400, "You can only manually send an invoice if its collection method is "
                                    "'send_invoice'.", "invoice_not_editable")
        if invoice["status"] != "open":
            return self._error(400, f"You can only send an open invoice; this one is {invoice['status']}.",
                               "invoice_not_editable")
        invoice["_sent"] += 1
        self.sent_invoices.append(invoice_id)
        return self._invoice_json(invoice_id)

    def _create_subscription(self, form, _):
        customer, error = self._customer_or_error(form.get("customer"))
        if error:
            return error
        price_id = form.get("items[0][price]")
        if price_id != self.price["id"]:
            return self._missing("price", price_id, "items[0][price]")
        if self.price["type"] != "recurring":
            return self._error(400, "The price specified is set to `type=one_time` but this field only accepts "
                                    "prices with `type=recurring`.", param="items[0][price]")
        if not self.price["active"]:
            return self._error(400, "The price specified is inactive. This field only accepts active prices.",
                               param="items[0][price]")
        method = form.get("collection_method", "charge_automatically")
        if method == "send_invoice" and not form.get("days_until_due"):
            return self._error(400, "`days_until_due` is required when `collection_method` is `send_invoice`.",
                               "parameter_missing", param="days_until_due")
        currency = (form.get("currency") or self.price["currency"]).lower()
        amount = self._amount_in(currency)
        if amount is None:
            return self._error(400, f"The price `{price_id}` has no `{currency}` currency option.", param="currency")
        sub = self._new_subscription(customer["id"], currency, _sub(form, "metadata"), method,
                                     int(form["days_until_due"]) if form.get("days_until_due") else None)
        invoice = self._subscription_invoice(sub, amount, "subscription_create")
        if method == "charge_automatically":
            self._finalize(invoice)
            self._mark_paid(invoice)
        return self._subscription_json(sub["id"])

    def _expire_session(self, form, session_id):
        session = self.sessions.get(session_id)
        if session is None:
            return self._error(404, f"No such checkout.session: '{session_id}'", "resource_missing", param="session")
        if session["status"] != "open":
            return self._error(400, 'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
                                    f'Session has a status of "{session["status"]}".')
        session["status"] = "expired"
        return self._public(session)

    def _cancel_subscription(self, form, subscription_id):
        sub = self.subscriptions.get(subscription_id)
        if sub is None or sub["status"] == "canceled":
            return self._missing("subscription", subscription_id)
        self._cancel(sub)
        return self._subscription_json(subscription_id)

    # ---------------------------------------------------------------------------------------------
    # Object makers (call with the lock held)

    def _new_customer(self, email=None, name=None, metadata=None, custom_fields=None, customer_id=None) -> dict:
        customer = {"id": customer_id or "cus_" + secrets.token_hex(7), "object": "customer", "email": email,
                    "name": name, "metadata": dict(metadata or {}), "created": int(time.time()), "livemode": False,
                    "invoice_settings": {"custom_fields": custom_fields, "default_payment_method": None,
                                         "footer": None, "rendering_options": None}}
        self.customers[customer["id"]] = customer
        return customer

    def _new_payment(self, amount: int, currency: str, customer=None, metadata=None, succeeded=True,
                     pi_id=None, session_id=None) -> dict:
        now = int(time.time())
        pi_id = pi_id or "pi_" + secrets.token_hex(10)
        charge = {"id": "ch_" + secrets.token_hex(10), "object": "charge", "amount": amount,
                  "amount_captured": amount if succeeded else 0, "amount_refunded": 0, "refunded": False,
                  "currency": currency, "payment_intent": pi_id, "customer": customer,
                  "status": "succeeded" if succeeded else "pending", "paid": succeeded, "captured": succeeded,
                  "disputed": False, "failure_code": None, "failure_message": None,
                  "metadata": dict(metadata or {}), "created": now, "livemode": False}
        pi = {"id": pi_id, "object": "payment_intent", "status": "succeeded" if succeeded else "processing",
              "amount": amount, "amount_received": amount if succeeded else 0, "currency": currency,
              "customer": customer, "metadata": dict(metadata or {}), "latest_charge": charge["id"],
              "created": now, "livemode": False, "_session": session_id}
        self.charges[charge["id"]] = charge
        self.payment_intents[pi_id] = pi
        return pi

    def _succeed_payment(self, pi: dict) -> None:
        pi.update(status="succeeded", amount_received=pi["amount"])
        charge = self.charges[pi["latest_charge"]]
        charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])

    def _new_invoice(self, customer: dict, currency: str, collection_method: str, days_until_due=None,
                     metadata=None, custom_fields=None, parent=None, auto_advance=False,
                     billing_reason="manual") -> dict:
        now = int(time.time())
        if custom_fields is None:
            custom_fields = copy.deepcopy(customer["invoice_settings"].get("custom_fields"))
        invoice = {"id": "in_" + secrets.token_hex(10), "object": "invoice", "number": None, "status": "draft",
                   "customer": customer["id"], "customer_email": customer.get("email"),
                   "customer_name": customer.get("name"), "collection_method": collection_method,
                   "due_date": None, "amount_due": 0, "amount_paid": 0, "amount_remaining": 0, "total": 0,
                   "subtotal": 0, "currency": currency, "hosted_invoice_url": None, "invoice_pdf": None,
                   "metadata": dict(metadata or {}), "custom_fields": custom_fields or None, "parent": parent,
                   "auto_advance": auto_advance, "billing_reason": billing_reason, "description": None,
                   "attempt_count": 0, "attempted": False, "paid_out_of_band": False,
                   "period_start": now, "period_end": now, "created": now, "livemode": False,
                   "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None,
                                          "marked_uncollectible_at": None},
                   "lines": {"object": "list", "has_more": False, "total_count": 0, "data": [],
                             "url": "/v1/invoices/lines"},
                   "_days_until_due": days_until_due, "_due_date": None, "_payments": [], "_sent": 0}
        self.invoices[invoice["id"]] = invoice
        return invoice

    def _add_line(self, invoice: dict, amount: int, currency: str, price_id=None, period=None, description=None):
        invoice["currency"] = currency
        line = {"id": "il_" + secrets.token_hex(8), "object": "line_item", "amount": amount, "currency": currency,
                "description": description or self.product["name"], "quantity": 1, "invoice": invoice["id"],
                "period": period or {"start": invoice["created"], "end": invoice["created"]},
                "pricing": {"type": "price_details", "unit_amount_decimal": str(amount),
                            "price_details": {"price": price_id, "product": self.product["id"]} if price_id else None},
                "metadata": {}, "livemode": False}
        lines = invoice["lines"]
        lines["data"].append(line)
        lines["total_count"] = len(lines["data"])
        for field in ("amount_due", "total", "subtotal"):
            invoice[field] += amount
        if invoice["status"] != "draft":
            invoice["amount_remaining"] += amount

    def _finalize(self, invoice: dict) -> None:
        now = int(time.time())
        self._invoice_numbers += 1
        invoice.update(status="open", number=f"INV-{self._invoice_numbers:04d}",
                       hosted_invoice_url=f"https://invoice.stripe.test/i/{invoice['id']}",
                       invoice_pdf=f"https://pay.stripe.test/invoice/{invoice['id']}/pdf",
                       amount_remaining=invoice["amount_due"] - invoice["amount_paid"])
        invoice["status_transitions"]["finalized_at"] = now
        if invoice["collection_method"] == "send_invoice":
            invoice["due_date"] = invoice["_due_date"] or now + int(invoice["_days_until_due"] or 0) * 86400
        if invoice["amount_due"] == 0:  # Stripe marks an invoice with nothing to pay as paid
            invoice.update(status="paid", amount_remaining=0)
            invoice["status_transitions"]["paid_at"] = now

    def _mark_paid(self, invoice: dict, out_of_band: bool = False) -> None:
        now = int(time.time())
        if invoice["status"] == "draft":
            self._finalize(invoice)
        amount = invoice["amount_due"] - invoice["amount_paid"]
        if not out_of_band and amount > 0:
            pi = self._new_payment(amount, invoice["currency"], invoice["customer"])
            invoice["_payments"].append({
                "id": "inpay_" + secrets.token_hex(8), "object": "invoice_payment", "invoice": invoice["id"],
                "status": "paid", "amount_paid": amount, "amount_requested": amount,
                "currency": invoice["currency"], "is_default": not invoice["_payments"],
                "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                "status_transitions": {"paid_at": now, "canceled_at": None}, "created": now, "livemode": False})
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0,
                       paid_out_of_band=out_of_band, attempted=True,
                       attempt_count=invoice["attempt_count"] + (0 if out_of_band else 1))
        invoice["status_transitions"]["paid_at"] = now
        sub = self.subscriptions.get(((invoice.get("parent") or {}).get("subscription_details") or {})
                                     .get("subscription"))
        if sub and sub["latest_invoice"] == invoice["id"] and sub["status"] in ("incomplete", "past_due", "unpaid"):
            sub["status"] = "active"

    def _new_subscription(self, customer_id: str, currency: str, metadata: dict, collection_method: str,
                          days_until_due=None) -> dict:
        now = int(time.time())
        sub_id = "sub_" + secrets.token_hex(10)
        sub = {"id": sub_id, "object": "subscription", "status": "active", "customer": customer_id,
               "collection_method": collection_method, "days_until_due": days_until_due,
               "metadata": dict(metadata or {}), "cancel_at_period_end": False, "cancel_at": None,
               "canceled_at": None, "ended_at": None, "currency": currency, "latest_invoice": None,
               "start_date": now, "billing_cycle_anchor": now, "default_payment_method": None,
               "created": now, "livemode": False,
               "items": {"object": "list", "has_more": False, "total_count": 1,
                         "url": f"/v1/subscription_items?subscription={sub_id}",
                         "data": [{"id": "si_" + secrets.token_hex(8), "object": "subscription_item",
                                   "subscription": sub_id, "price": self._price_json(), "quantity": 1,
                                   "current_period_start": now, "current_period_end": now + self._period_seconds(),
                                   "metadata": {}, "created": now}]}}
        self.subscriptions[sub_id] = sub
        return sub

    def _subscription_invoice(self, sub: dict, amount: int, billing_reason: str) -> dict:
        """A draft invoice for the subscription's current period; it becomes the latest invoice."""
        item = sub["items"]["data"][0]
        invoice = self._new_invoice(
            self.customers[sub["customer"]], sub["currency"], sub["collection_method"],
            days_until_due=sub["days_until_due"], billing_reason=billing_reason,
            parent={"type": "subscription_details", "quote_details": None,
                    "subscription_details": {"subscription": sub["id"], "metadata": dict(sub["metadata"])}})
        invoice.update(period_start=item["current_period_start"], period_end=item["current_period_end"])
        self._add_line(invoice, amount, sub["currency"], item["price"]["id"],
                       period={"start": item["current_period_start"], "end": item["current_period_end"]})
        sub["latest_invoice"] = invoice["id"]
        return invoice

    def _cancel(self, sub: dict) -> None:
        now = int(time.time())
        sub.update(status="canceled", canceled_at=sub["canceled_at"] or now, ended_at=sub["ended_at"] or now)

    def _get(self, store: dict, kind: str, object_id: str) -> dict:
        if object_id not in store:
            raise KeyError(f"the fake has no {kind} {object_id!r}")
        return store[object_id]

    # ---------------------------------------------------------------------------------------------
    # What a person or Stripe does, outside the service.

    def pay(self, session_id: str, email: str = "admin@school.example", payment_status: str = "paid",
            currency: str | None = None) -> dict:
        """The buyer completes Checkout. `currency` picks one of the Price's currency_options."""
        with self.lock:
            session = self.sessions[session_id]
            if currency and currency.lower() != session.get("currency"):
                amount = self._amount_in(currency.lower())
                if amount is None:
                    raise ValueError(f"the price has no {currency!r} currency option")
                session.update(amount_total=amount, currency=currency.lower())
            paid = payment_status != "unpaid"
            details = {"email": email, "name": "A. Admin"}
            if session.get("mode") == "subscription":
                self._pay_subscription_session(session, email, paid)
                session.update(status="complete", payment_status=payment_status, payment_intent=None,
                               customer_details=details)
                return self._public(session)
            session.update(status="complete", payment_status=payment_status,
                           payment_intent=session["payment_intent"] or "pi_" + secrets.token_hex(10),
                           customer_details=details)
            pi = self.payment_intents.get(session["payment_intent"])
            if pi is None:
                form = session.get("_form") or {}
                self._new_payment(session.get("amount_total") or 0, session.get("currency") or "usd",
                                  session.get("customer"), _sub(form, "payment_intent_data[metadata]"),
                                  succeeded=paid, pi_id=session["payment_intent"], session_id=session_id)
            elif paid and pi["status"] != "succeeded":
                self._succeed_payment(pi)
            return self._public(session)

    def _pay_subscription_session(self, session: dict, email: str, paid: bool) -> None:
        if session.get("subscription") in self.subscriptions:  # a second pay(): a delayed payment succeeds
            invoice = self.invoices[session["invoice"]]
            if paid and invoice["status"] != "paid":
                pi_ids = [p["payment"]["payment_intent"] for p in invoice["_payments"]]
                for pi_id in pi_ids:
                    self._succeed_payment(self.payment_intents[pi_id])
                for payment in invoice["_payments"]:
                    payment["status"] = "paid"
                invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
                invoice["status_transitions"]["paid_at"] = int(time.time())
                self.subscriptions[session["subscription"]]["status"] = "active"
            return
        form = session.get("_form") or {}
        customer = self.customers.get(session.get("customer")) or self._new_customer(email, "A. Admin")
        sub = self._new_subscription(customer["id"], session.get("currency") or self.price["currency"],
                                     _sub(form, "subscription_data[metadata]"), "charge_automatically")
        invoice = self._subscription_invoice(sub, session.get("amount_total") or 0, "subscription_create")
        self._finalize(invoice)
        if paid:
            self._mark_paid(invoice)
        else:  # a delayed method: the payment is processing, the subscription incomplete
            pi = self._new_payment(invoice["amount_due"], invoice["currency"], customer["id"], succeeded=False)
            invoice["_payments"].append({
                "id": "inpay_" + secrets.token_hex(8), "object": "invoice_payment", "invoice": invoice["id"],
                "status": "open", "amount_paid": None, "amount_requested": invoice["amount_due"],
                "currency": invoice["currency"], "is_default": True,
                "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                "status_transitions": {"paid_at": None, "canceled_at": None}, "created": int(time.time()),
                "livemode": False})
            sub["status"] = "incomplete"
        session.update(customer=customer["id"], subscription=sub["id"], invoice=invoice["id"])

    def expire(self, session_id: str) -> dict:
        with self.lock:
            self.sessions[session_id]["status"] = "expired"
            return self._public(self.sessions[session_id])

    def only_session(self) -> dict:
        assert len(self.sessions) == 1, f"expected one Checkout Session, found {len(self.sessions)}"
        return next(iter(self.sessions.values()))

    def refund_in_dashboard(self, payment_intent: str, amount: int | None = None, status: str = "succeeded") -> dict:
        """Someone refunds in the Stripe dashboard (a PaymentIntent or a charge id). Returns the refund."""
        with self.lock:
            charge = self._charge_of(payment_intent)
            if charge is None:
                raise KeyError(f"the fake has no payment {payment_intent!r}")
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = remaining if amount is None else amount
            if not 0 < amount <= remaining:
                raise ValueError(f"cannot refund {amount} of a charge with {remaining} left to refund")
            return _plain(self._new_refund(charge, amount, status))

    def fail_refund(self, refund_id: str, failure_reason: str = "expired_or_canceled_card") -> dict:
        """A (pending) refund fails: its amount goes back to the charge."""
        with self.lock:
            refund = self._get(self.refund_objects, "refund", refund_id)
            if refund["status"] not in ("failed", "canceled"):
                charge = self.charges[refund["charge"]]
                charge["amount_refunded"] -= refund["amount"]
                charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            refund.update(status="failed", failure_reason=failure_reason)
            return _plain(refund)

    def set_refund_status(self, refund_id: str, status: str) -> dict:
        """A pending refund moves on (succeeded, canceled...). Use fail_refund for a failure."""
        if status == "failed":
            return self.fail_refund(refund_id)
        with self.lock:
            refund = self._get(self.refund_objects, "refund", refund_id)
            refund["status"] = status
            return _plain(refund)

    def open_dispute(self, payment_intent: str, reason: str = "fraudulent") -> dict:
        """The buyer's bank disputes the payment (a PaymentIntent or a charge id)."""
        with self.lock:
            charge = self._charge_of(payment_intent)
            if charge is None:
                raise KeyError(f"the fake has no payment {payment_intent!r}")
            now = int(time.time())
            dispute = {"id": "dp_" + secrets.token_hex(10), "object": "dispute", "amount": charge["amount"],
                       "currency": charge["currency"], "charge": charge["id"],
                       "payment_intent": charge["payment_intent"], "reason": reason, "status": "needs_response",
                       "is_charge_refundable": False, "metadata": {}, "created": now, "livemode": False,
                       "evidence_details": {"due_by": now + 7 * 86400, "has_evidence": False, "past_due": False,
                                            "submission_count": 0}}
            charge["disputed"] = True
            self.disputes[dispute["id"]] = dispute
            return _plain(dispute)

    def close_dispute(self, dispute_id: str, status: str = "lost") -> dict:
        assert status in ("won", "lost"), status
        with self.lock:
            dispute = self._get(self.disputes, "dispute", dispute_id)
            dispute["status"] = status
            return _plain(dispute)

    def set_subscription_status(self, sub_id: str, status: str) -> dict:
        with self.lock:
            sub = self._get(self.subscriptions, "subscription", sub_id)
            if status == "canceled":
                self._cancel(sub)
            else:
                sub["status"] = status
            return self._subscription_json(sub_id)

    def renew_subscription(self, sub_id: str, paid: bool = True) -> dict:
        """The next period starts: its invoice (paid, with a new PaymentIntent and charge; or, with paid=False,
        open and due) becomes the latest invoice. Returns the subscription."""
        with self.lock:
            sub = self._get(self.subscriptions, "subscription", sub_id)
            item = sub["items"]["data"][0]
            start = item["current_period_end"]
            item.update(current_period_start=start, current_period_end=start + self._period_seconds())
            amount = self._amount_in(sub["currency"])
            invoice = self._subscription_invoice(sub, item["price"]["unit_amount"] if amount is None else amount,
                                                 "subscription_cycle")
            self._finalize(invoice)
            if paid:
                self._mark_paid(invoice)
                sub["status"] = "active"
            return self._subscription_json(sub_id)

    def pay_invoice(self, invoice_id: str, out_of_band: bool = False) -> dict:
        """The customer pays the invoice (a PaymentIntent, a charge and an invoice payment), or it is marked
        paid out of band (none of them). A past_due/unpaid subscription whose latest invoice it is turns active."""
        with self.lock:
            invoice = self._get(self.invoices, "invoice", invoice_id)
            self._mark_paid(invoice, out_of_band)
            return self._invoice_json(invoice_id)

    def void_invoice(self, invoice_id: str) -> dict:
        with self.lock:
            invoice = self._get(self.invoices, "invoice", invoice_id)
            invoice.update(status="void", amount_remaining=0)
            invoice["status_transitions"]["voided_at"] = int(time.time())
            return self._invoice_json(invoice_id)

    def mark_uncollectible(self, invoice_id: str) -> dict:
        with self.lock:
            invoice = self._get(self.invoices, "invoice", invoice_id)
            invoice["status"] = "uncollectible"
            invoice["status_transitions"]["marked_uncollectible_at"] = int(time.time())
            return self._invoice_json(invoice_id)

    def make_overdue(self, invoice_id: str, days: int = 1) -> dict:
        """The invoice's due date is `days` days in the past."""
        with self.lock:
            invoice = self._get(self.invoices, "invoice", invoice_id)
            invoice["due_date"] = int(time.time()) - days * 86400
            return self._invoice_json(invoice_id)

    def event(self, kind: str, session_id: str, event_id: str | None = None) -> dict:
        return {"id": event_id or "evt_" + secrets.token_hex(10), "object": "event", "type": kind,
                "api_version": stripe.api_version, "created": int(time.time()), "livemode": False,
                "data": {"object": self._public(self.sessions[session_id])}}

    def object_event(self, kind: str, obj: dict, event_id: str | None = None,
                     previous_attributes: dict | None = None) -> dict:
        """An event of any type whose data.object is a snapshot of `obj` (the JSON a helper returned)."""
        data = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(previous_attributes)
        return {"id": event_id or "evt_" + secrets.token_hex(10), "object": "event", "type": kind,
                "api_version": stripe.api_version, "created": int(time.time()), "livemode": False, "data": data}

    def signed(self, event: dict, secret: str | None = None, timestamp: int | None = None) -> tuple[bytes, dict]:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret or self.config["stripe_webhook_secret"], timestamp)
        return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


class Ltiaas:
    """LTIaaS for the tests: the local stand-in (paygate.standins.ltiaas_api) behind `responses`, with a state of
    its own. Its attributes (registrations, platforms, complete_calls, complete_failures, get_failure, delays,
    probe ...) are that state's; `add` and `calls_for` are its methods."""

    _STATE = ("registrations", "platforms", "complete_calls", "complete_bodies", "platform_calls", "get_failure",
              "complete_failures", "complete_delay", "activation_failures", "activation_delay", "probe", "add",
              "calls_for", "lock")

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
        rsps.add_callback("POST", re.compile(base + r"/(admin|api)/platforms/[^/]+/(activate|deactivate)$"),
                          self._forward)

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
        return forward(self.client, "/ltiaas" + urlparse(request.url).path[len(urlparse(self.base).path):], request)


def forward(client, path: str, request) -> tuple[int, dict, bytes]:
    """Answer a `responses` request with a stand-in's answer to it at `path` (query kept)."""
    query = urlparse(request.url).query
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    answer = client.open(path + ("?" + query if query else ""), method=request.method, headers=headers,
                         data=request.body or b"")
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
    return answer.status_code, kept, answer.get_data()
