"""Stateful fakes of Stripe and LTIaaS behind `responses`, speaking their wire formats."""
import json
import re
import secrets
import threading
import time
from urllib.parse import parse_qsl, urlparse

import responses
import stripe

STRIPE = "https://api.stripe.com"
CLOSE_HTML = "<script>(window.opener || window.parent).postMessage({subject:'org.imsglobal.lti.close'}, '*');</script>"


def _form(body) -> dict:
    """Stripe's form encoding (a[b][0][c]=v) as a flat dict of bracketed keys."""
    if isinstance(body, bytes):
        body = body.decode()
    return dict(parse_qsl(body or "", keep_blank_values=True))


class Stripe:
    def __init__(self, rsps: responses.RequestsMock, config: dict, amount: int = 4900, currency: str = "usd"):
        self.config = config
        self.lock = threading.Lock()
        self.price = {"id": config["stripe_price_id"], "object": "price", "active": True, "currency": currency,
                      "unit_amount": amount, "type": "one_time", "recurring": None, "product": "prod_tool"}
        self.sessions: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[dict, dict]] = {}
        self.calls: list[tuple[str, str]] = []
        # HTTP statuses (or exceptions) for the next creations. Like Stripe, a 5xx is kept under its
        # idempotency key and replayed; a 429 or a request that never arrived is not.
        self.fail_next_create: list = []
        self.refunds: dict[str, dict] = {}
        self.fail_next_refund: list[int] = []  # statuses; a 5xx is kept under its key, as Stripe does
        self.probe = None  # called with the call's name while the service waits on Stripe
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/prices/[^/?]+"), self._price)
        rsps.add_callback("POST", STRIPE + "/v1/checkout/sessions", self._create)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/checkout/sessions/[^/?]+(\?.*)?$"), self._retrieve)
        rsps.add_callback("GET", re.compile(STRIPE + r"/v1/checkout/sessions(\?.*)?$"), self._list)
        rsps.add_callback("POST", STRIPE + "/v1/refunds", self._refund)

    def _authorized(self, request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.config['stripe_secret_key']}"

    @staticmethod
    def _error(status, message, code=None, kind="invalid_request_error"):
        return status, {}, json.dumps({"error": {"type": kind, "message": message, "code": code}})

    def _price(self, request):
        self.probe and self.probe("price")
        self.calls.append(("price", request.url))
        if not self._authorized(request):
            return self._error(401, "Invalid API Key provided")
        price_id = urlparse(request.url).path.rsplit("/", 1)[1]
        if price_id != self.price["id"]:
            return self._error(404, "No such price", "resource_missing")
        body = dict(self.price)
        if "product" in urlparse(request.url).query:
            body["product"] = {"id": "prod_tool", "object": "product", "name": "Tool registration"}
        return 200, {}, json.dumps(body)

    def _create(self, request):
        self.probe and self.probe("create")
        form = _form(request.body)
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            self.calls.append(("create", key))
            if key in self.idempotency:
                first_form, first_body = self.idempotency[key]
                if first_form != form:
                    return self._error(400, "Keys for idempotent requests can only be used with the same "
                                            "parameters they were first used with.", kind="idempotency_error")
                if "error" in first_body:
                    return 500, {"Idempotent-Replayed": "true"}, json.dumps(first_body)
                return 200, {"Idempotent-Replayed": "true"}, json.dumps(first_body)
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
            session_id = "cs_test_" + secrets.token_hex(12)
            session = {
                "id": session_id, "object": "checkout.session", "status": "open", "payment_status": "unpaid",
                "mode": form.get("mode"), "ui_mode": form.get("ui_mode"),
                "client_reference_id": form.get("client_reference_id"),
                "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "amount_total": self.price["unit_amount"], "currency": self.price["currency"],
                "payment_intent": None, "customer_details": None, "created": int(time.time()),
                "expires_at": int(form["expires_at"]), "success_url": form.get("success_url"),
                "cancel_url": form.get("cancel_url"), "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                "_price": form.get("line_items[0][price]"), "_form": form,
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

    def _refund(self, request):
        self.probe and self.probe("refund")
        form = _form(request.body)
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            self.calls.append(("refund", key))
            if key in self.refunds:
                kept = self.refunds[key]
                return (500 if "error" in kept else 200), {"Idempotent-Replayed": "true"}, json.dumps(kept)
            if self.fail_next_refund:
                status, headers, body = self._error(self.fail_next_refund.pop(0), "Stripe is having trouble",
                                                    kind="api_error")
                self.refunds[key] = json.loads(body)
                return status, headers, body
            pi = form.get("payment_intent")
            session = next((s for s in self.sessions.values() if s["payment_intent"] == pi), None)
            if session is None:
                return self._error(404, "No such payment_intent", "resource_missing")
            if any(r.get("payment_intent") == pi for r in self.refunds.values()):
                return self._error(400, "Charge has already been refunded.", "charge_already_refunded")
            refund = {"id": "re_" + secrets.token_hex(8), "object": "refund", "amount": session["amount_total"],
                      "currency": session["currency"], "payment_intent": pi, "status": "succeeded", "metadata": {}}
            self.refunds[key] = refund
        return 200, {}, json.dumps(refund)

    # What a person or Stripe does, outside the service.
    def pay(self, session_id: str, email: str = "admin@school.example", payment_status: str = "paid") -> dict:
        with self.lock:
            session = self.sessions[session_id]
            session.update(status="complete", payment_status=payment_status,
                           payment_intent=session["payment_intent"] or "pi_" + secrets.token_hex(10),
                           customer_details={"email": email, "name": "A. Admin"})
            return self._public(session)

    def expire(self, session_id: str) -> dict:
        with self.lock:
            self.sessions[session_id]["status"] = "expired"
            return self._public(self.sessions[session_id])

    def only_session(self) -> dict:
        assert len(self.sessions) == 1, f"expected one Checkout Session, found {len(self.sessions)}"
        return next(iter(self.sessions.values()))

    def event(self, kind: str, session_id: str, event_id: str | None = None) -> dict:
        return {"id": event_id or "evt_" + secrets.token_hex(10), "object": "event", "type": kind,
                "api_version": stripe.api_version, "created": int(time.time()), "livemode": False,
                "data": {"object": self._public(self.sessions[session_id])}}

    def signed(self, event: dict, secret: str | None = None, timestamp: int | None = None) -> tuple[bytes, dict]:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret or self.config["stripe_webhook_secret"], timestamp)
        return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


