"""The stand-in's Stripe Tax: a flat rate by the buyer's country (no real tax rules), on the amount after
discounts. Stripe needs a location it can tax (a country; a postal code in the US and Canada)."""

from paygate.standins.stripe import core

# Percent by country; any other country pays the stand-in's 10 %.
RATES = {"ES": 21, "FR": 20, "DE": 19, "GB": 20, "IT": 22, "NL": 21, "MX": 16, "CA": 5, "US": 0, "AU": 10}
DEFAULT_RATE = 10
NEEDS_POSTAL_CODE = ("US", "CA")


def locatable(address: dict | None) -> bool:
    country = ((address or {}).get("country") or "").upper()
    return bool(country) and (country not in NEEDS_POSTAL_CODE or bool((address or {}).get("postal_code")))


def check_location(address: dict | None, param: str = "customer") -> None:
    """A 400 as Stripe words it when automatic tax cannot place the customer."""
    if not locatable(address):
        raise core.StripeFail(
            400,
            "The customer's location isn't recognized. Provide a valid address to calculate tax automatically.",
            "customer_tax_location_invalid",
            param,
        )


def rate(address: dict | None) -> int:
    return RATES.get(((address or {}).get("country") or "").upper(), DEFAULT_RATE)


def amount(base: int, address: dict | None) -> int:
    """Tax on `base` (minor units, after discounts; tax exclusive), rounded half up."""
    return (base * rate(address) + 50) // 100


def rate_id(address: dict | None) -> str:
    """The id of the stand-in's tax rate for the address (Stripe Tax names a txr_ rate per jurisdiction)."""
    return "txr_local_" + (((address or {}).get("country") or "").lower() or "default")


def line_tax(base: int, address: dict | None) -> dict:
    """One entry of a line's `taxes` (and, summed per rate, of an invoice's `total_taxes`), tax exclusive."""
    return {
        "amount": amount(base, address) if base >= 0 else -amount(-base, address),  # a credit's tax, rounded alike
        "tax_behavior": "exclusive",
        # a 0 % country stands for one where the account collects no tax
        "taxability_reason": "standard_rated" if rate(address) else "not_collecting",
        "taxable_amount": base,
        "type": "tax_rate_details",
        "tax_rate_details": {"tax_rate": rate_id(address)},
    }
