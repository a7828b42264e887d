"""Stripe: the one module that talks to it. Views and fulfilment see plain values, never StripeObjects."""

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import stripe
from flask import current_app

from paygate.core import telemetry
from paygate.gateways.payments.objects import (
    OPERATIONS,
    PO_FIELD,
    PRICE_TTL_SECONDS,
    AlreadyRefunded,
    CheckoutView,
    DisputeView,
    InvoiceView,
    ObjectMissing,
    PaymentProviderError,
    PaymentView,
    Price,
    PriceNotSellable,
    RefundView,
    SubscriptionView,
    check_id,
    checkout_view,
    dispute_view,
    id_of,
    invoice_view,
    ours,
    parse_event,
    payment_view,
    raise_,
    refund_view,
    subscription_view,
    valid_id,
    valid_session_id,
)

log = logging.getLogger(__name__)


class Payments:
    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        api_base: str | None,
        max_network_retries: int = 2,
        timeout: float = 8,
        payment_method_types: list[str] = (),
    ):
        base = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=base,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        self._webhook_secret = webhook_secret
        self._payment_method_types = list(payment_method_types)
        self.live = secret_key.startswith(("sk_live_", "rk_live_"))
        self._prices: dict[str, tuple[float, Price]] = {}
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            if fn is raise_:  # the failure of a call measured where it was made (get_price, refund)
                return fn(*args, **kwargs)
            with telemetry.outbound("stripe", OPERATIONS.get(what, "other")):
                return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            # The message names the failure, never the key (Stripe's own texts may quote parts of it).
            log.warning(
                "Stripe %s failed: %s (http %s, request %s)", what, type(exc).__name__, exc.http_status, exc.request_id
            )
            if isinstance(exc, stripe.InvalidRequestError) and (
                exc.http_status == 404 or exc.code == "resource_missing"
            ):
                raise ObjectMissing(
                    f"The payment provider has no such object: it could not {what}.", http_status=exc.http_status
                ) from None
            raise PaymentProviderError(f"The payment provider could not {what}.", http_status=exc.http_status) from None

    def get_price(self, price_id: str) -> Price:
        """The Price sold for one registration, cached for a few minutes."""
        with self._lock:
            cached = self._prices.get(price_id)
        if cached and time.monotonic() - cached[0] < PRICE_TTL_SECONDS:
            return cached[1]
        try:
            with telemetry.outbound("stripe", OPERATIONS["read the price"]):
                p = self._client.v1.prices.retrieve(
                    price_id, params={"expand": ["product", "currency_options"]}
                ).to_dict()
        except (stripe.InvalidRequestError, stripe.PermissionError) as exc:
            # Unknown, deleted, or out of the key's reach: no retry will help; the vendor must act.
            log.error(
                "Stripe refuses the price: check STRIPE_PRICE_ID (%s, http %s)", type(exc).__name__, exc.http_status
            )
            raise PriceNotSellable("STRIPE_PRICE_ID names a price Stripe refuses") from None
        except stripe.StripeError as exc:
            self._call("read the price", raise_, exc)
        product = p.get("product") if isinstance(p.get("product"), dict) else {}
        recurring = p.get("recurring") or {}
        options = {
            currency.lower(): option.get("unit_amount")
            for currency, option in (p.get("currency_options") or {}).items()
            if isinstance(option, dict) and option.get("unit_amount") is not None
        }
        price = Price(
            id=p["id"],
            unit_amount=p.get("unit_amount") or 0,
            currency=p["currency"].lower(),
            recurring=bool(recurring),
            product_name=product.get("name"),
            product_description=product.get("description"),
            interval=recurring.get("interval"),
            interval_count=recurring.get("interval_count") or 1,
            active=p.get("active", True) is not False,
            currency_options=options,
        )
        with self._lock:
            self._prices[price_id] = (time.monotonic(), price)
        return price

    def cached_price(self, price_id: str) -> Price | None:
        """The Price as last read (however long ago), without asking Stripe; None if never read."""
        with self._lock:
            cached = self._prices.get(price_id)
        return cached[1] if cached else None

    def create_checkout_session(
        self,
        *,
        price_id: str,
        reference: str,
        metadata: dict,
        success_url: str,
        cancel_url: str,
        expires_at: datetime,
        idempotency_key: str,
        recurring: bool = False,
        locale: str | None = None,
    ) -> CheckoutView:
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
            "expires_at": int(expires_at.replace(tzinfo=UTC).timestamp()),
        }
        if self._payment_method_types:
            params["payment_method_types"] = self._payment_method_types
        if locale:  # Checkout speaks the admin's language (the pages' one)
            params["locale"] = locale
        session = self._call(
            "start the checkout",
            self._client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return checkout_view(session)

    def retrieve_checkout_session(self, session_id: str) -> CheckoutView:
        if not valid_session_id(session_id):
            raise ValueError("not a Checkout Session id")
        session = self._call(
            "confirm the payment",
            self._client.v1.checkout.sessions.retrieve,
            session_id,
            params={"expand": ["line_items"]},
        )
        return self.with_subscription(checkout_view(session))

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
                yield checkout_view(session)
            if not page.has_more or not items:
                return
            starting_after = items[-1].id

    def expire_checkout_session(self, session_id: str) -> CheckoutView:
        return checkout_view(self._call("expire the checkout", self._client.v1.checkout.sessions.expire, session_id))

    def refund(self, payment_intent: str, idempotency_key: str, metadata: dict | None = None) -> RefundView:
        """Refund a payment in full; raises AlreadyRefunded when Stripe says it was refunded already."""
        try:
            with telemetry.outbound("stripe", OPERATIONS["refund the payment"]):
                refund = self._client.v1.refunds.create(
                    params={"payment_intent": payment_intent, "metadata": metadata or {}},
                    options={"idempotency_key": idempotency_key},
                )
        except stripe.InvalidRequestError as exc:
            if exc.code == "charge_already_refunded":
                raise AlreadyRefunded(
                    "The payment was already refunded (at Stripe).", http_status=exc.http_status
                ) from None
            return self._call("refund the payment", raise_, exc)
        except stripe.StripeError as exc:
            return self._call("refund the payment", raise_, exc)
        return refund_view(refund.to_dict())

    # Licences: the current state of the objects that decide access (never an event's snapshot).

    def retrieve_payment(self, payment_intent: str) -> PaymentView:
        check_id(payment_intent, "pi")
        pi = self._call(
            "read the payment",
            self._client.v1.payment_intents.retrieve,
            payment_intent,
            params={"expand": ["latest_charge"]},
        )
        return payment_view(pi.to_dict())

    def retrieve_subscription(self, subscription_id: str) -> SubscriptionView:
        check_id(subscription_id, "sub")
        sub = self._call(
            "read the subscription",
            self._client.v1.subscriptions.retrieve,
            subscription_id,
            params={"expand": ["latest_invoice.payments"]},
        )
        return subscription_view(sub.to_dict())

    def retrieve_invoice(self, invoice_id: str) -> InvoiceView:
        check_id(invoice_id, "in")
        invoice = self._call(
            "read the invoice", self._client.v1.invoices.retrieve, invoice_id, params={"expand": ["payments"]}
        )
        return invoice_view(invoice.to_dict())

    def retrieve_charge_payment(self, charge_id: str) -> str | None:
        """The PaymentIntent a charge belongs to."""
        check_id(charge_id, "ch")
        charge = self._call("read the charge", self._client.v1.charges.retrieve, charge_id).to_dict()
        return id_of(charge.get("payment_intent"))

    def retrieve_refund(self, refund_id: str) -> RefundView:
        check_id(refund_id, "re")
        return refund_view(self._call("read the refund", self._client.v1.refunds.retrieve, refund_id).to_dict())

    def latest_refund(self, payment_intent: str) -> RefundView | None:
        check_id(payment_intent, "pi")
        page = self._call(
            "list the refunds", self._client.v1.refunds.list, params={"payment_intent": payment_intent, "limit": 1}
        )
        return refund_view(page.data[0].to_dict()) if page.data else None

    def retrieve_dispute(self, dispute_id: str) -> DisputeView:
        if not valid_id(dispute_id, "dp"):  # older disputes were dp_, current ones du_
            check_id(dispute_id, "du")
        return dispute_view(self._call("read the dispute", self._client.v1.disputes.retrieve, dispute_id).to_dict())

    def disputes_of(self, payment_intent: str) -> list[DisputeView]:
        check_id(payment_intent, "pi")
        page = self._call(
            "list the disputes", self._client.v1.disputes.list, params={"payment_intent": payment_intent, "limit": 10}
        )
        return [dispute_view(d.to_dict()) for d in page.data]

    # Invoicing: each call has its caller's idempotency key, so a retry never makes a second object.

    def create_customer(
        self, *, email: str, name: str, po_number: str | None, metadata: dict, idempotency_key: str
    ) -> str:
        params = {"email": email, "name": name, "metadata": metadata}
        if po_number:  # copied onto every invoice of the customer, renewals included
            params["invoice_settings"] = {"custom_fields": [{"name": PO_FIELD, "value": po_number}]}
        customer = self._call(
            "create the customer",
            self._client.v1.customers.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return customer.id

    def create_invoice(
        self, *, customer: str, days_until_due: int, po_number: str | None, metadata: dict, idempotency_key: str
    ) -> InvoiceView:
        params = {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": days_until_due,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "metadata": metadata,
        }
        if po_number:
            params["custom_fields"] = [{"name": PO_FIELD, "value": po_number}]
        invoice = self._call(
            "create the invoice",
            self._client.v1.invoices.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def add_invoice_item(
        self, *, customer: str, invoice: str, price_id: str, metadata: dict, idempotency_key: str
    ) -> None:
        self._call(
            "add the price to the invoice",
            self._client.v1.invoice_items.create,
            params={"customer": customer, "invoice": invoice, "pricing": {"price": price_id}, "metadata": metadata},
            options={"idempotency_key": idempotency_key},
        )

    def create_invoiced_subscription(
        self, *, customer: str, price_id: str, days_until_due: int, metadata: dict, idempotency_key: str
    ) -> SubscriptionView:
        sub = self._call(
            "create the subscription",
            self._client.v1.subscriptions.create,
            params={
                "customer": customer,
                "items": [{"price": price_id, "quantity": 1}],
                "collection_method": "send_invoice",
                "days_until_due": days_until_due,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    # After a failure Stripe keeps (a 5xx), what the failed call may have made, found by our reference.

    def find_customer(self, email: str, reference: dict) -> str | None:
        page = self._call(
            "look for the customer", self._client.v1.customers.list, params={"email": email, "limit": 100}
        )
        return next((c.id for c in page.data if ours(c, reference)), None)

    def find_invoice(self, customer: str, reference: dict) -> InvoiceView | None:
        page = self._call(
            "look for the invoice", self._client.v1.invoices.list, params={"customer": customer, "limit": 100}
        )
        found = next((i for i in page.data if ours(i, reference)), None)
        return invoice_view(found.to_dict()) if found is not None else None

    def find_subscription(self, customer: str, reference: dict) -> SubscriptionView | None:
        page = self._call(
            "look for the subscription", self._client.v1.subscriptions.list, params={"customer": customer, "limit": 100}
        )
        found = next((s for s in page.data if ours(s, reference)), None)
        return subscription_view(found.to_dict()) if found is not None else None

    def finalize_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        check_id(invoice_id, "in")
        invoice = self._call(
            "finalise the invoice",
            self._client.v1.invoices.finalize_invoice,
            invoice_id,
            params={"auto_advance": False},
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def send_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        check_id(invoice_id, "in")
        invoice = self._call(
            "send the invoice",
            self._client.v1.invoices.send_invoice,
            invoice_id,
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> SubscriptionView:
        check_id(subscription_id, "sub")
        sub = self._call(
            "cancel the subscription",
            self._client.v1.subscriptions.cancel,
            subscription_id,
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    def construct_event(self, payload: bytes, signature: str | None) -> dict:
        """Verify a webhook on its raw body; raise ValueError or stripe.SignatureVerificationError, or
        MalformedEvent (a ValueError) for a body that verified but is no JSON object of bounded depth.

        Stripe's own check (signature and age, as `construct_event` does it), then the body as plain
        JSON: the same dict that building a StripeObject and calling `to_dict()` on it gives, without
        building it (a fifth of a webhook's CPU)."""
        stripe.WebhookSignature.verify_header(
            payload, signature, self._webhook_secret, stripe.Webhook.DEFAULT_TOLERANCE
        )
        # Stripe's check refuses a signature older than the tolerance, not one dated after it: a `t=`
        # further ahead than the same tolerance is no delivery of now (a clock far off, or one kept
        # for replaying later), and is refused alike.
        if _signed_at(signature) > time.time() + stripe.Webhook.DEFAULT_TOLERANCE:
            raise stripe.SignatureVerificationError("the signature's timestamp is in the future", signature, payload)
        return parse_event(payload)

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
        ext["payments"] = Payments(
            s.stripe_secret_key,
            s.stripe_webhook_secret,
            s.stripe_api_base,
            s.stripe_max_network_retries,
            payment_method_types=s.payment_method_types,
        )
    return ext["payments"]
