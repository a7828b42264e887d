"""Stripe, behind one small interface: `gateway()` gives the application's `Payments`, whose methods take
and return plain values (the views in `objects`), never StripeObjects. `client` is the one module that calls
Stripe (with its mixins `catalogue`, for Prices and promotion codes, and `billing`, for invoices and
subscriptions); `objects` says what Stripe's JSON means here."""

from paygate.gateways.payments.catalogue import Price, PromotionCode, Tier, valid_code
from paygate.gateways.payments.client import CheckoutOptions, Payments, from_settings, gateway
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
    "CheckoutOptions",
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
    "PromotionCode",
    "RefundView",
    "SubscriptionView",
    "Tier",
    "from_settings",
    "gateway",
    "id_of",
    "valid_code",
    "valid_id",
    "valid_session_id",
]
