"""What a Checkout Session asks and charges beyond its line items: custom fields, promotion codes, automatic tax,
tax ID collection, a paid invoice; and the amounts (subtotal, discount, tax, total, per line and in all)."""

import copy

from paygate.standins.stripe import core, prices, promotions, tax

MAX_CUSTOM_FIELDS, MAX_LABEL, MAX_KEY, MAX_TEXT = 3, 50, 200, 255
FIELD_TYPES = ("text", "numeric")  # Stripe also has dropdown; the service asks none
INVALID_CODE = "This code is invalid."  # what Checkout's page says of a code it cannot apply


def _fail(message: str, param: str, code: str = "parameter_invalid") -> core.StripeFail:
    return core.StripeFail(400, message, code, param)


def _text_limits(spec, param: str) -> dict:
    spec = spec if isinstance(spec, dict) else {}
    limits = {}
    for name in ("minimum_length", "maximum_length"):
        value = core.to_int(spec[name], f"{param}[{name}]") if spec.get(name) not in (None, "") else None
        if value is not None and not 1 <= value <= MAX_TEXT:
            raise _fail(
                f"This value must be between 1 and {MAX_TEXT}.", f"{param}[{name}]", "parameter_invalid_integer"
            )
        limits[name] = value
    if limits["minimum_length"] and limits["maximum_length"] and limits["minimum_length"] > limits["maximum_length"]:
        raise _fail("minimum_length must be less than or equal to maximum_length.", f"{param}[minimum_length]")
    return {"default_value": spec.get("default_value") or None, **limits, "value": None}


def custom_fields(value) -> list:
    """The session's `custom_fields`, checked as Stripe checks them (at most 3, keys unique, alphanumeric and up to
    200 characters, a custom label up to 50), each with `value` None until the payer fills it in."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(f, dict) for f in value):
        raise _fail("Invalid array", "custom_fields")
    if len(value) > MAX_CUSTOM_FIELDS:
        raise _fail(f"You can only specify up to {MAX_CUSTOM_FIELDS} custom fields.", "custom_fields")
    fields, keys = [], set()
    for i, spec in enumerate(value):
        param = f"custom_fields[{i}]"
        for name in ("key", "label", "type"):
            if spec.get(name) in (None, ""):
                raise _fail(f"Missing required param: {param}[{name}].", f"{param}[{name}]", "parameter_missing")
        key, label, kind = spec["key"], spec["label"], spec["type"]
        if not (key.isascii() and key.isalnum() and len(key) <= MAX_KEY) or key in keys:
            raise _fail(f"{param}[key] must be unique, alphanumeric and at most {MAX_KEY} characters.", f"{param}[key]")
        keys.add(key)
        if not isinstance(label, dict) or label.get("type") != "custom" or not label.get("custom"):
            raise _fail(f"{param}[label] needs type custom and a custom text.", f"{param}[label]")
        if len(label["custom"]) > MAX_LABEL:
            raise _fail(f"The label can be at most {MAX_LABEL} characters.", f"{param}[label][custom]")
        if kind not in FIELD_TYPES:
            raise _fail(f"The local stand-in's custom fields are of type {' or '.join(FIELD_TYPES)}.", f"{param}[type]")
        fields.append(
            {
                "dropdown": None,
                "key": key,
                "label": {"custom": label["custom"], "type": "custom"},
                "numeric": _text_limits(spec.get("numeric"), f"{param}[numeric]") if kind == "numeric" else None,
                "optional": core.to_bool(spec.get("optional"), f"{param}[optional]"),
                "text": _text_limits(spec.get("text"), f"{param}[text]") if kind == "text" else None,
                "type": kind,
            }
        )
    return fields


def fill_fields(fields: list, values: dict) -> str | None:
    """Put the payer's `values` (key -> text) into the fields; the sentence to show when one is missing or wrong
    (then nothing is filled in)."""
    filled = []
    for field in fields:
        limits = field[field["type"]]
        text = " ".join(str(values.get(field["key"]) or "").split()) or None
        label = field["label"]["custom"]
        if text is None and not field["optional"]:
            return f"{label}: this field is required."
        if text and field["type"] == "numeric" and not text.isdigit():
            return f"{label}: enter digits only."
        if text and limits["maximum_length"] and len(text) > limits["maximum_length"]:
            return f"{label}: at most {limits['maximum_length']} characters."
        if text and limits["minimum_length"] and len(text) < limits["minimum_length"]:
            return f"{label}: at least {limits['minimum_length']} characters."
        filled.append(text)
    for field, text in zip(fields, filled, strict=True):
        field[field["type"]]["value"] = text
    return None


def enabled(params: dict, name: str) -> bool:
    """`{name}[enabled]`, a required boolean when `name` is given."""
    value = params.get(name)
    if value in (None, ""):
        return False
    if not isinstance(value, dict) or value.get("enabled") in (None, ""):
        raise _fail(f"Missing required param: {name}[enabled].", f"{name}[enabled]", "parameter_missing")
    return core.to_bool(value["enabled"], f"{name}[enabled]")


def automatic_tax(on: bool, status: str | None = None) -> dict:
    return {
        "enabled": on,
        "liability": {"type": "self"} if on else None,
        "provider": "stripe" if on else None,
        "status": status if on else None,
    }


def invoice_creation(params: dict, mode: str) -> dict | None:
    """The session's `invoice_creation` (payment mode only, as in Stripe: a subscription invoices anyway)."""
    on = enabled(params, "invoice_creation")
    if mode != "payment":
        if on:
            raise _fail(
                "You can only enable invoice creation when `mode` is set to `payment`. Invoices are created "
                "automatically when `mode` is set to `subscription`, and are unsupported when set to `setup`. To "
                "learn more visit https://stripe.com/docs/payments/checkout/post-payment-invoices.",
                "invoice_creation",
            )
        return None
    data = (params.get("invoice_creation") or {}).get("invoice_data") or {}
    if not isinstance(data, dict):
        raise _fail("Invalid object", "invoice_creation[invoice_data]")
    return {
        "enabled": on,
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": core.custom_fields(
                data.get("custom_fields"), "invoice_creation[invoice_data][custom_fields]"
            ),
            "description": data.get("description") or None,
            "footer": data.get("footer") or None,
            "issuer": None,
            "metadata": core.metadata(data.get("metadata"), "invoice_creation[invoice_data][metadata]"),
            "rendering_options": None,
        },
    }


