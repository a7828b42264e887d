"""Stripe, behind one small interface: `gateway()` gives the application's `Payments`, whose methods take
and return plain values (the views in `objects`), never StripeObjects. `client` is the one module that calls
Stripe; `objects` says what Stripe's JSON means here."""

from paygate.gateways.payments.client import Payments, gateway
from paygate.gateways.payments.objects import (
    OPERATIONS,
    PO_FIELD,
    AlreadyRefunded,
    CheckoutView,
    DisputeView,
    InvoiceView,
    MalformedEvent,
    ObjectMissing,
    PaymentProviderError,
    PaymentView,
    Price,
    PriceNotSellable,
    RefundView,
    SubscriptionView,
    id_of,
    valid_id,
    valid_session_id,
)

__all__ = [
    "OPERATIONS",
    "PO_FIELD",
    "AlreadyRefunded",
    "CheckoutView",
    "DisputeView",
    "InvoiceView",
    "MalformedEvent",
    "ObjectMissing",
    "PaymentProviderError",
    "PaymentView",
    "Payments",
    "Price",
    "PriceNotSellable",
    "RefundView",
    "SubscriptionView",
    "gateway",
    "id_of",
    "valid_id",
    "valid_session_id",
]
