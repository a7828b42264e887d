"""What Stripe's objects mean here: plain views of sessions, payments, subscriptions, invoices, refunds and
disputes, the Price, id checks and errors. Read from Stripe's JSON by paygate/gateways/payments/client.py."""

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate

from paygate.core.text import clean

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
# Stripe ids by prefix: checked before an id from an event or a form enters a URL.
_ID = re.compile(r"^(sub|in|ch|re|pyr|du|dp|pi|cus)_[A-Za-z0-9_]{1,250}$")
MAX_EVENT_DEPTH = 64  # Stripe's events nest a dozen levels; json.loads recurses once per level
# A JSON string, or what is left of one that never closes (a lone backslash at the very end included): the
# pattern always matches from an opening quote, so the scan never restarts inside a string and stays linear.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
PAYER_EMAIL_MAX, PAYER_NAME_MAX = 320, 200  # registrations.payer_email, payer_name
# Checkout's required text field for the paying school or organisation (licences.organisation).
ORGANISATION_FIELD, ORGANISATION_MAX = "organisation", 200


# The `operation` label of paygate_stripe_calls_total for each call (fixed names; unlisted: "other").
OPERATIONS = {
    "read the price": "price.retrieve",
    "start the checkout": "checkout_session.create",
    "confirm the payment": "checkout_session.retrieve",
    "list checkouts": "checkout_session.list",
    "expire the checkout": "checkout_session.expire",
    "refund the payment": "refund.create",
    "read the payment": "payment_intent.retrieve",
    "read the subscription": "subscription.retrieve",
    "read the invoice": "invoice.retrieve",
    "read the charge": "charge.retrieve",
    "read the refund": "refund.retrieve",
    "list the refunds": "refund.list",
    "read the dispute": "dispute.retrieve",
    "list the disputes": "dispute.list",
    "create the customer": "customer.create",
    "create the invoice": "invoice.create",
    "add the price to the invoice": "invoice_item.create",
    "create the subscription": "subscription.create",
    "look for the customer": "customer.list",
    "look for the invoice": "invoice.list",
    "look for the subscription": "subscription.list",
    "finalise the invoice": "invoice.finalize",
    "send the invoice": "invoice.send",
    "cancel the subscription": "subscription.cancel",
    "change the subscription": "subscription.update",
    "open the billing portal": "billing_portal_session.create",
    "look up the promotion code": "promotion_code.list",
}

PO_FIELD = "PO number"  # the invoice custom field (Stripe: name <= 40, value <= 140 characters)


class PaymentProviderError(Exception):
    """Stripe could not be asked (network, rate limit, 5xx) or refused; the message is safe to show.

    `replayed` when retrying with the same idempotency key would only replay this answer: Stripe
    keeps the result of a request that reached its API, a 5xx or a refusal included.
    """

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.replayed = http_status is not None and http_status not in (409, 429)


class ObjectMissing(PaymentProviderError):
    """Stripe answered 404 (resource_missing): no such object, for good. Not worth a retry."""


class MalformedEvent(ValueError):
    """A webhook body whose signature verified but which is no event: not UTF-8, not JSON, no JSON object,
    or nested deeper than MAX_EVENT_DEPTH. The message is fixed text, never the body."""


class AlreadyRefunded(PaymentProviderError):
    """Stripe refused a refund because the charge is refunded already (e.g. in the dashboard)."""


class PriceNotSellable(Exception):
    """STRIPE_PRICE_ID names a Price that cannot be sold (archived, unknown, refused by Stripe)."""


def raise_(exc):
    raise exc


def ours(obj, reference: dict) -> bool:
    """Whether a Stripe object carries this registration's reference in its metadata."""
    metadata = obj.to_dict().get("metadata") or {}
    return all(metadata.get(k) == v for k, v in reference.items())


