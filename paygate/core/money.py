"""Amounts as Stripe counts them (minor units) and as people read them."""

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