class Ltiaas:
    def __init__(self, rsps: responses.RequestsMock, config: dict):
        self.base = config["ltiaas_url"]
        self.key = config["ltiaas_api_key"]
        self.lock = threading.Lock()
        self.registrations: dict[str, dict] = {}
        self.complete_calls: list[str] = []
        self.complete_bodies: list[dict] = []
        self.complete_delay = 0.0
        self.get_failure: int | None = None  # an HTTP status for every registration lookup
        self.complete_failures: list = []  # statuses, or exceptions to raise, for the next calls
        self.platforms: dict[str, dict] = {}
        self.platform_calls: list[tuple[str, str]] = []
        self.probe = None  # called with the call's name while the service waits on LTIaaS
        rsps.add_callback("GET", re.compile(re.escape(self.base) + r"/api/registrations/[^/]+$"), self._get)
        rsps.add_callback("POST", re.compile(re.escape(self.base) + r"/api/registrations/[^/]+/complete$"),
                          self._complete)
        rsps.add_callback("POST", re.compile(re.escape(self.base) + r"/(admin|api)/platforms/[^/]+/(activate|deactivate)$"),
                          self._activation)

    def add(self, registration_id: str | None = None, family: str = "canvas",
            url: str = "https://canvas.instructure.com", version: str = "cloud") -> str:
        registration_id = registration_id or secrets.token_urlsafe(12)
        self.registrations[registration_id] = {
            "url": url, "familyCode": family, "version": version,
            "supportedScopes": ["openid", "https://purl.imsglobal.org/spec/lti-ags/scope/score"],
            "supportedMessages": [{"type": "LtiResourceLinkRequest"},
                                  {"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"]}],
        }
        return registration_id

    def _unauthorized(self, request):
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return 401, {}, json.dumps({"status": 401, "error": "Unauthorized", "details": {
                "message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"}})
        return None

    @staticmethod
    def _not_found():
        return 404, {}, json.dumps({"status": 404, "error": "Not Found",
                                    "details": {"message": "REGISTRATION_NOT_FOUND"}})

    def _get(self, request):
        self.probe and self.probe("get")
        denied = self._unauthorized(request)
        if denied:
            return denied
        if self.get_failure:
            return self.get_failure, {}, json.dumps({"status": self.get_failure, "error": "Failure", "details": {}})
        registration_id = urlparse(request.url).path.rsplit("/", 1)[1]
        found = self.registrations.get(registration_id)
        return (200, {}, json.dumps(found)) if found else self._not_found()

    def _complete(self, request):
        self.probe and self.probe("complete")
        denied = self._unauthorized(request)
        if denied:
            return denied
        registration_id = urlparse(request.url).path.split("/")[-2]
        with self.lock:
            self.complete_calls.append(registration_id)
            self.complete_bodies.append(json.loads(request.body or b"{}"))
            failure = self.complete_failures.pop(0) if self.complete_failures else None
        if self.complete_delay:
            time.sleep(self.complete_delay)
        if isinstance(failure, BaseException):
            raise failure
        if isinstance(failure, int):
            return failure, {}, json.dumps({"status": failure, "error": "Failure", "details": {}})
        with self.lock:
            if self.registrations.pop(registration_id, None) is None:
                return self._not_found()
            platform_id = "P" + secrets.token_hex(9)
            self.platforms[platform_id] = {"id": platform_id, "active": True}
        return 200, {}, json.dumps({"platformId": platform_id, "html": CLOSE_HTML})

    def _activation(self, request):
        self.probe and self.probe("activation")
        denied = self._unauthorized(request)
        if denied:
            return denied
        parts = urlparse(request.url).path.split("/")
        self.platform_calls.append((parts[-1], parts[-2]))
        if parts[-2] not in self.platforms:
            return self._not_found()
        self.platforms[parts[-2]]["active"] = parts[-1] == "activate"
        return 200, {}, "{}"