def parse_event(payload: bytes) -> dict:
    """A verified webhook body as a dict, or MalformedEvent. The nesting is measured before parsing (the
    brackets outside strings), so that a body nested thousands deep is refused without a RecursionError."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEvent("the body is not UTF-8") from None
    steps = map(_DEPTH_STEP.__getitem__, _BRACKETS.findall(_JSON_STRING.sub("", text)))
    if max(accumulate(steps), default=0) > MAX_EVENT_DEPTH:
        raise MalformedEvent(f"the body nests deeper than {MAX_EVENT_DEPTH} levels")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedEvent("the body is not JSON") from None
    if not isinstance(event, dict):
        raise MalformedEvent("the body is not a JSON object")
    return event


def check_id(value: str, prefix: str) -> None:
    if not valid_id(value, prefix):
        raise ValueError(f"not a Stripe {prefix}_ id")


@dataclass(frozen=True)
class PaymentView:
    """A PaymentIntent with its latest charge: what was paid, refunded and disputed."""

    payment_intent: str
    status: str | None
    charge: str | None
    amount: int | None
    currency: str | None
    amount_refunded: int
    disputed: bool
    created: datetime | None


@dataclass(frozen=True)
class SubscriptionView:
    id: str
    status: str | None
    customer: str | None
    metadata: dict
    period_end: datetime | None
    collection_method: str | None
    latest_invoice: "InvoiceView | None"
    latest_invoice_id: str | None
    # Its one item: what it bills, how many (seats), and the item's id (to change the quantity).
    item_id: str | None = None
    price_id: str | None = None
    quantity: int | None = None
    cancel_at_period_end: bool = False  # ends when its period ends, not renewed


@dataclass(frozen=True)
class InvoiceView:
    id: str
    status: str | None
    number: str | None
    customer: str | None
    subscription: str | None
    metadata: dict
    subscription_metadata: dict
    due_date: datetime | None
    amount_due: int | None
    amount_paid: int | None
    amount_remaining: int | None
    currency: str | None
    hosted_invoice_url: str | None
    paid_at: datetime | None
    payment_intents: list[str] = field(default_factory=list)  # of its paid payments
    invoice_pdf: str | None = None
    # Before discounts and tax, the discount, and the tax Stripe computed (minor units).
    subtotal: int | None = None
    discount: int = 0
    tax: int | None = None
    # Its first line: the Price billed and how many.
    price_id: str | None = None
    quantity: int | None = None
    total_excluding_tax: int | None = None

    @property
    def amount_before_tax(self) -> int | None:
        """After discounts, before tax, whether the Price's tax is exclusive or inclusive."""
        if self.total_excluding_tax is not None:
            return self.total_excluding_tax
        return None if self.subtotal is None else self.subtotal - self.discount


@dataclass(frozen=True)
class RefundView:
    id: str
    status: str | None
    amount: int | None
    currency: str | None
    charge: str | None
    payment_intent: str | None
    failure_reason: str | None


@dataclass(frozen=True)
class DisputeView:
    id: str
    status: str | None
    amount: int | None
    charge: str | None
    payment_intent: str | None
    reason: str | None
    due_by: datetime | None


@dataclass(frozen=True)
class CheckoutView:
    """What we read of a Checkout Session."""

    id: str
    status: str | None
    payment_status: str | None
    client_reference_id: str | None
    metadata: dict
    amount_total: int | None
    currency: str | None
    payment_intent: str | None
    payer_email: str | None
    url: str | None
    expires_at: datetime | None
    created: int | None
    price_ids: list[str] = field(default_factory=list)
    mode: str | None = None
    subscription: str | None = None
    customer: str | None = None
    # Subscription mode: the subscription as Stripe has it now (read with the session).
    subscription_view: "SubscriptionView | None" = None
    payer_name: str | None = None  # the billing name the payer gave Checkout
    # What was bought (the first line item), before discounts and tax, the discount and tax (minor units).
    quantity: int | None = None
    amount_subtotal: int | None = None
    amount_discount: int = 0
    amount_tax: int | None = None
    promotion_code: str | None = None  # the code the payer entered (e.g. SCHOOL20)
    organisation: str | None = None  # the school or organisation the payer named (our custom field)
    invoice: str | None = None  # the invoice of a card payment (invoice_creation), with its links
    invoice_url: str | None = None
    invoice_pdf: str | None = None

    @property
    def amount_before_tax(self) -> int | None:
        """After discounts, before tax (as InvoiceView's): the total less the tax covers inclusive and exclusive tax
        alike; without Stripe Tax, the subtotal less the discount."""
        if self.amount_tax is not None and self.amount_total is not None:
            return self.amount_total - self.amount_tax
        subtotal = self.amount_subtotal if self.amount_subtotal is not None else self.amount_total
        return None if subtotal is None else subtotal - (self.amount_discount or 0)


