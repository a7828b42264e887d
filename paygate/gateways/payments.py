"""Stripe: the one module that talks to it. Views and fulfilment see plain values, never StripeObjects."""
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import stripe
from flask import current_app

from . import metrics

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
# Stripe ids by prefix: checked before an id from an event or a form enters a URL.
_ID = re.compile(r"^(sub|in|ch|re|pyr|du|dp|pi|cus)_[A-Za-z0-9_]{1,250}$")
_PRICE_TTL_SECONDS = 300


# The `operation` label of paygate_stripe_calls_total for each call (fixed names; unlisted: "other").
OPERATIONS = {
    "read the price": "price.retrieve", "start the checkout": "checkout_session.create",
    "confirm the payment": "checkout_session.retrieve", "list checkouts": "checkout_session.list",
    "expire the checkout": "checkout_session.expire", "refund the payment": "refund.create",
    "read the payment": "payment_intent.retrieve", "read the subscription": "subscription.retrieve",
    "read the invoice": "invoice.retrieve", "read the charge": "charge.retrieve", "read the refund": "refund.retrieve",
    "list the refunds": "refund.list", "read the dispute": "dispute.retrieve", "list the disputes": "dispute.list",
    "create the customer": "customer.create", "create the invoice": "invoice.create",
    "add the price to the invoice": "invoice_item.create", "create the subscription": "subscription.create",
    "look for the customer": "customer.list", "look for the invoice": "invoice.list",
    "look for the subscription": "subscription.list", "finalise the invoice": "invoice.finalize",
    "send the invoice": "invoice.send", "cancel the subscription": "subscription.cancel",
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


class AlreadyRefunded(PaymentProviderError):
    """Stripe refused a refund because the charge is refunded already (e.g. in the dashboard)."""


class PriceNotSellable(Exception):
    """STRIPE_PRICE_ID names a Price that cannot be sold (archived, unknown, refused by Stripe)."""


def _raise(exc):
    raise exc


def _ours(obj, reference: dict) -> bool:
    """Whether a Stripe object carries this registration's reference in its metadata."""
    metadata = obj.to_dict().get("metadata") or {}
    return all(metadata.get(k) == v for k, v in reference.items())


def _check(value: str, prefix: str) -> None:
    if not valid_id(value, prefix):
        raise ValueError(f"not a Stripe {prefix}_ id")


@dataclass(frozen=True)
class Price:
    id: str
    unit_amount: int
    currency: str
    recurring: bool
    product_name: str | None = None
    interval: str | None = None  # day, week, month, year (recurring Prices)
    interval_count: int = 1
    active: bool = True
    # Other currencies the Price may be charged in: {"eur": 4500}
    currency_options: dict = field(default_factory=dict)
    product_description: str | None = None

    @property
    def period(self) -> str | None:
        """How often it is charged, as registrations store it: "year", "3 month"; None if paid once."""
        if not self.recurring:
            return None
        return self.interval if self.interval_count == 1 else f"{self.interval_count} {self.interval}"

    def amount_in(self, currency: str | None) -> int | None:
        """What this Price costs in `currency` (its own, or one of its currency options)."""
        currency = (currency or "").lower()
        if currency == self.currency:
            return self.unit_amount
        return self.currency_options.get(currency)


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


def valid_session_id(value: str | None) -> bool:
    return bool(value) and _SESSION_ID.match(value) is not None


def valid_id(value, prefix: str) -> bool:
    """Whether `value` is a Stripe id of this kind (e.g. "sub"), safe to put into a URL."""
    return isinstance(value, str) and value.startswith(prefix + "_") and _ID.match(value) is not None


def _id_of(value) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the object."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None


def _from_epoch(value) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None) if value else None


def _view(session) -> CheckoutView:
    data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    pi = data.get("payment_intent")
    if isinstance(pi, dict):
        pi = pi.get("id")
    details = data.get("customer_details") or {}
    line_items = (data.get("line_items") or {}).get("data") or []
    return CheckoutView(
        id=data["id"], status=data.get("status"), payment_status=data.get("payment_status"),
        client_reference_id=data.get("client_reference_id"), metadata=dict(data.get("metadata") or {}),
        amount_total=data.get("amount_total"), currency=(data.get("currency") or "").lower() or None,
        payment_intent=pi, payer_email=details.get("email") or data.get("customer_email"),
        url=data.get("url"), expires_at=_from_epoch(data.get("expires_at")), created=data.get("created"),
        price_ids=[(item.get("price") or {}).get("id") for item in line_items if item.get("price")],
        mode=data.get("mode"), subscription=_id_of(data.get("subscription")), customer=_id_of(data.get("customer")),
        payer_name=(details.get("name") or "").strip()[:200] or None if isinstance(details.get("name"), str) else None,
    )


