"""Local Stripe stand-in: the v1 calls the service makes, in Stripe's wire format, plus a hosted Checkout page.

The real `stripe` library talks to it (STRIPE_API_BASE={PUBLIC_URL}/_local/stripe): form-encoded requests with
bracket keys, JSON objects with "object" fields, Stripe's error objects, idempotency keys and signed webhooks.
"""
import functools
import hmac
import itertools
import json
import logging
import re
import secrets
import string
import threading
import time

import requests
import stripe
from flask import Response, redirect, render_template_string, request

log = logging.getLogger(__name__)

UNIT_AMOUNT = 4900
CURRENCY = "usd"
PRODUCT = {"id": "prod_local", "object": "product", "active": True, "name": "Tool registration"}
UI_MODES = ("hosted_page", "embedded_page", "elements", "form")  # names since API version 2026-03-25
MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 3600
CLOCK_SLACK = 10  # seconds: the caller computed expires_at a moment before we read the clock

_lock = threading.RLock()
_sessions: dict[str, dict] = {}          # id -> {"session": public fields, "line_items": [...], "seq": n}
_payment_intents: dict[str, dict] = {}
_refunds: dict[str, dict] = {}
_idempotency: dict[str, tuple] = {}      # key -> (fingerprint, status, body text)
_events: list[dict] = []                 # every event sent, newest last, for tests and debugging
_seq = itertools.count()
_settings = None                         # of the newest blueprint, for send_event() callers without their own


def reset() -> None:
    with _lock:
        for store in (_sessions, _payment_intents, _refunds, _idempotency):
            store.clear()
        _events.clear()