def valid_session_id(value: str | None) -> bool:
    return bool(value) and _SESSION_ID.match(value) is not None


def valid_id(value, prefix: str) -> bool:
    """Whether `value` is a Stripe id of this kind (e.g. "sub"), safe to put into a URL."""
    return isinstance(value, str) and value.startswith(prefix + "_") and _ID.match(value) is not None


def id_of(value) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the object."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None


def from_epoch(value) -> datetime | None:
    return datetime.fromtimestamp(value, UTC).replace(tzinfo=None) if value else None


def checkout_view(session) -> CheckoutView:
    """What a payer typed into Checkout (name, e-mail) comes out clean (paygate/core/text.py): a NUL used to
    fail the payment's record on PostgreSQL, a line break or U+202E reached the operator pages."""
    data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    pi = data.get("payment_intent")
    if isinstance(pi, dict):
        pi = pi.get("id")
    details = data.get("customer_details") or {}
    line_items = (data.get("line_items") or {}).get("data") or []
    totals = data.get("total_details") or {}
    return CheckoutView(
        id=data["id"],
        status=data.get("status"),
        payment_status=data.get("payment_status"),
        client_reference_id=data.get("client_reference_id"),
        metadata=dict(data.get("metadata") or {}),
        amount_total=data.get("amount_total"),
        currency=(data.get("currency") or "").lower() or None,
        payment_intent=pi,
        payer_email=clean(details.get("email") or data.get("customer_email"), PAYER_EMAIL_MAX),
        url=data.get("url"),
        expires_at=from_epoch(data.get("expires_at")),
        created=data.get("created"),
        price_ids=[(item.get("price") or {}).get("id") for item in line_items if item.get("price")],
        mode=data.get("mode"),
        subscription=id_of(data.get("subscription")),
        customer=id_of(data.get("customer")),
        payer_name=clean(details.get("name"), PAYER_NAME_MAX),
        quantity=line_items[0].get("quantity") if len(line_items) == 1 else None,
        amount_subtotal=data.get("amount_subtotal"),
        amount_discount=totals.get("amount_discount") or 0,
        # Tax only where Stripe Tax computed it (0 then is a tax of 0); without it, none (null), not 0.
        amount_tax=totals.get("amount_tax") if _mapping(data.get("automatic_tax")).get("enabled") else None,
        promotion_code=_promotion_code(data.get("discounts")),
        organisation=_custom_text(data.get("custom_fields"), ORGANISATION_FIELD),
        invoice=id_of(data.get("invoice")),
        invoice_url=_mapping(data.get("invoice")).get("hosted_invoice_url"),
        invoice_pdf=_mapping(data.get("invoice")).get("invoice_pdf"),
    )


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _promotion_code(discounts) -> str | None:
    """The code of the first applied promotion code (expanded: `discounts.promotion_code`)."""
    for discount in discounts or []:
        promo = discount.get("promotion_code") if isinstance(discount, dict) else None
        if isinstance(promo, dict) and isinstance(promo.get("code"), str):
            return clean(promo["code"], 100)
    return None


def _custom_text(fields, key: str) -> str | None:
    """What the payer typed into our Checkout custom text field `key`, cleaned."""
    for custom in fields or []:
        if isinstance(custom, dict) and custom.get("key") == key:
            return clean((custom.get("text") or {}).get("value"), ORGANISATION_MAX)
    return None