def _invoice_view(data: dict) -> InvoiceView:
    parent = data.get("parent") or {}
    details = parent.get("subscription_details") or {}
    payments = (data.get("payments") or {}).get("data") or []
    intents = [_id_of((p.get("payment") or {}).get("payment_intent")) for p in payments
               if p.get("status") == "paid"]
    return InvoiceView(
        id=data["id"], status=data.get("status"), number=data.get("number"), customer=_id_of(data.get("customer")),
        subscription=_id_of(details.get("subscription")), metadata=dict(data.get("metadata") or {}),
        subscription_metadata=dict(details.get("metadata") or {}), due_date=_from_epoch(data.get("due_date")),
        amount_due=data.get("amount_due"), amount_paid=data.get("amount_paid"),
        amount_remaining=data.get("amount_remaining"), currency=(data.get("currency") or "").lower() or None,
        hosted_invoice_url=data.get("hosted_invoice_url"),
        paid_at=_from_epoch((data.get("status_transitions") or {}).get("paid_at")),
        payment_intents=[pi for pi in intents if pi],
    )


def _subscription_view(data: dict) -> SubscriptionView:
    items = (data.get("items") or {}).get("data") or []
    ends = [item.get("current_period_end") for item in items if item.get("current_period_end")]
    latest = data.get("latest_invoice")
    return SubscriptionView(
        id=data["id"], status=data.get("status"), customer=_id_of(data.get("customer")),
        metadata=dict(data.get("metadata") or {}), period_end=_from_epoch(max(ends)) if ends else None,
        collection_method=data.get("collection_method"),
        latest_invoice=_invoice_view(latest) if isinstance(latest, dict) else None,
        latest_invoice_id=_id_of(latest),
    )


def _payment_view(data: dict) -> PaymentView:
    charge = data.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {"id": charge}
    return PaymentView(
        payment_intent=data["id"], status=data.get("status"), charge=charge.get("id"),
        amount=charge.get("amount", data.get("amount")),
        currency=(charge.get("currency") or data.get("currency") or "").lower() or None,
        amount_refunded=charge.get("amount_refunded") or 0, disputed=bool(charge.get("disputed")),
        created=_from_epoch(data.get("created")),
    )


def _refund_view(data: dict) -> RefundView:
    return RefundView(id=data["id"], status=data.get("status"), amount=data.get("amount"),
                      currency=(data.get("currency") or "").lower() or None, charge=_id_of(data.get("charge")),
                      payment_intent=_id_of(data.get("payment_intent")), failure_reason=data.get("failure_reason"))


def _dispute_view(data: dict) -> DisputeView:
    return DisputeView(id=data["id"], status=data.get("status"), amount=data.get("amount"),
                       charge=_id_of(data.get("charge")), payment_intent=_id_of(data.get("payment_intent")),
                       reason=data.get("reason"),
                       due_by=_from_epoch((data.get("evidence_details") or {}).get("due_by")))


