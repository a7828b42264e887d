"""Checkout Sessions (payment and subscription mode): the API (what they ask and charge beyond their line items:
checkout_terms.py; paying them: checkout_pay.py; the hosted page the admin pays on: checkout_page.py)."""

import copy
import logging
import time

from paygate.standins.stripe import checkout_pay, checkout_terms, core, events, prices

log = logging.getLogger(__name__)

UI_MODES = ("hosted_page", "embedded_page", "elements", "form")  # names since API version 2026-03-25
MODES = ("payment", "subscription")
LOCALE_NAMES = (
    "auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hr hu id it ja ko lt "
    "lv ms mt nb nl pl pt pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW"
)
LOCALES = tuple(LOCALE_NAMES.split())
# Without allowed_payment_method_types Stripe offers what the account enables: a card or a (delayed) bank debit.
DYNAMIC_METHODS = ("card", "us_bank_account")
MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 3600
CLOCK_SLACK = 10  # seconds: the caller computed expires_at a moment before we read the clock
MAX_QUANTITY = 999999
FIELD = ("[key]", "[label][type]", "[label][custom]", "[type]", "[optional]")
LIMITS = ("minimum_length", "maximum_length", "default_value")
CREATE = core.known(
    *("mode", "ui_mode", "client_reference_id", "metadata[*]", "success_url", "cancel_url", "expires_at", "locale"),
    *("line_items[][price]", "line_items[][quantity]", "customer_creation", "customer_email", "expand[]"),
    "customer",
    *("payment_intent_data[metadata][*]", "subscription_data[metadata][*]", "allowed_payment_method_types[]"),
    *("allow_promotion_codes", "discounts[][promotion_code]", "automatic_tax[enabled]"),
    *("tax_id_collection[enabled]", "tax_id_collection[required]"),
    *(f"custom_fields[]{name}" for name in FIELD),
    *(f"custom_fields[][{kind}][{name}]" for kind in checkout_terms.FIELD_TYPES for name in LIMITS),
    *("invoice_creation[enabled]", "invoice_creation[invoice_data][metadata][*]"),
    *("invoice_creation[invoice_data][description]", "invoice_creation[invoice_data][footer]"),
    *(
        "invoice_creation[invoice_data][custom_fields][][name]",
        "invoice_creation[invoice_data][custom_fields][][value]",
    ),
)
LIST = core.known(*core.LIST, "created[gt]", "created[gte]", "created[lt]", "created[lte]")

# Checkout's page and the tests' stand-in pay and settle through these.
pay, settle = checkout_pay.pay, checkout_pay.settle


def _include(body: dict, record: dict, expand: set) -> None:
    """`line_items` only when expanded, as in Stripe (expanded discounts: `_expanded`)."""
    if "line_items" in expand:
        body["line_items"] = core.list_of(
            copy.deepcopy(record["_line_items"]), f"/v1/checkout/sessions/{record['id']}/line_items"
        )


core.INCLUDES["checkout.session"] = (("line_items", "discounts"), _include)


def _expanded(st, body: dict, expand: set) -> dict:
    """The session's JSON with `discounts.promotion_code` / `discounts.coupon` expanded when asked (the coupons and
    codes are the state's, which `core.render` does not know)."""
    checkout_terms.include_discounts(st, body, expand)
    return body


def find(session_id: str, st) -> dict:
    """The session, expired first if its time is up."""
    record = core.get(st, "checkout.session", session_id)
    refresh(record, st)
    return record


# What a session saved by an older stand-in (the local run's instance/) lacks.
NEWER_FIELDS = {
    "allow_promotion_codes": None,
    "automatic_tax": checkout_terms.automatic_tax(False),
    "custom_fields": [],
    "discounts": [],
    "invoice_creation": None,
    "tax_id_collection": None,
    "_promo": None,
    "_address": None,
}


