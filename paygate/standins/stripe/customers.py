"""Customers: created by Checkout or by the caller, with the invoice settings invoices copy and the address tax
is worked out from."""

import re

from paygate.standins.stripe import core

ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
CREATE = core.known(
    "email",
    "name",
    "description",
    "metadata[*]",
    "invoice_settings[custom_fields][][name]",
    "invoice_settings[custom_fields][][value]",
    *(f"address[{field}]" for field in ADDRESS_FIELDS),
    "expand[]",
)


def create(
    st,
    email: str | None,
    name: str | None = None,
    meta: dict | None = None,
    fields: list | None = None,
    description: str | None = None,
    address: dict | None = None,
) -> dict:
    """A new customer; its invoices are numbered {invoice_prefix}-0001, -0002, ..."""
    return core.create(
        st,
        "customer",
        "cus_",
        email=email,
        name=name,
        metadata=meta or {},
        description=description,
        address=address,
        balance=0,
        currency=None,
        default_source=None,
        delinquent=False,
        invoice_prefix=core.rand(8).upper(),
        next_invoice_sequence=1,
        phone=None,
        preferred_locales=[],
        shipping=None,
        tax_exempt="none",
        test_clock=None,
        invoice_settings={
            "custom_fields": fields,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
    )


def parse_address(value, param: str = "address") -> dict | None:
    """An `address[...]` parameter as Stripe stores it: every field present (None when not given), the country
    a two-letter code."""
    if value in (None, ""):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise core.StripeFail(400, "Invalid object", "parameter_invalid", param)
    country = value.get("country") or None
    if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise core.StripeFail(
            400,
            f"Country '{country}' is unknown. Try using a 2-character alphanumeric country code instead, "
            "such as 'US', 'EG', or 'GB'.",
            "parameter_invalid",
            f"{param}[country]",
        )
    return {key: (value.get(key) or None) for key in ADDRESS_FIELDS} | {"country": country and country.upper()}


def next_invoice_number(customer: dict) -> str:
    number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
    customer["next_invoice_sequence"] += 1
    return number


def register(bp, st) -> None:
    """POST /v1/customers, GET /v1/customers/{id}."""
    route = core.api_routes(bp, st)

    @route("/customers", "POST", params=CREATE)
    def customer_create(params):
        settings_param = params.get("invoice_settings") or {}
        if not isinstance(settings_param, dict):
            raise core.StripeFail(400, "Invalid object", "parameter_invalid", "invoice_settings")
        fields = core.custom_fields(settings_param.get("custom_fields"), "invoice_settings[custom_fields]")
        customer = create(
            st,
            params.get("email"),
            params.get("name"),
            core.metadata(params.get("metadata")),
            fields,
            params.get("description"),
            parse_address(params.get("address")),
        )
        return core.render(st, customer)

    core.add_retrieve(st, route, "/customers/<object_id>", "customer", core.RETRIEVE)
    core.add_list(st, route, "/customers", "customer", ("email",), core.known(*core.LIST, "email"))
