"""Amounts as Stripe counts them (minor units) and as people read them."""

import re

# Stripe's zero-decimal currencies: their amounts are already whole units.
ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}


def format_amount(amount: int | None, currency: str | None) -> str:
    """4900, "usd" -> "49.00 USD"."""
    if amount is None or not currency:
        return ""
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount / 100:,.2f} {currency.upper()}"


_GROUPED = re.compile(r"^[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$")


def to_minor(text: str, currency: str) -> int:
    """ "12.50", "usd" -> 1250; "4900", "jpy" -> 4900. Raises ValueError with a sentence for people."""
    text = text.strip()
    if "," in text:
        # A comma only groups thousands (1,250.00): "12,50" meant as 12.50 must never be read as 1250.
        if not _GROUPED.match(text):
            raise ValueError("Write decimals with a point (12.50); a comma may only group thousands (1,250.00).")
        text = text.replace(",", "")
    whole, _, cents = text.partition(".")
    places = 0 if currency.lower() in ZERO_DECIMAL else 2
    if not (whole.isascii() and whole.isdigit()) or len(whole) > 9 or not (cents == "" or cents.isascii()):
        raise ValueError(f"The amount must be a number like {'4900' if places == 0 else '12.50'}.")
    if len(cents) > places or (cents and not cents.isdigit()) or (places == 0 and "." in text):
        raise ValueError(f"The amount has at most {places} decimals in {currency.upper()}.")
    return int(whole) * 10**places + int(cents.ljust(places, "0") or 0)