def requested_code(st, params: dict) -> dict | None:
    """The promotion code of `discounts[0][promotion_code]` (which excludes `allow_promotion_codes`), or None."""
    value = params.get("discounts")
    if value in (None, ""):
        return None
    if core.to_bool(params.get("allow_promotion_codes"), "allow_promotion_codes"):
        raise _fail("You may only specify one of these parameters: allow_promotion_codes, discounts.", "discounts")
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise _fail("Checkout takes one discount: discounts[0][promotion_code].", "discounts")
    code = value[0].get("promotion_code")
    if not code:
        raise _fail(
            "Missing required param: discounts[0][promotion_code].", "discounts[0][promotion_code]", "parameter_missing"
        )
    return promotions.find(st, code, "discounts[0][promotion_code]")


def code_by_text(st, text: str) -> dict | None:
    """The promotion code a payer typed (codes are case-insensitive for customers), if any has it."""
    wanted = (text or "").strip().casefold()
    matches = [p for p in st.promotion_codes.values() if p["code"].casefold() == wanted]
    return next((p for p in matches if p["active"]), matches[0] if matches else None)


# --- amounts --------------------------------------------------------------------------------------------------


def _discounts(st, record: dict, promo: dict | None, subtotals: list[int], currency: str) -> list[int]:
    """What the code takes off each line: a percentage of each line it applies to, or its amount spread over them
    in proportion (the last taking the rounding); a 400 as Stripe words it when it cannot be used here."""
    if promo is None:
        return [0] * len(subtotals)
    products = [p["product"] for p, _ in record["_chosen"]]
    coupon = promotions.coupon_of(st, promo)
    only = (coupon.get("applies_to") or {}).get("products")
    eligible = [i for i, product in enumerate(products) if not only or product in only]
    first = products[eligible[0]] if eligible else products[0]
    param = "discounts[0][promotion_code]"
    off = promotions.discount(st, promo, first, sum(subtotals[i] for i in eligible), currency, param)
    shares = [0] * len(subtotals)
    if coupon["percent_off"] is not None:
        for i in eligible:
            shares[i] = min(subtotals[i], round(subtotals[i] * coupon["percent_off"] / 100))
        return shares
    base, left = sum(subtotals[i] for i in eligible), off
    for n, i in enumerate(eligible):
        shares[i] = left if n == len(eligible) - 1 else off * subtotals[i] // base if base else 0
        left -= shares[i]
    return shares


