"""Stripe: the one module that talks to it. Views and fulfilment see plain values, never StripeObjects."""

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import stripe
from flask import current_app

from paygate.core import telemetry
from paygate.gateways.payments.billing import Billing
from paygate.gateways.payments.catalogue import Catalogue
from paygate.gateways.payments.objects import (
    OPERATIONS,
    ORGANISATION_FIELD,
    ORGANISATION_MAX,
    AlreadyRefunded,
    CheckoutView,
    DisputeView,
    InvoiceView,
    ObjectMissing,
    PaymentProviderError,
    PaymentView,
    RefundView,
    SubscriptionView,
    check_id,
    checkout_view,
    dispute_view,
    id_of,
    invoice_view,
    parse_event,
    payment_view,
    raise_,
    refund_view,
    subscription_view,
    valid_id,
    valid_session_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckoutOptions:
    """What Checkout Sessions also carry (settings PROMOTION_CODES, STRIPE_TAX, CARD_PAYMENT_INVOICE)."""

    promotion_codes: bool = False
    tax: bool = False
    card_payment_invoice: bool = False

    def checkout_params(
        self, recurring: bool, metadata: dict, organisation_label: str | None, customer: str | None = None
    ) -> dict:
        params = {"customer": customer} if customer else {}
        if organisation_label:  # the paying school's name: every Canvas cloud school has the same LMS URL
            params["custom_fields"] = [
                {
                    "key": ORGANISATION_FIELD,
                    "label": {"type": "custom", "custom": organisation_label[:50]},
                    "type": "text",
                    "optional": False,
                    "text": {"maximum_length": ORGANISATION_MAX},
                }
            ]
        if self.promotion_codes:
            params["allow_promotion_codes"] = True
        if self.tax:
            params["automatic_tax"] = {"enabled": True}
            params["tax_id_collection"] = {"enabled": True}
        if not recurring:
            if not customer:  # Stripe refuses both; a licence paid again keeps the Customer it has
                # A Customer for every payment: receipts, the paper trail and later the billing portal need one.
                params["customer_creation"] = "always"
            if self.card_payment_invoice:
                params["invoice_creation"] = {"enabled": True, "invoice_data": {"metadata": metadata}}
        return params


class Payments(Catalogue, Billing):
    """Stripe through one client: Checkout, payments and refunds here, Prices and promotion codes
    (`Catalogue`), customers, invoices and subscriptions (`Billing`)."""

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        api_base: str | None,
        max_network_retries: int = 2,
        timeout: float = 8,
        payment_method_types: list[str] = (),
        offers=None,
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
        # What Checkout also does, from the settings: promotion codes, tax, the card payment's invoice.
        self._offers = offers or CheckoutOptions()
        self.live = secret_key.startswith(("sk_live_", "rk_live_"))
        self._init_catalogue()

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
        quantity: int = 1,
        organisation_label: str | None = None,
        customer: str | None = None,
    ) -> CheckoutView:
        """A hosted Checkout Session for `quantity` of the Price, fixed (the admin chose it in the frame), for
        `customer` (a licence's, when it has one) or a Customer Stripe creates."""
        params = {
            "mode": "subscription" if recurring else "payment",
            "ui_mode": "hosted_page",
            "line_items": [{"price": price_id, "quantity": quantity}],
            "client_reference_id": reference,
            "metadata": metadata,
            # The reference travels with the money: on the PaymentIntent, or on the subscription.
            ("subscription_data" if recurring else "payment_intent_data"): {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
            "expires_at": int(expires_at.replace(tzinfo=UTC).timestamp()),
        }
        if self._payment_method_types:  # stripe-python 16 (API 2026-10-28) knows no payment_method_types here
            params["allowed_payment_method_types"] = self._payment_method_types
        params.update(self._offers.checkout_params(recurring, metadata, organisation_label, customer))
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
            params={"expand": ["line_items", "discounts.promotion_code", "invoice"]},
        )
        return self.with_subscription(checkout_view(session))

    def with_subscription(self, view: CheckoutView) -> CheckoutView:
        """A paid subscription-mode session with its subscription read now (status, invoice, payments)."""
        if view.mode != "subscription" or not view.subscription or view.payment_status == "unpaid":
            return view
        return replace(view, subscription_view=self.retrieve_subscription(view.subscription))

    def list_checkout_sessions(self, created_gte: int, page_size: int = 100):
        """Every Checkout Session created since `created_gte`, newest first, across pages."""
        starting_after = None
        while True:
            params = {
                "limit": page_size,
                "created": {"gte": created_gte},
                "expand": ["data.line_items", "data.discounts.promotion_code", "data.invoice"],
            }
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

    def refund(
        self,
        payment_intent: str,
        idempotency_key: str,
        metadata: dict | None = None,
        amount: int | None = None,
        reason: str | None = None,
    ) -> RefundView:
        """Refund `amount` of a payment (all that is left by default), for one of Stripe's `reason`s; raises
        AlreadyRefunded when Stripe says it was refunded already."""
        params: dict = {"payment_intent": payment_intent, "metadata": metadata or {}}
        if amount is not None:
            params["amount"] = amount
        if reason is not None:
            params["reason"] = reason
        try:
            with telemetry.outbound("stripe", OPERATIONS["refund the payment"]):
                refund = self._client.v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
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
        ext["payments"] = from_settings(current_app.config["SETTINGS"])
    return ext["payments"]


def from_settings(s) -> Payments:
    """A gateway for these settings (the app's, or a process's start-up check before any app context)."""
    return Payments(
        s.stripe_secret_key,
        s.stripe_webhook_secret,
        s.stripe_api_base,
        s.stripe_max_network_retries,
        payment_method_types=s.payment_method_types,
        offers=CheckoutOptions(
            promotion_codes=s.promotion_codes, tax=s.stripe_tax, card_payment_invoice=s.card_payment_invoice
        ),
    )
