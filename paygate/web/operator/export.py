"""The CSV export's rows: one per registration, with cells a spreadsheet cannot run as formulas."""

import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from paygate.core.money import ZERO_DECIMAL
from paygate.licensing import access
from paygate.web.operator.as_json import iso, platform_ids
from paygate.web.operator.sold import sold
from paygate.web.operator.standing import joined_from, standing

CSV_COLUMNS = (
    "id",
    "created_at",
    "state",
    "attention",
    "lms_url",
    "lms_family",
    "lms_version",
    "platform_id",
    "platform_active",
    "amount_paid",
    "currency_paid",
    "payer_email",
    "checkout_session_id",
    "payment_intent_id",
    "paid_at",
    "completed_at",
    "refund_id",
    "refunded_at",
    "price_amount",
    "price_currency",
    "registration_id",
    "access_override",
    "licence_kind",
    "licence_status",
    "subscription_id",
    "period_end",
    "organisation",
    "billing_email",
    "po_number",
    "invoice_id",
    "invoice_number",
    "invoice_status",
    "invoice_due_date",
    "invoice_amount_due",
    "invoice_amount_remaining",
    "hosted_invoice_url",
    # What was sold (any kind of licence; the registration's offer where there is none, see `sold.sold`).
    "price_id",
    "product",
    "quantity",
    "seat_unit",
    "amount",
    "currency",
    "discount",
    "tax",
    "promotion_code",
    "payer",
    "invoice_pdf",
    "invoice_hosted_url",
    # What the money says (see `standing.standing`): "refunded 49.00 USD", "dispute lost", "cancelled (ended ...)".
    "standing",
    # The money in major units, for sums in a spreadsheet (see `money`): paid, refunded, the current payment's
    # dispute status, and what stays after refunds and a lost dispute.
    "amount_major",
    "currency_code",
    "refunded_major",
    "dispute",
    "net_major",
    "payer_name",
    # The licence's key hint (its last 4 characters), a pilot's end, and the platform ids on it, oldest first.
    "key_hint",
    "pilot_ends_at",
    "licence_platforms",
)


def csv_row(reg) -> list:
    lic = reg.licence
    invoiced = lic is not None and lic.kind == "invoice"
    values = [
        reg.id,
        iso(reg.created_at),
        reg.state,
        reg.attention,
        reg.lms_url,
        reg.lms_family,
        reg.lms_version,
        reg.platform_id,
        reg.platform_active,
        reg.amount_paid,
        reg.currency_paid,
        reg.payer_email,
        reg.payment_session_id,
        reg.payment_intent_id,
        iso(reg.paid_at),
        iso(reg.completed_at),
        reg.refund_id,
        iso(reg.refunded_at),
        reg.amount,
        reg.currency,
        reg.registration_id,
        reg.access_override,
        lic.kind if lic else None,
        lic.status if lic else None,
        lic.subscription_id if lic else None,
        iso(lic.period_end) if lic else None,
    ]
    values += (
        [
            lic.organisation,
            lic.billing_email,
            lic.po_number,
            lic.invoice_id,
            lic.invoice_number,
            lic.status,
            iso(lic.due_at),
            lic.amount_due,
            lic.amount_remaining,
            lic.hosted_invoice_url,
        ]
        if invoiced
        else [None] * 10
    )
    what = sold(reg)
    values += [
        what.price_id,
        what.product_name,
        what.quantity,
        what.seat_unit,
        what.amount if what.charged else None,
        what.currency if what.charged else None,
        what.discount,
        what.tax,
        what.promotion_code,
        what.payer,
        what.invoice_pdf,
        what.hosted_invoice_url,
        standing(reg).label if lic else None,
    ]
    counted = money(reg)
    # The amounts are numbers written here (a net below zero stays "-1.00", not text); the rest is guarded.
    return [_csv_safe(v) for v in values] + [
        major(counted.paid, counted.currency) or "",
        _csv_safe(counted.currency.upper() if counted.currency else None),
        major(counted.refunded, counted.currency) or "",
        _csv_safe(counted.dispute),
        major(counted.net, counted.currency) or "",
        _csv_safe(reg.payer_name),
        _csv_safe(lic.key_hint if lic else None),
        _csv_safe(iso(lic.pilot_ends_at) if lic else None),
        _csv_safe(" ".join(platform_ids(lic)) if lic else None),
    ]


@dataclass(frozen=True)
class Money:
    """What a registration's payments add up to, in minor units of one currency."""

    paid: int | None  # None: nothing was paid (and no promotion code took the whole amount)
    currency: str | None
    refunded: int = 0
    lost: int = 0  # taken back by the bank in lost disputes
    dispute: str | None = None  # the current payment's dispute status

    @property
    def net(self) -> int | None:
        return None if self.paid is None else self.paid - self.refunded - self.lost


def money(reg) -> Money:
    """The licence's paid payments summed; a registration paid before licences by its own columns.

    Counted on the row of the registration that opened the licence only: a platform that joined it by key
    paid nothing of its own, and a sum of the column must count each payment once.
    """
    lic = reg.licence
    if joined_from(reg) is not None:
        return Money(None, None)
    paid = [p for p in lic.payments if p.paid_at is not None and p.amount is not None] if lic else []
    if paid:
        current = access.current_payment(lic)
        return Money(
            paid=sum(p.amount for p in paid),
            currency=paid[0].currency or lic.currency,
            refunded=sum(p.amount_refunded or 0 for p in paid),
            # A dispute covers at most what was not refunded already.
            lost=sum(max(p.amount - (p.amount_refunded or 0), 0) for p in paid if p.dispute_status == "lost"),
            dispute=current.dispute_status if current is not None else None,
        )
    if reg.amount_paid is not None:
        # Such a registration was refunded in full or not at all (its refund is one column).
        return Money(reg.amount_paid, reg.currency_paid, refunded=reg.amount_paid if reg.refunded_at else 0)
    if lic is not None and lic.status == "no_payment_required":
        return Money(0, lic.currency or reg.currency)
    return Money(None, None)


def major(amount: int | None, currency: str | None) -> str | None:
    """4900, "usd" -> "49.00"; 4900, "jpy" -> "4900": a decimal string a spreadsheet sums exactly."""
    if amount is None or not currency:
        return None
    if currency.lower() in ZERO_DECIMAL:
        return str(amount)
    return str((Decimal(amount) / 100).quantize(Decimal("0.01")))


# A cell a spreadsheet may read as a formula (OWASP "CSV Injection"): one starting with = + - @, their
# full-width and small forms (＝ ＋ － ＠ ﹦ ﹢ ﹣ ﹫, folded by NFKC), the minus sign −,  # noqa: RUF003 - on purpose
# or anything a spreadsheet skips before looking (tab, CR, LF, any space, control and format characters).
_FORMULA_STARTS = frozenset("=+-@\u2212")


def _csv_safe(value):
    """Text from outside (LMS names, e-mails) must not run as a formula in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, str) and value and _may_start_a_formula(value[0]):
        return "'" + value
    return value


def _may_start_a_formula(first: str) -> bool:
    return (
        unicodedata.normalize("NFKC", first)[:1] in _FORMULA_STARTS
        or first.isspace()
        or unicodedata.category(first) in ("Cc", "Cf", "Zl", "Zp", "Zs")
    )