def recompute(st, record: dict, currency: str | None = None, promo=False, address=False) -> None:
    """The session's amounts in `currency`, with `promo` (a promotion code, None for none; False: the one it has)
    and, for automatic tax, the payer's `address` (False: the one it has); refused codes raise and change nothing."""
    currency = currency or record["currency"]
    promo = (record["_promo"] and promotions.find(st, record["_promo"])) if promo is False else promo
    address = record["_address"] if address is False else address
    subtotals = [prices.total(price, quantity, currency) for price, quantity in record["_chosen"]]
    shares = _discounts(st, record, promo, subtotals, currency)
    taxed = record["automatic_tax"]["enabled"] and tax.locatable(address)
    taxes = [tax.amount(s - d, address) if taxed else 0 for s, d in zip(subtotals, shares, strict=True)]
    ids = [li["id"] for li in record.get("_line_items") or []]
    record["_line_items"] = [
        {
            "id": ids[i] if i < len(ids) else "li_" + core.rand(24),
            "object": "item",
            "adjustable_quantity": None,
            "amount_discount": shares[i],
            "amount_subtotal": subtotals[i],
            "amount_tax": taxes[i],
            "amount_total": subtotals[i] - shares[i] + taxes[i],
            "currency": currency,
            "description": prices.product_name(st, price),
            "metadata": {},
            "price": prices.public(st, price),
            "quantity": quantity,
        }
        for i, (price, quantity) in enumerate(record["_chosen"])
    ]
    record.update(
        currency=currency,
        amount_subtotal=sum(subtotals),
        amount_total=sum(subtotals) - sum(shares) + sum(taxes),
        total_details={"amount_discount": sum(shares), "amount_shipping": 0, "amount_tax": sum(taxes)},
        discounts=[{"coupon": promo["promotion"]["coupon"], "promotion_code": promo["id"]}] if promo else [],
        _promo=promo and promo["id"],
        _address=copy.deepcopy(address) if address else None,
    )
    if record["automatic_tax"]["enabled"]:
        record["automatic_tax"]["status"] = "complete" if taxed else "requires_location_inputs"


def apply_code(st, record: dict, text: str) -> str | None:
    """The payer enters a promotion code on the page: applied (None), or the sentence Checkout shows and nothing
    changes."""
    promo = code_by_text(st, text)
    if promo is None:
        return INVALID_CODE
    try:
        recompute(st, record, promo=promo)
    except core.StripeFail:
        return INVALID_CODE
    return None


def include_discounts(st, body: dict, expand: set) -> None:
    """`expand[]=discounts.promotion_code` (and .coupon, promotion_code.promotion.coupon) on a session's JSON."""
    deeper = {p.split(".", 2)[2] for p in expand if p.startswith("discounts.promotion_code.")}
    for discount in body.get("discounts") or []:
        if "discounts.coupon" in expand and discount["coupon"] in st.coupons:
            discount["coupon"] = copy.deepcopy(st.coupons[discount["coupon"]])
        if "discounts.promotion_code" in expand or deeper:
            promo = st.promotion_codes.get(discount["promotion_code"])
            if promo:
                discount["promotion_code"] = promotions.public(st, promo, deeper)
