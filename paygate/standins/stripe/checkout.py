"""Checkout Sessions (payment and subscription mode) and the hosted page the admin pays on."""

import copy
import logging
import time

from flask import redirect, render_template_string, request

from paygate.standins.stripe import charges, core, customers, events, invoices, prices, subscriptions

log = logging.getLogger(__name__)

UI_MODES = ("hosted_page", "embedded_page", "elements", "form")  # names since API version 2026-03-25
MODES = ("payment", "subscription")
LOCALES = (
    "auto",
    "bg",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "en-GB",
    "es",
    "es-419",
    "et",
    "fi",
    "fil",
    "fr",
    "fr-CA",
    "hr",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "lt",
    "lv",
    "ms",
    "mt",
    "nb",
    "nl",
    "pl",
    "pt",
    "pt-BR",
    "ro",
    "ru",
    "sk",
    "sl",
    "sv",
    "th",
    "tr",
    "vi",
    "zh",
    "zh-HK",
    "zh-TW",
)
# Without payment_method_types Stripe offers what the account enables: here, a card or a (delayed) bank debit.
DYNAMIC_METHODS = ("card", "us_bank_account")
MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 3600
CLOCK_SLACK = 10  # seconds: the caller computed expires_at a moment before we read the clock

CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local Stripe stand-in — Checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}#amount{font-size:2rem;margin:.5rem 0}
button{margin:.5rem .5rem 0 0;padding:.5rem 1rem}</style></head><body>
<p class="banner"><strong>Local Stripe stand-in — no real payment</strong>
  · <a id="dashboard" href="{{ dashboard }}" target="_blank" rel="noopener">Dashboard</a></p>
<h1>{{ product }}</h1>
{% if description %}<p id="description">{{ description }}</p>{% endif %}
<p>Checkout language (<code>locale</code>): <code id="locale">{{ s.locale or "auto" }}</code>
  (real Checkout speaks it; this stand-in stays in English)</p>
<p id="amount">{{ amount }}{% if interval %} / {{ interval }}{% endif %}</p>
<p>Session <code>{{ s.id }}</code>: <span id="status">{{ s.status }}</span>,
  <span id="payment-status">{{ s.payment_status }}</span></p>
{% if s.status == "open" %}
<form method="post" action="{{ page }}/pay">
  <p><label>Email <input type="email" id="email" name="email" value="{{ s.customer_email or 'admin@school.example' }}"
     required></label></p>
  <p><label>Name on card <input id="name" name="name" value="Alex Admin" maxlength="150"></label></p>
  {% if totals|length > 1 %}
  <p><label>Currency <select id="currency" name="currency">
    {% for currency, total in totals.items() %}
    <option value="{{ currency }}"{% if currency == s.currency %} selected{% endif %}>
      {{ money(total, currency) }}</option>
    {% endfor %}</select></label></p>
  {% endif %}
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


def _include_line_items(body: dict, record: dict, expand: set) -> None:
    if "line_items" in expand:
        body["line_items"] = core.list_of(
            copy.deepcopy(record["_line_items"]), f"/v1/checkout/sessions/{record['id']}/line_items"
        )


core.INCLUDES["checkout.session"] = ("line_items", _include_line_items)


def find(session_id: str, st) -> dict:
    """The session, expired first if its time is up."""
    record = core.get(st, "checkout.session", session_id)
    refresh(record, st)
    return record


def refresh(record: dict, st) -> None:
    """Expire an open session whose time is up, as Stripe does on its own."""
    if record["status"] == "open" and time.time() >= record["expires_at"]:
        record["status"] = "expired"
        events.emit(st, "checkout.session.expired", record)