def refresh(record: dict, st) -> None:
    """Expire an open session whose time is up, as Stripe does on its own."""
    for name, value in NEWER_FIELDS.items():
        record.setdefault(name, copy.deepcopy(value))
    if "total_details" not in record:
        checkout_terms.recompute(st, record)
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
        param = f"line_items[{i}][quantity]"
        quantity = core.to_int(item.get("quantity", 1), param)
        if quantity < 1:
            raise core.StripeFail(400, "Quantity must be at least 1.", "parameter_invalid_integer", param)
        if quantity > MAX_QUANTITY:
            message = f"This value must be less than or equal to {MAX_QUANTITY}."
            raise core.StripeFail(400, message, "parameter_invalid_integer", param)
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


def _mode_data(params: dict, mode: str) -> tuple[dict, dict]:
    """The metadata for the PaymentIntent (payment mode) or the subscription (subscription mode)."""
    found = {}
    for name, its_mode in (("payment_intent_data", "payment"), ("subscription_data", "subscription")):
        data = params.get(name) or {}
        if data and mode != its_mode:
            raise core.StripeFail(400, f"You can not pass `{name}` in `{mode}` mode.", "parameter_invalid", name)
        found[name] = core.metadata(data.get("metadata") if isinstance(data, dict) else None, f"{name}[metadata]")
    return found["payment_intent_data"], found["subscription_data"]


def _choice(params: dict, name: str, allowed: tuple, default=None):
    value = params.get(name) or default
    if value is not None and value not in allowed:
        raise core.StripeFail(
            400, f"Invalid {name}: must be one of {', '.join(allowed)}", "parameter_invalid_string", name
        )
    return value


def _expiry(params: dict, ts: int) -> int:
    expires_at = core.to_int(params.get("expires_at", ts + MAX_EXPIRY), "expires_at")
    for wrong, bound in (
        (expires_at < ts + MIN_EXPIRY - CLOCK_SLACK, "at least 30 minutes"),
        (expires_at > ts + MAX_EXPIRY + CLOCK_SLACK, "less than 24 hours"),
    ):
        if wrong:
            raise core.StripeFail(
                400,
                f"The `expires_at` timestamp must be {bound} from Checkout Session creation.",
                "parameter_invalid_integer",
                "expires_at",
            )
    return expires_at