def invoice_view(data: dict) -> InvoiceView:
    parent = data.get("parent") or {}
    details = parent.get("subscription_details") or {}
    payments = (data.get("payments") or {}).get("data") or []
    lines = (data.get("lines") or {}).get("data") or []
    line = lines[0] if lines and isinstance(lines[0], dict) else {}
    price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    taxes = data.get("total_taxes")
    intents = [id_of((p.get("payment") or {}).get("payment_intent")) for p in payments if p.get("status") == "paid"]
    return InvoiceView(
        id=data["id"],
        status=data.get("status"),
        number=data.get("number"),
        customer=id_of(data.get("customer")),
        subscription=id_of(details.get("subscription")),
        metadata=dict(data.get("metadata") or {}),
        subscription_metadata=dict(details.get("metadata") or {}),
        due_date=from_epoch(data.get("due_date")),
        amount_due=data.get("amount_due"),
        amount_paid=data.get("amount_paid"),
        amount_remaining=data.get("amount_remaining"),
        currency=(data.get("currency") or "").lower() or None,
        hosted_invoice_url=data.get("hosted_invoice_url"),
        paid_at=from_epoch((data.get("status_transitions") or {}).get("paid_at")),
        payment_intents=[pi for pi in intents if pi],
        invoice_pdf=data.get("invoice_pdf"),
        subtotal=data.get("subtotal"),
        discount=sum(d.get("amount") or 0 for d in data.get("total_discount_amounts") or [] if isinstance(d, dict)),
        tax=sum(t.get("amount") or 0 for t in taxes if isinstance(t, dict))
        if isinstance(taxes, list) and _mapping(data.get("automatic_tax")).get("enabled")
        else None,
        price_id=id_of(price),
        quantity=line.get("quantity"),
        total_excluding_tax=data.get("total_excluding_tax"),
    )


def subscription_view(data: dict) -> SubscriptionView:
    items = (data.get("items") or {}).get("data") or []
    ends = [item.get("current_period_end") for item in items if item.get("current_period_end")]
    latest = data.get("latest_invoice")
    item = items[0] if len(items) == 1 and isinstance(items[0], dict) else {}
    return SubscriptionView(
        id=data["id"],
        status=data.get("status"),
        customer=id_of(data.get("customer")),
        metadata=dict(data.get("metadata") or {}),
        period_end=from_epoch(max(ends)) if ends else None,
        collection_method=data.get("collection_method"),
        latest_invoice=invoice_view(latest) if isinstance(latest, dict) else None,
        latest_invoice_id=id_of(latest),
        item_id=item.get("id"),
        price_id=id_of(item.get("price")),
        quantity=item.get("quantity"),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
    )


def payment_view(data: dict) -> PaymentView:
    charge = data.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {"id": charge}
    return PaymentView(
        payment_intent=data["id"],
        status=data.get("status"),
        charge=charge.get("id"),
        amount=charge.get("amount", data.get("amount")),
        currency=(charge.get("currency") or data.get("currency") or "").lower() or None,
        amount_refunded=charge.get("amount_refunded") or 0,
        disputed=bool(charge.get("disputed")),
        created=from_epoch(data.get("created")),
    )


def refund_view(data: dict) -> RefundView:
    return RefundView(
        id=data["id"],
        status=data.get("status"),
        amount=data.get("amount"),
        currency=(data.get("currency") or "").lower() or None,
        charge=id_of(data.get("charge")),
        payment_intent=id_of(data.get("payment_intent")),
        failure_reason=data.get("failure_reason"),
    )


def dispute_view(data: dict) -> DisputeView:
    return DisputeView(
        id=data["id"],
        status=data.get("status"),
        amount=data.get("amount"),
        charge=id_of(data.get("charge")),
        payment_intent=id_of(data.get("payment_intent")),
        reason=data.get("reason"),
        due_by=from_epoch((data.get("evidence_details") or {}).get("due_by")),
    )