def _rand(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


class StripeFail(Exception):
    """An API error, answered as Stripe's {"error": {...}} object."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def response(self) -> Response:
        error = {"type": self.kind, "message": self.message, "code": self.code}
        if self.param:
            error["param"] = self.param
        return _raw(json.dumps({"error": error}, indent=2), self.status)


def _raw(text: str, status: int = 200, replayed: bool = False) -> Response:
    headers = {"Request-Id": "req_" + _rand(14), "Stripe-Version": stripe.api_version}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(text, status, headers=headers, mimetype="application/json")


def _missing(kind: str, object_id: str, param: str | None = "id", status: int = 404) -> StripeFail:
    return StripeFail(status, f"No such {kind}: '{object_id}'", "resource_missing", param)


def decode_form(pairs) -> dict:
    """Stripe's bracket notation (a[b][0][c]=v, a[]=v) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not match:
            raise StripeFail(400, f"Invalid parameter name: {key}", "parameter_unknown", key)
        parts = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node = root
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                raise StripeFail(400, f"Invalid parameter: {key}", "parameter_invalid", key)
            part = part or str(len(node))  # a[] appends
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node, name: str = ""):
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    # metadata keys are the caller's own and may well be digits
    if out and name != "metadata" and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _int(value, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeFail(400, f"Invalid integer: {value}", "parameter_invalid_integer", param) from None


def _expand(params: dict) -> set:
    value = params.get("expand", [])
    return set(value if isinstance(value, list) else [value])


def _metadata(value, param: str = "metadata") -> dict:
    if value in (None, ""):  # "" unsets, as in Stripe
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StripeFail(400, "Invalid object", "parameter_invalid", param)
    return value


def _price_json(settings, price_id: str, param: str = "id", status: int = 404, expand_product: bool = False):
    if price_id != settings.stripe_price_id:
        raise _missing("price", price_id, param, status)
    return {"id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit", "created": 1700000000,
            "currency": CURRENCY, "livemode": False, "lookup_key": None, "metadata": {}, "nickname": None,
            "product": dict(PRODUCT) if expand_product else PRODUCT["id"], "recurring": None, "type": "one_time",
            "unit_amount": UNIT_AMOUNT, "unit_amount_decimal": str(UNIT_AMOUNT)}


def _session_json(record: dict, line_items: bool = False) -> dict:
    body = json.loads(json.dumps(record["session"]))  # a copy the caller may not mutate into our state
    if line_items:
        sid = body["id"]
        body["line_items"] = {"object": "list", "data": record["line_items"], "has_more": False,
                              "url": f"/v1/checkout/sessions/{sid}/line_items"}
    return body


def _find(session_id: str, settings) -> dict:
    record = _sessions.get(session_id)
    if record is None:
        raise _missing("checkout.session", session_id, "session")
    _refresh(record, settings)
    return record


def _refresh(record: dict, settings) -> None:
    """Expire an open session whose time is up, as Stripe does on its own."""
    session = record["session"]
    if session["status"] == "open" and time.time() >= session["expires_at"]:
        session["status"] = "expired"
        send_event("checkout.session.expired", _session_json(record), settings)


def send_event(event_type: str, obj: dict, settings=None) -> dict:
    """Sign and POST an event to {public_url}/webhooks/stripe in a background thread; return the event."""
    settings = settings or _settings
    event = {"id": "evt_" + _rand(24), "object": "event", "api_version": stripe.api_version,
             "created": int(time.time()), "type": event_type, "livemode": False, "pending_webhooks": 1,
             "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}
    payload = json.dumps(event, indent=2)
    signature = stripe.WebhookSignature.generate_signature_header(payload, settings.stripe_webhook_secret)
    url = settings.public_url.rstrip("/") + "/webhooks/stripe"
    with _lock:
        _events.append(event)
    threading.Thread(target=_deliver, args=(url, payload, signature, event), daemon=True,
                     name=f"stripe-standin-{event['id']}").start()
    return event


def _deliver(url: str, payload: str, signature: str, event: dict) -> None:
    # Stripe answers nobody's redirects and waits at most a few seconds; so do we.
    try:
        response = requests.post(url, data=payload.encode("utf-8"), timeout=10, allow_redirects=False, headers={
            "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
        if response.status_code >= 300:
            log.warning("local Stripe: %s %s got HTTP %s from the webhook", event["type"], event["id"],
                        response.status_code)
    except requests.RequestException as exc:
        log.warning("local Stripe: %s %s not delivered: %s", event["type"], event["id"], type(exc).__name__)


CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local Stripe stand-in — Checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}#amount{font-size:2rem;margin:.5rem 0}
button{margin:.5rem .5rem 0 0;padding:.5rem 1rem}</style></head><body>
<p class="banner"><strong>Local Stripe stand-in — no real payment</strong></p>
<h1>{{ product }}</h1>
<p id="amount">{{ amount }}</p>
<p>Session <code>{{ s.id }}</code>: <span id="status">{{ s.status }}</span>,
  <span id="payment-status">{{ s.payment_status }}</span></p>
{% if s.status == "open" %}
<form method="post" action="{{ page }}/pay">
  <p><label>Email <input type="email" id="email" name="email" value="{{ s.customer_email or 'admin@school.example' }}"
     required></label></p>
  <button id="pay" name="method" value="card">Pay</button>
  <button id="pay-delayed" name="method" value="delayed">Pay by bank transfer (delayed)</button>
</form>
{% elif pending %}
<form method="post" action="{{ page }}/settle">
  <p>The bank transfer is pending.</p>
  <button id="settle-succeeded" name="outcome" value="succeeded">Transfer arrives</button>
  <button id="settle-failed" name="outcome" value="failed">Transfer fails</button>
</form>
{% endif %}
{% if s.cancel_url %}<p><a id="back" href="{{ s.cancel_url }}">Back</a></p>{% endif %}
</body></html>"""


def register(bp, settings) -> None:
    """Add the Stripe routes (/_local/stripe/...) to `bp`."""
    global _settings
    _settings = settings
    base = settings.public_url.rstrip("/")
    expected = f"Bearer {settings.stripe_secret_key}".encode()

    def api(fn):
        """Auth, parameter decoding, one lock around the whole call, idempotent replays, error objects."""
        @functools.wraps(fn)
        def view(**kwargs):
            try:
                if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
                    raise StripeFail(401, "Invalid API Key provided.")
                pairs = list((request.form if request.method == "POST" else request.args).items(multi=True))
                params = decode_form(pairs)
                key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
                with _lock:
                    if key:
                        if len(key) > 255:
                            raise StripeFail(400, "Idempotency keys are at most 255 characters long.",
                                             param="Idempotency-Key")
                        fingerprint = (request.path, sorted(pairs))
                        seen = _idempotency.get(key)
                        if seen and seen[0] != fingerprint:
                            raise StripeFail(400, "Keys for idempotent requests can only be used with the same "
                                             "parameters they were first used with. Try using a key other than "
                                             f"'{key}' if you meant to execute a different request.",
                                             kind="idempotency_error")
                        if seen:
                            return _raw(seen[2], seen[1], replayed=True)
                    text = json.dumps(fn(params, **kwargs), indent=2)
                    if key:  # like Stripe, only requests that ran are remembered; failed validation is not
                        _idempotency[key] = (fingerprint, 200, text)
                    return _raw(text)
            except StripeFail as exc:
                return exc.response()
        return view

    @bp.get("/stripe/v1/prices/<price_id>")
    @api
    def stripe_price(params, price_id):
        return _price_json(settings, price_id, expand_product="product" in _expand(params))

    @bp.post("/stripe/v1/checkout/sessions")
    @api
    def stripe_session_create(params):
        for required in ("mode", "line_items"):
            if not params.get(required):
                raise StripeFail(400, f"Missing required param: {required}.", "parameter_missing", required)
        if params["mode"] != "payment":
            raise StripeFail(400, f"The local stand-in sells one one-time Price: mode must be payment, "
                                  f"not {params['mode']}.", "parameter_invalid", "mode")
        ui_mode = params.get("ui_mode", "hosted_page")
        if ui_mode not in UI_MODES:
            raise StripeFail(400, f"Invalid ui_mode: must be one of {', '.join(UI_MODES)}",
                             "parameter_invalid_string", "ui_mode")
        now = int(time.time())
        expires_at = _int(params.get("expires_at", now + MAX_EXPIRY), "expires_at")
        if expires_at < now + MIN_EXPIRY - CLOCK_SLACK:
            raise StripeFail(400, "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
                                  "creation.", "parameter_invalid_integer", "expires_at")
        if expires_at > now + MAX_EXPIRY + CLOCK_SLACK:
            raise StripeFail(400, "The `expires_at` timestamp must be less than 24 hours from Checkout Session "
                                  "creation.", "parameter_invalid_integer", "expires_at")
        items = params["line_items"]
        if not isinstance(items, list):
            raise StripeFail(400, "Invalid array", "parameter_invalid", "line_items")
        line_items = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "price" not in item:
                raise StripeFail(400, f"Missing required param: line_items[{i}][price].", "parameter_missing",
                                 f"line_items[{i}][price]")
            price = _price_json(settings, item["price"], f"line_items[{i}][price]", 400)
            quantity = _int(item.get("quantity", 1), f"line_items[{i}][quantity]")
            if quantity < 1:
                raise StripeFail(400, "Quantity must be at least 1.", "parameter_invalid_integer",
                                 f"line_items[{i}][quantity]")
            amount = quantity * price["unit_amount"]
            line_items.append({"id": "li_" + _rand(24), "object": "item", "amount_discount": 0,
                               "amount_subtotal": amount, "amount_tax": 0, "amount_total": amount,
                               "currency": CURRENCY, "description": PRODUCT["name"], "price": price,
                               "quantity": quantity})
        total = sum(item["amount_total"] for item in line_items)
        session_id = "cs_test_" + _rand(58)
        success_url = params.get("success_url")
        if success_url and "%7BCHECKOUT_SESSION_ID%7D" in success_url.upper():
            log.warning("local Stripe: success_url has {CHECKOUT_SESSION_ID} URL-encoded; Stripe will not fill it in")
        session = {
            "id": session_id, "object": "checkout.session", "amount_subtotal": total, "amount_total": total,
            "cancel_url": params.get("cancel_url"), "client_reference_id": params.get("client_reference_id"),
            "created": now, "currency": CURRENCY, "customer": None, "customer_details": None,
            "customer_email": params.get("customer_email"), "expires_at": expires_at, "livemode": False,
            "metadata": _metadata(params.get("metadata")), "mode": "payment", "payment_intent": None,
            "payment_status": "unpaid", "status": "open", "success_url": success_url, "ui_mode": ui_mode,
            "url": f"{base}/_local/stripe/checkout/{session_id}" if ui_mode == "hosted_page" else None,
        }
        pi_data = params.get("payment_intent_data") or {}
        record = {"session": session, "line_items": line_items, "seq": next(_seq),
                  "pi_metadata": _metadata(pi_data.get("metadata") if isinstance(pi_data, dict) else None,
                                           "payment_intent_data[metadata]")}
        _sessions[session_id] = record
        return _session_json(record, "line_items" in _expand(params))

    @bp.get("/stripe/v1/checkout/sessions/<session_id>")
    @api
    def stripe_session_get(params, session_id):
        return _session_json(_find(session_id, settings), "line_items" in _expand(params))

    @bp.get("/stripe/v1/checkout/sessions")
    @api
    def stripe_session_list(params):
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise StripeFail(400, "This value must be between 1 and 100.", "parameter_invalid_integer", "limit")
        records = sorted(_sessions.values(), key=lambda r: (r["session"]["created"], r["seq"]), reverse=True)
        cursor = params.get("starting_after")
        if cursor:
            ids = [r["session"]["id"] for r in records]
            if cursor not in ids:
                raise _missing("checkout.session", cursor, "starting_after", 400)
            records = records[ids.index(cursor) + 1:]
        created = params.get("created")
        bounds = created if isinstance(created, dict) else ({"gte": created, "lte": created} if created else {})
        tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
        for op, limit_value in bounds.items():
            if op not in tests:
                raise StripeFail(400, f"Received unknown parameter: created[{op}]", "parameter_unknown",
                                 f"created[{op}]")
            bound = _int(limit_value, f"created[{op}]")
            records = [r for r in records if tests[op](r["session"]["created"], bound)]
        for record in records[:limit]:
            _refresh(record, settings)
        with_items = "data.line_items" in _expand(params)
        return {"object": "list", "data": [_session_json(r, with_items) for r in records[:limit]],
                "has_more": len(records) > limit, "url": "/v1/checkout/sessions"}

    @bp.post("/stripe/v1/checkout/sessions/<session_id>/expire")
    @api
    def stripe_session_expire(params, session_id):
        record = _find(session_id, settings)
        if record["session"]["status"] != "open":
            raise StripeFail(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
        record["session"]["status"] = "expired"
        body = _session_json(record)
        send_event("checkout.session.expired", body, settings)
        return body

    @bp.post("/stripe/v1/refunds")
    @api
    def stripe_refund(params):
        pi_id = params.get("payment_intent")
        if not pi_id:
            raise StripeFail(400, "The local stand-in refunds by payment_intent only.", "parameter_missing",
                             "payment_intent")
        pi = _payment_intents.get(pi_id)
        if pi is None:
            raise _missing("payment_intent", pi_id, "payment_intent", 400)
        if pi["status"] != "succeeded":
            raise StripeFail(400, f"PaymentIntent {pi_id} has no successful charge to refund (status "
                                  f"{pi['status']}).", "charge_not_refundable", "payment_intent")
        left = pi["amount"] - pi["amount_refunded"]
        if left <= 0:
            raise StripeFail(400, f"Charge {pi['charge']} has already been refunded.", "charge_already_refunded")
        amount = _int(params.get("amount", left), "amount")
        if not 1 <= amount <= left:
            raise StripeFail(400, f"Refund amount ({amount}) must be between 1 and the unrefunded amount on the "
                                  f"charge ({left}).", "amount_too_large", "amount")
        pi["amount_refunded"] += amount
        refund = {"id": "re_" + _rand(24), "object": "refund", "amount": amount, "charge": pi["charge"],
                  "created": int(time.time()), "currency": pi["currency"],
                  "metadata": _metadata(params.get("metadata")), "payment_intent": pi_id,
                  "reason": params.get("reason"), "status": "succeeded"}
        _refunds[refund["id"]] = refund
        return refund

    # The hosted Checkout page: what the admin's popup is sent to (session.url).

    def page(session_id, status=200):
        record = _sessions.get(session_id)
        if record is None:
            return _html("<h1>No such Checkout Session</h1>", 404)
        _refresh(record, settings)
        s = record["session"]
        pi = _payment_intents.get(s["payment_intent"] or "")
        html = render_template_string(
            CHECKOUT_PAGE, s=s, page=f"{base}/_local/stripe/checkout/{session_id}", product=PRODUCT["name"],
            amount=f"{s['amount_total'] / 100:.2f} {s['currency'].upper()}",
            pending=bool(pi and pi["status"] == "processing"))
        return _html(html, status)

    @bp.get("/stripe/checkout/<session_id>")
    def stripe_checkout_page(session_id):
        with _lock:
            return page(session_id)

    @bp.post("/stripe/checkout/<session_id>/pay")
    def stripe_checkout_pay(session_id):
        email = request.form.get("email", "").strip()
        delayed = request.form.get("method") == "delayed"
        with _lock:
            record = _sessions.get(session_id)
            if record is None:
                return page(session_id)
            _refresh(record, settings)
            s = record["session"]
            if s["status"] != "open" or "@" not in email:
                return page(session_id, 400)
            pi_id = "pi_" + _rand(24)
            _payment_intents[pi_id] = {"id": pi_id, "charge": "ch_" + _rand(24), "amount": s["amount_total"],
                                       "currency": s["currency"], "amount_refunded": 0,
                                       "status": "processing" if delayed else "succeeded",
                                       "metadata": record["pi_metadata"], "session": session_id}
            s.update(status="complete", payment_status="unpaid" if delayed else "paid", payment_intent=pi_id,
                     customer_details={"email": email, "name": None, "phone": None, "address": None,
                                       "tax_exempt": "none", "tax_ids": []})
            send_event("checkout.session.completed", _session_json(record), settings)
            target = (s["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", session_id)
        log.info("local Stripe: %s paid (%s)", session_id, "delayed" if delayed else "card")
        return redirect(target, 303) if target else _html("<p>Paid. You may close this window.</p>")

    @bp.post("/stripe/checkout/<session_id>/settle")
    def stripe_checkout_settle(session_id):
        outcome = request.form.get("outcome")
        with _lock:
            record = _sessions.get(session_id)
            pi = record and _payment_intents.get(record["session"]["payment_intent"] or "")
            if not pi or pi["status"] != "processing" or outcome not in ("succeeded", "failed"):
                return _html("<p>No pending bank transfer to settle here.</p>", 400)
            if outcome == "succeeded":
                pi["status"] = "succeeded"
                record["session"]["payment_status"] = "paid"
            else:
                pi["status"] = "requires_payment_method"
            send_event(f"checkout.session.async_payment_{outcome}", _session_json(record), settings)
        return redirect(f"{base}/_local/stripe/checkout/{session_id}", 303)


def _html(body: str, status: int = 200) -> Response:
    # Real Checkout refuses to be framed: so does its stand-in.
    return Response(body, status, mimetype="text/html", headers={
        "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
        "Cache-Control": "no-store"})