class Payments:
    def __init__(self, secret_key: str, webhook_secret: str, api_base: str | None,
                 max_network_retries: int = 2, timeout: float = 8, payment_method_types: list[str] = ()):
        base = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            secret_key, base_addresses=base, max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        self._webhook_secret = webhook_secret
        self._payment_method_types = list(payment_method_types)
        self.live = secret_key.startswith(("sk_live_", "rk_live_"))
        self._prices: dict[str, tuple[float, Price]] = {}
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            if fn is _raise:  # the failure of a call measured where it was made (get_price, refund)
                return fn(*args, **kwargs)
            with metrics.outbound("stripe", OPERATIONS.get(what, "other")):
                return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            # The message names the failure, never the key (Stripe's own texts may quote parts of it).
            log.warning("Stripe %s failed: %s (http %s, request %s)", what, type(exc).__name__,
                        exc.http_status, exc.request_id)
            raise PaymentProviderError(f"The payment provider could not {what}.",
                                       http_status=exc.http_status) from None

    def get_price(self, price_id: str) -> Price:
        """The Price sold for one registration, cached for a few minutes."""
        with self._lock:
            cached = self._prices.get(price_id)
        if cached and time.monotonic() - cached[0] < _PRICE_TTL_SECONDS:
            return cached[1]
        try:
            with metrics.outbound("stripe", OPERATIONS["read the price"]):
                p = self._client.v1.prices.retrieve(price_id, params={"expand": ["product", "currency_options"]}
                                                    ).to_dict()
        except (stripe.InvalidRequestError, stripe.PermissionError) as exc:
            # Unknown, deleted, or out of the key's reach: no retry will help; the vendor must act.
            log.error("Stripe refuses the price: check STRIPE_PRICE_ID (%s, http %s)", type(exc).__name__,
                      exc.http_status)
            raise PriceNotSellable("STRIPE_PRICE_ID names a price Stripe refuses") from None
        except stripe.StripeError as exc:
            self._call("read the price", _raise, exc)
        product = p.get("product") if isinstance(p.get("product"), dict) else {}
        recurring = p.get("recurring") or {}
        options = {currency.lower(): option.get("unit_amount")
                   for currency, option in (p.get("currency_options") or {}).items()
                   if isinstance(option, dict) and option.get("unit_amount") is not None}
        price = Price(id=p["id"], unit_amount=p.get("unit_amount") or 0, currency=p["currency"].lower(),
                      recurring=bool(recurring), product_name=product.get("name"),
                      product_description=product.get("description"),
                      interval=recurring.get("interval"), interval_count=recurring.get("interval_count") or 1,
                      active=p.get("active", True) is not False, currency_options=options)
        with self._lock:
            self._prices[price_id] = (time.monotonic(), price)
        return price

    def cached_price(self, price_id: str) -> Price | None:
        """The Price as last read (however long ago), without asking Stripe; None if never read."""
        with self._lock:
            cached = self._prices.get(price_id)
        return cached[1] if cached else None

    def create_checkout_session(self, *, price_id: str, reference: str, metadata: dict,
                                success_url: str, cancel_url: str, expires_at: datetime,
                                idempotency_key: str, recurring: bool = False,
                                locale: str | None = None) -> CheckoutView:
        params = {
            "mode": "subscription" if recurring else "payment",
            "ui_mode": "hosted_page",
            "line_items": [{"price": price_id, "quantity": 1}],
            "client_reference_id": reference,
            "metadata": metadata,
            # The reference travels with the money: on the PaymentIntent, or on the subscription.
            ("subscription_data" if recurring else "payment_intent_data"): {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
            "expires_at": int(expires_at.replace(tzinfo=timezone.utc).timestamp()),
        }
        if self._payment_method_types:
            params["payment_method_types"] = self._payment_method_types
        if locale:  # Checkout speaks the admin's language (the pages' one)
            params["locale"] = locale
        session = self._call("start the checkout", self._client.v1.checkout.sessions.create,
                             params=params, options={"idempotency_key": idempotency_key})
        return _view(session)

    def retrieve_checkout_session(self, session_id: str) -> CheckoutView:
        if not valid_session_id(session_id):
            raise ValueError("not a Checkout Session id")
        session = self._call("confirm the payment", self._client.v1.checkout.sessions.retrieve,
                             session_id, params={"expand": ["line_items"]})
        return self.with_subscription(_view(session))

    def with_subscription(self, view: CheckoutView) -> CheckoutView:
        """A paid subscription-mode session with its subscription read now (status, invoice, payments)."""
        if view.mode != "subscription" or not view.subscription or view.payment_status != "paid":
            return view
        return replace(view, subscription_view=self.retrieve_subscription(view.subscription))

    def list_checkout_sessions(self, created_gte: int, page_size: int = 100):
        """Every Checkout Session created since `created_gte`, newest first, across pages."""
        starting_after = None
        while True:
            params = {"limit": page_size, "created": {"gte": created_gte}, "expand": ["data.line_items"]}
            if starting_after:
                params["starting_after"] = starting_after
            page = self._call("list checkouts", self._client.v1.checkout.sessions.list, params=params)
            items = page.data
            for session in items:
                yield _view(session)
            if not page.has_more or not items:
                return
            starting_after = items[-1].id

    def expire_checkout_session(self, session_id: str) -> CheckoutView:
        return _view(self._call("expire the checkout", self._client.v1.checkout.sessions.expire, session_id))

    def refund(self, payment_intent: str, idempotency_key: str, metadata: dict | None = None) -> RefundView:
        """Refund a payment in full; raises AlreadyRefunded when Stripe says it was refunded already."""
        try:
            with metrics.outbound("stripe", OPERATIONS["refund the payment"]):
                refund = self._client.v1.refunds.create(
                    params={"payment_intent": payment_intent, "metadata": metadata or {}},
                    options={"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as exc:
            if exc.code == "charge_already_refunded":
                raise AlreadyRefunded("The payment was already refunded (at Stripe).",
                                      http_status=exc.http_status) from None
            return self._call("refund the payment", _raise, exc)
        except stripe.StripeError as exc:
            return self._call("refund the payment", _raise, exc)
        return _refund_view(refund.to_dict())

    # Licences: the current state of the objects that decide access (never an event's snapshot).

    def retrieve_payment(self, payment_intent: str) -> PaymentView:
        _check(payment_intent, "pi")
        pi = self._call("read the payment", self._client.v1.payment_intents.retrieve, payment_intent,
                        params={"expand": ["latest_charge"]})
        return _payment_view(pi.to_dict())

    def retrieve_subscription(self, subscription_id: str) -> SubscriptionView:
        _check(subscription_id, "sub")
        sub = self._call("read the subscription", self._client.v1.subscriptions.retrieve, subscription_id,
                         params={"expand": ["latest_invoice.payments"]})
        return _subscription_view(sub.to_dict())

    def retrieve_invoice(self, invoice_id: str) -> InvoiceView:
        _check(invoice_id, "in")
        invoice = self._call("read the invoice", self._client.v1.invoices.retrieve, invoice_id,
                             params={"expand": ["payments"]})
        return _invoice_view(invoice.to_dict())

    def retrieve_charge_payment(self, charge_id: str) -> str | None:
        """The PaymentIntent a charge belongs to."""
        _check(charge_id, "ch")
        charge = self._call("read the charge", self._client.v1.charges.retrieve, charge_id).to_dict()
        return _id_of(charge.get("payment_intent"))

    def retrieve_refund(self, refund_id: str) -> RefundView:
        _check(refund_id, "re")
        return _refund_view(self._call("read the refund", self._client.v1.refunds.retrieve, refund_id).to_dict())

    def latest_refund(self, payment_intent: str) -> RefundView | None:
        _check(payment_intent, "pi")
        page = self._call("list the refunds", self._client.v1.refunds.list,
                          params={"payment_intent": payment_intent, "limit": 1})
        return _refund_view(page.data[0].to_dict()) if page.data else None

    def retrieve_dispute(self, dispute_id: str) -> DisputeView:
        if not valid_id(dispute_id, "dp"):  # older disputes were dp_, current ones du_
            _check(dispute_id, "du")
        return _dispute_view(self._call("read the dispute", self._client.v1.disputes.retrieve,
                                        dispute_id).to_dict())

    def disputes_of(self, payment_intent: str) -> list[DisputeView]:
        _check(payment_intent, "pi")
        page = self._call("list the disputes", self._client.v1.disputes.list,
                          params={"payment_intent": payment_intent, "limit": 10})
        return [_dispute_view(d.to_dict()) for d in page.data]

    # Invoicing: each call has its caller's idempotency key, so a retry never makes a second object.

    def create_customer(self, *, email: str, name: str, po_number: str | None, metadata: dict,
                        idempotency_key: str) -> str:
        params = {"email": email, "name": name, "metadata": metadata}
        if po_number:  # copied onto every invoice of the customer, renewals included
            params["invoice_settings"] = {"custom_fields": [{"name": PO_FIELD, "value": po_number}]}
        customer = self._call("create the customer", self._client.v1.customers.create, params=params,
                              options={"idempotency_key": idempotency_key})
        return customer.id

    def create_invoice(self, *, customer: str, days_until_due: int, po_number: str | None, metadata: dict,
                       idempotency_key: str) -> InvoiceView:
        params = {"customer": customer, "collection_method": "send_invoice", "days_until_due": days_until_due,
                  "auto_advance": False, "pending_invoice_items_behavior": "exclude", "metadata": metadata}
        if po_number:
            params["custom_fields"] = [{"name": PO_FIELD, "value": po_number}]
        invoice = self._call("create the invoice", self._client.v1.invoices.create, params=params,
                             options={"idempotency_key": idempotency_key})
        return _invoice_view(invoice.to_dict())

    def add_invoice_item(self, *, customer: str, invoice: str, price_id: str, metadata: dict,
                         idempotency_key: str) -> None:
        self._call("add the price to the invoice", self._client.v1.invoice_items.create,
                   params={"customer": customer, "invoice": invoice, "pricing": {"price": price_id},
                           "metadata": metadata}, options={"idempotency_key": idempotency_key})

    def create_invoiced_subscription(self, *, customer: str, price_id: str, days_until_due: int,
                                     metadata: dict, idempotency_key: str) -> SubscriptionView:
        sub = self._call("create the subscription", self._client.v1.subscriptions.create,
                         params={"customer": customer, "items": [{"price": price_id, "quantity": 1}],
                                 "collection_method": "send_invoice", "days_until_due": days_until_due,
                                 "metadata": metadata}, options={"idempotency_key": idempotency_key})
        return _subscription_view(sub.to_dict())

    # After a failure Stripe keeps (a 5xx), what the failed call may have made, found by our reference.

    def find_customer(self, email: str, reference: dict) -> str | None:
        page = self._call("look for the customer", self._client.v1.customers.list,
                          params={"email": email, "limit": 100})
        return next((c.id for c in page.data if _ours(c, reference)), None)

    def find_invoice(self, customer: str, reference: dict) -> InvoiceView | None:
        page = self._call("look for the invoice", self._client.v1.invoices.list,
                          params={"customer": customer, "limit": 100})
        found = next((i for i in page.data if _ours(i, reference)), None)
        return _invoice_view(found.to_dict()) if found is not None else None

    def find_subscription(self, customer: str, reference: dict) -> SubscriptionView | None:
        page = self._call("look for the subscription", self._client.v1.subscriptions.list,
                          params={"customer": customer, "limit": 100})
        found = next((s for s in page.data if _ours(s, reference)), None)
        return _subscription_view(found.to_dict()) if found is not None else None

    def finalize_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        _check(invoice_id, "in")
        invoice = self._call("finalise the invoice", self._client.v1.invoices.finalize_invoice, invoice_id,
                             params={"auto_advance": False}, options={"idempotency_key": idempotency_key})
        return _invoice_view(invoice.to_dict())

    def send_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        _check(invoice_id, "in")
        invoice = self._call("send the invoice", self._client.v1.invoices.send_invoice, invoice_id,
                             options={"idempotency_key": idempotency_key})
        return _invoice_view(invoice.to_dict())

    def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> SubscriptionView:
        _check(subscription_id, "sub")
        sub = self._call("cancel the subscription", self._client.v1.subscriptions.cancel, subscription_id,
                         options={"idempotency_key": idempotency_key})
        return _subscription_view(sub.to_dict())

    def construct_event(self, payload: bytes, signature: str | None) -> dict:
        """Verify a webhook on its raw body; raise ValueError or stripe.SignatureVerificationError.

        Stripe's own check (signature and age, as `construct_event` does it), then the body as plain
        JSON: the same dict that building a StripeObject and calling `to_dict()` on it gives, without
        building it (a fifth of a webhook's CPU)."""
        stripe.WebhookSignature.verify_header(payload, signature, self._webhook_secret,
                                              stripe.Webhook.DEFAULT_TOLERANCE)
        # Stripe's check refuses a signature older than the tolerance, not one dated after it: a `t=`
        # further ahead than the same tolerance is no delivery of now (a clock far off, or one kept
        # for replaying later), and is refused alike.
        if _signed_at(signature) > time.time() + stripe.Webhook.DEFAULT_TOLERANCE:
            raise stripe.SignatureVerificationError("the signature's timestamp is in the future", signature,
                                                    payload)
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("a webhook body is a JSON object")
        return event

    def dashboard_url(self, kind: str, object_id: str) -> str:
        """A link into the Stripe dashboard, test or live as the key says."""
        base = "https://dashboard.stripe.com" + ("" if self.live else "/test")
        return f"{base}/{kind}/{object_id}"


def _signed_at(signature: str) -> int:
    """The `t=` of a Stripe-Signature header that verified (read as Stripe's library reads it)."""
    return int(next(part.split("=", 2)[1] for part in signature.split(",") if part.split("=", 2)[0] == "t"))


def gateway() -> Payments:
    """The application's Stripe gateway; tests may put their own into app.extensions['payments']."""
    ext = current_app.extensions
    if "payments" not in ext:
        s = current_app.config["SETTINGS"]
        ext["payments"] = Payments(s.stripe_secret_key, s.stripe_webhook_secret, s.stripe_api_base,
                                   s.stripe_max_network_retries, payment_method_types=s.payment_method_types)
    return ext["payments"]