def create(st, params: dict) -> dict:
    """A new open session from the API's parameters."""
    for name in ("mode", "line_items"):
        core.required(params, name)
    mode = params["mode"]
    if mode not in MODES:
        raise core.StripeFail(
            400, f"The local stand-in sells in mode {' or '.join(MODES)}, not {mode}.", "parameter_invalid", "mode"
        )
    ui_mode = _choice(params, "ui_mode", UI_MODES, "hosted_page")
    locale = _choice(params, "locale", LOCALES)
    methods = core.as_list(params, "allowed_payment_method_types")
    if params.get("customer_creation") and mode != "payment":
        raise core.StripeFail(
            400, "`customer_creation` can only be used in `payment` mode.", "parameter_invalid", "customer_creation"
        )
    customer = params.get("customer") or None
    if customer is not None:
        if params.get("customer_creation"):
            raise core.StripeFail(
                400,
                "You may only specify one of these parameters: customer, customer_creation.",
                "parameter_invalid",
                "customer_creation",
            )
        core.get(st, "customer", customer, "customer")  # an unknown customer is refused, as Stripe does
    customer_creation = _choice(
        params,
        "customer_creation",
        ("always", "if_required"),
        "if_required" if mode == "payment" and customer is None else None,
    )
    expires_at = _expiry(params, core.now())
    chosen = _line_items(st, params, mode)
    pi_metadata, sub_metadata = _mode_data(params, mode)
    fields = checkout_terms.custom_fields(params.get("custom_fields"))
    promo = checkout_terms.requested_code(st, params)
    allow_codes = params.get("allow_promotion_codes")
    invoice_creation = checkout_terms.invoice_creation(params, mode)
    taxed = checkout_terms.enabled(params, "automatic_tax")
    tax_ids = checkout_terms.enabled(params, "tax_id_collection")
    # The currencies every line item can be paid in, each with the session's subtotal in it.
    shared = [c for c in prices.currencies(chosen[0][0]) if all(c in prices.currencies(p) for p, _ in chosen)]
    totals = {c: sum(prices.total(p, q, c) for p, q in chosen) for c in shared}
    success_url = params.get("success_url")
    if success_url and "%7BCHECKOUT_SESSION_ID%7D" in success_url.upper():
        log.warning("local Stripe: success_url has {CHECKOUT_SESSION_ID} URL-encoded; Stripe will not fill it in")
    record = {
        "allow_promotion_codes": None
        if allow_codes in (None, "")
        else core.to_bool(allow_codes, "allow_promotion_codes"),
        "allowed_payment_method_types": methods or None,
        "automatic_tax": checkout_terms.automatic_tax(taxed, "requires_location_inputs"),
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "currency": chosen[0][0]["currency"],
        "custom_fields": fields,
        "customer": customer,
        "customer_creation": customer_creation,
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "expires_at": expires_at,
        "invoice": None,
        "invoice_creation": invoice_creation,
        "locale": locale,
        "metadata": core.metadata(params.get("metadata")),
        "mode": mode,
        "payment_intent": None,
        "payment_method_types": methods or list(DYNAMIC_METHODS),
        "payment_status": "unpaid",
        "status": "open",
        "subscription": None,
        "success_url": success_url,
        "tax_id_collection": {"enabled": True, "required": "never"} if tax_ids else None,
        "ui_mode": ui_mode,
        "url": None,
        "_chosen": chosen,
        "_totals": totals,
        "_pi_metadata": pi_metadata,
        "_sub_metadata": sub_metadata,
        "_pi": None,
        "_promo": None,
        "_address": None,
    }
    checkout_terms.recompute(st, record, promo=promo)  # a code that cannot be used here is refused: nothing made
    record = core.create(st, "checkout.session", "cs_test_", 58, **record)
    if ui_mode == "hosted_page":
        record["url"] = f"{st.settings.public_url.rstrip('/')}/_local/stripe/checkout/{record['id']}"
    return record


def _list(st, params: dict) -> dict:
    records = core.newest(st, "checkout.session")
    created = params.get("created")
    bounds = created if isinstance(created, dict) else ({"gte": created, "lte": created} if created else {})
    tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    for op, limit_value in bounds.items():
        bound = core.to_int(limit_value, f"created[{op}]")
        records = [r for r in records if tests[op](r["created"], bound)]
    for record in records:
        refresh(record, st)
    return core.page(st, "checkout.session", records, params, "/v1/checkout/sessions")


def expire(st, record: dict) -> None:
    """Expire an open session; checkout.session.expired."""
    if record["status"] != "open":
        raise core.StripeFail(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
    record["status"] = "expired"
    events.emit(st, "checkout.session.expired", record)


def register(bp, st) -> None:
    """Checkout Sessions under /v1 (the hosted page: checkout_page.py)."""
    route = core.api_routes(bp, st)

    @route("/checkout/sessions", "POST", op="checkout_create", params=CREATE)
    def session_create(params):
        return core.render(st, create(st, params), core.expansions(params))

    @route("/checkout/sessions/<session_id>", op="retrieve_checkout", params=core.RETRIEVE)
    def session_get(params, session_id):
        record = find(session_id, st)
        core.check_expand(record, core.expansions(params))
        return _expanded(st, core.render(st, record, core.expansions(params)), core.expansions(params))

    @route("/checkout/sessions", op="list_checkouts", params=LIST)
    def session_list(params):
        page = _list(st, params)
        inner = {path[len("data.") :] for path in core.expansions(params) if path.startswith("data.")}
        for body in page["data"]:
            _expanded(st, body, inner)
        return page

    @route("/checkout/sessions/<session_id>/expire", "POST", op="checkout_expire", params=core.known("expand[]"))
    def session_expire(params, session_id):
        record = find(session_id, st)
        expire(st, record)
        return core.render(st, record)