def _line_items(st, params: dict, mode: str) -> list[tuple[dict, int]]:
    """(price, quantity) of each line item, checked against the mode."""
    items = params["line_items"]
    if not isinstance(items, list):
        raise core.StripeFail(400, "Invalid array", "parameter_invalid", "line_items")
    chosen = []
    for i, item in enumerate(items):
        param = f"line_items[{i}][price]"
        if not isinstance(item, dict) or "price" not in item:
            raise core.StripeFail(400, f"Missing required param: {param}.", "parameter_missing", param)
        price = prices.usable(st, item["price"], param)
        if mode == "payment" and price["type"] == "recurring":
            raise core.StripeFail(
                400,
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                "parameter_invalid",
                param,
            )
        quantity = core.to_int(item.get("quantity", 1), f"line_items[{i}][quantity]")
        if quantity < 1:
            raise core.StripeFail(
                400, "Quantity must be at least 1.", "parameter_invalid_integer", f"line_items[{i}][quantity]"
            )
        chosen.append((price, quantity))
    if mode == "subscription" and [p["type"] for p, _ in chosen] != ["recurring"]:
        raise core.StripeFail(
            400,
            "You must provide one recurring price in `subscription` mode (the local stand-in "
            "sells one per subscription).",
            "parameter_invalid",
            "line_items",
        )
    return chosen


def _line_item(st, price: dict, quantity: int, currency: str) -> dict:
    amount = quantity * prices.amount(price, currency)
    return {
        "id": "li_" + core.rand(24),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": currency,
        "description": prices.product_name(st, price),
        "price": prices.public(st, price),
        "quantity": quantity,
    }


def _mode_data(params: dict, mode: str) -> tuple[dict, dict]:
    """The metadata for the PaymentIntent (payment mode) or the subscription (subscription mode)."""
    found = {}
    for name, its_mode in (("payment_intent_data", "payment"), ("subscription_data", "subscription")):
        data = params.get(name) or {}
        if data and mode != its_mode:
            raise core.StripeFail(400, f"You can not pass `{name}` in `{mode}` mode.", "parameter_invalid", name)
        found[name] = core.metadata(data.get("metadata") if isinstance(data, dict) else None, f"{name}[metadata]")
    return found["payment_intent_data"], found["subscription_data"]


def create(st, params: dict) -> dict:
    """A new open session from the API's parameters."""
    for name in ("mode", "line_items"):
        core.required(params, name)
    mode = params["mode"]
    if mode not in MODES:
        raise core.StripeFail(
            400, f"The local stand-in sells in mode {' or '.join(MODES)}, not {mode}.", "parameter_invalid", "mode"
        )
    ui_mode = params.get("ui_mode", "hosted_page")
    if ui_mode not in UI_MODES:
        raise core.StripeFail(
            400, f"Invalid ui_mode: must be one of {', '.join(UI_MODES)}", "parameter_invalid_string", "ui_mode"
        )
    locale = params.get("locale") or None
    if locale and locale not in LOCALES:
        raise core.StripeFail(
            400, f"Invalid locale: must be one of {', '.join(LOCALES)}", "parameter_invalid_string", "locale"
        )
    methods = core.as_list(params, "payment_method_types")
    customer_creation = params.get("customer_creation") or ("if_required" if mode == "payment" else None)
    if customer_creation not in ("always", "if_required", None) or (customer_creation and mode != "payment"):
        raise core.StripeFail(
            400,
            "customer_creation is always or if_required, in payment mode only.",
            "parameter_invalid",
            "customer_creation",
        )
    ts = core.now()
    expires_at = core.to_int(params.get("expires_at", ts + MAX_EXPIRY), "expires_at")
    if expires_at < ts + MIN_EXPIRY - CLOCK_SLACK:
        raise core.StripeFail(
            400,
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
            "parameter_invalid_integer",
            "expires_at",
        )
    if expires_at > ts + MAX_EXPIRY + CLOCK_SLACK:
        raise core.StripeFail(
            400,
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            "parameter_invalid_integer",
            "expires_at",
        )
    chosen = _line_items(st, params, mode)
    pi_metadata, sub_metadata = _mode_data(params, mode)
    # The currencies every line item can be paid in, each with the session's total in it.
    shared = [c for c in prices.currencies(chosen[0][0]) if all(c in prices.currencies(p) for p, _ in chosen)]
    totals = {c: sum(q * prices.amount(p, c) for p, q in chosen) for c in shared}
    currency = chosen[0][0]["currency"]
    success_url = params.get("success_url")
    if success_url and "%7BCHECKOUT_SESSION_ID%7D" in success_url.upper():
        log.warning("local Stripe: success_url has {CHECKOUT_SESSION_ID} URL-encoded; Stripe will not fill it in")
    record = core.create(
        st,
        "checkout.session",
        "cs_test_",
        58,
        amount_subtotal=totals[currency],
        amount_total=totals[currency],
        cancel_url=params.get("cancel_url"),
        client_reference_id=params.get("client_reference_id"),
        currency=currency,
        customer=None,
        customer_creation=customer_creation,
        customer_details=None,
        customer_email=params.get("customer_email"),
        expires_at=expires_at,
        invoice=None,
        locale=locale,
        metadata=core.metadata(params.get("metadata")),
        mode=mode,
        payment_intent=None,
        payment_method_types=methods or list(DYNAMIC_METHODS),
        payment_status="unpaid",
        status="open",
        subscription=None,
        success_url=success_url,
        ui_mode=ui_mode,
        url=None,
        _line_items=[_line_item(st, p, q, currency) for p, q in chosen],
        _chosen=chosen,
        _totals=totals,
        _pi_metadata=pi_metadata,
        _sub_metadata=sub_metadata,
        _pi=None,
    )
    if ui_mode == "hosted_page":
        record["url"] = f"{st.settings.public_url.rstrip('/')}/_local/stripe/checkout/{record['id']}"
    return record


def _list(st, params: dict) -> dict:
    records = core.newest(st, "checkout.session")
    created = params.get("created")
    bounds = created if isinstance(created, dict) else ({"gte": created, "lte": created} if created else {})
    tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    for op, limit_value in bounds.items():
        if op not in tests:
            raise core.StripeFail(
                400, f"Received unknown parameter: created[{op}]", "parameter_unknown", f"created[{op}]"
            )
        bound = core.to_int(limit_value, f"created[{op}]")
        records = [r for r in records if tests[op](r["created"], bound)]
    for record in records:
        refresh(record, st)
    return core.page(st, "checkout.session", records, params, "/v1/checkout/sessions")


def pay(st, record: dict, email: str, currency: str, delayed: bool, name: str | None = None) -> None:
    """The admin pays: a PaymentIntent (payment mode: a guest, unless the session asked for a customer), or a
    customer, a subscription and its first invoice."""
    if currency != record["currency"]:  # a price's currency_options: the buyer chose another currency
        record.update(
            currency=currency,
            amount_subtotal=record["_totals"][currency],
            amount_total=record["_totals"][currency],
            _line_items=[_line_item(st, p, q, currency) for p, q in record["_chosen"]],
        )
    guest = record["mode"] == "payment" and record.get("customer_creation") != "always"
    customer = None if guest else customers.create(st, email)
    outcome = "processing" if delayed else "succeeded"
    if record["mode"] == "payment":
        names = ", ".join(prices.product_name(st, p) for p, _ in record["_chosen"])
        pi = charges.create_payment(
            st,
            record["amount_total"],
            currency,
            customer and customer["id"],
            email,
            record["_pi_metadata"],
            names,
            outcome,
        )
        pi["_session"] = record["id"]
        record["payment_intent"] = pi["id"]
    else:
        price, quantity = record["_chosen"][0]
        sub = subscriptions.start(st, customer, price, quantity, currency, record["_sub_metadata"], outcome=outcome)
        invoice = core.get(st, "invoice", sub["latest_invoice"])
        pi = core.get(st, "payment_intent", invoice["_payments"][-1]["payment"]["payment_intent"])
        record.update(subscription=sub["id"], invoice=invoice["id"])
    record.update(
        status="complete",
        payment_status="unpaid" if delayed else "paid",
        customer=customer and customer["id"],
        _pi=pi["id"],
        customer_details={
            "address": None,
            "email": email,
            "name": name or None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
    )
    events.emit(st, "checkout.session.completed", record)


def settle(st, record: dict, succeeded: bool) -> None:
    """A pending bank transfer arrives or fails; the session's async event follows its invoice's events."""
    pi = core.get(st, "payment_intent", record["_pi"])
    charges.settle(st, pi, succeeded)
    invoices.payment_settled(st, pi)
    if succeeded:
        record["payment_status"] = "paid"
    events.emit(st, f"checkout.session.async_payment_{'succeeded' if succeeded else 'failed'}", record)


def expire(st, record: dict) -> None:
    """Expire an open session; checkout.session.expired."""
    if record["status"] != "open":
        raise core.StripeFail(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
    record["status"] = "expired"
    events.emit(st, "checkout.session.expired", record)


def register(bp, st) -> None:
    """Checkout Sessions under /v1, and the hosted page at /stripe/checkout/{id}."""
    route = core.api_routes(bp, st)
    base = st.settings.public_url.rstrip("/")

    @route("/checkout/sessions", "POST", op="checkout_create")
    def session_create(params):
        return core.render(st, create(st, params), core.expansions(params))

    @route("/checkout/sessions/<session_id>", op="retrieve_checkout")
    def session_get(params, session_id):
        record = find(session_id, st)
        core.check_expand(record, core.expansions(params))
        return core.render(st, record, core.expansions(params))

    @route("/checkout/sessions", op="list_checkouts")
    def session_list(params):
        return _list(st, params)

    @route("/checkout/sessions/<session_id>/expire", "POST", op="checkout_expire")
    def session_expire(params, session_id):
        record = find(session_id, st)
        expire(st, record)
        return core.render(st, record)

    def page(session_id, status=200):
        record = st.stores["checkout.session"].get(session_id)
        if record is None:
            return core.html("<h1>No such Checkout Session</h1>", 404)
        refresh(record, st)
        pi = st.stores["payment_intent"].get(record["_pi"])
        price = record["_chosen"][0][0]
        text = render_template_string(
            CHECKOUT_PAGE,
            s=record,
            page=f"{base}/_local/stripe/checkout/{session_id}",
            money=core.money,
            dashboard=f"{base}/_local/stripe/dashboard",
            product=prices.product_name(st, price),
            description=prices.product(st, price).get("description"),
            amount=core.money(record["amount_total"], record["currency"]),
            totals=record["_totals"],
            interval=(price["recurring"] or {}).get("interval"),
            pending=bool(pi and pi["status"] == "processing"),
        )
        return core.html(text, status)

    @bp.get("/stripe/checkout/<session_id>")
    def stripe_checkout_page(session_id):
        with st.lock:
            return page(session_id)

    @bp.post("/stripe/checkout/<session_id>/pay")
    def stripe_checkout_pay(session_id):
        email = request.form.get("email", "").strip()
        delayed = request.form.get("method") == "delayed"
        with st.lock:
            record = st.stores["checkout.session"].get(session_id)
            if record is None:
                return page(session_id)
            refresh(record, st)
            currency = request.form.get("currency") or record["currency"]
            if record["status"] != "open" or "@" not in email or currency not in record["_totals"]:
                return page(session_id, 400)
            pay(st, record, email, currency, delayed, request.form.get("name", "").strip()[:150])
            st.changed()
            target = (record["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", session_id)
        log.info("local Stripe: %s paid (%s)", session_id, "delayed" if delayed else "card")
        return redirect(target, 303) if target else core.html("<p>Paid. You may close this window.</p>")

    @bp.post("/stripe/checkout/<session_id>/settle")
    def stripe_checkout_settle(session_id):
        outcome = request.form.get("outcome")
        with st.lock:
            record = st.stores["checkout.session"].get(session_id)
            pi = record and st.stores["payment_intent"].get(record["_pi"])
            if not pi or pi["status"] != "processing" or outcome not in ("succeeded", "failed"):
                return core.html("<p>No pending bank transfer to settle here.</p>", 400)
            settle(st, record, outcome == "succeeded")
            st.changed()
        return redirect(f"{base}/_local/stripe/checkout/{session_id}", 303)
