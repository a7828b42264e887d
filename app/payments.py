"""Stripe: the one module that talks to it. Views and fulfilment see plain values, never StripeObjects."""
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import stripe
from flask import current_app

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
_PRICE_TTL_SECONDS = 300


class PaymentProviderError(Exception):
    """Stripe could not be asked (network, rate limit, 5xx) or refused; the message is safe to show.

    `replayed` when retrying with the same idempotency key would only replay this answer: Stripe
    keeps the result of a request that reached its API, a 5xx or a refusal included.
    """

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.replayed = http_status is not None and http_status not in (409, 429)


@dataclass(frozen=True)
class Price:
    id: str
    unit_amount: int
    currency: str
    recurring: bool
    product_name: str | None = None


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


def valid_session_id(value: str | None) -> bool:
    return bool(value) and _SESSION_ID.match(value) is not None


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
    )


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
        p = self._call("read the price", self._client.v1.prices.retrieve, price_id,
                       params={"expand": ["product"]}).to_dict()
        product = p.get("product")
        price = Price(id=p["id"], unit_amount=p.get("unit_amount") or 0, currency=p["currency"].lower(),
                      recurring=bool(p.get("recurring")),
                      product_name=product.get("name") if isinstance(product, dict) else None)
        with self._lock:
            self._prices[price_id] = (time.monotonic(), price)
        return price

    def create_checkout_session(self, *, price_id: str, reference: str, metadata: dict,
                                success_url: str, cancel_url: str, expires_at: datetime,
                                idempotency_key: str) -> CheckoutView:
        params = {
            "mode": "payment",
            "ui_mode": "hosted_page",
            "line_items": [{"price": price_id, "quantity": 1}],
            "client_reference_id": reference,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
            "expires_at": int(expires_at.replace(tzinfo=timezone.utc).timestamp()),
        }
        if self._payment_method_types:
            params["payment_method_types"] = self._payment_method_types
        session = self._call("start the checkout", self._client.v1.checkout.sessions.create,
                             params=params, options={"idempotency_key": idempotency_key})
        return _view(session)

    def retrieve_checkout_session(self, session_id: str) -> CheckoutView:
        if not valid_session_id(session_id):
            raise ValueError("not a Checkout Session id")
        session = self._call("confirm the payment", self._client.v1.checkout.sessions.retrieve,
                             session_id, params={"expand": ["line_items"]})
        return _view(session)

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

    def refund(self, payment_intent: str, idempotency_key: str, metadata: dict | None = None) -> dict:
        refund = self._call("refund the payment", self._client.v1.refunds.create,
                            params={"payment_intent": payment_intent, "metadata": metadata or {}},
                            options={"idempotency_key": idempotency_key})
        return refund.to_dict()

    def construct_event(self, payload: bytes, signature: str | None) -> dict:
        """Verify a webhook on its raw body; raise ValueError or stripe.SignatureVerificationError."""
        event = self._client.construct_event(payload, signature, self._webhook_secret)
        return event.to_dict()

    def dashboard_url(self, kind: str, object_id: str) -> str:
        """A link into the Stripe dashboard, test or live as the key says."""
        base = "https://dashboard.stripe.com" + ("" if self.live else "/test")
        return f"{base}/{kind}/{object_id}"


def gateway() -> Payments:
    """The application's Stripe gateway; tests may put their own into app.extensions['payments']."""
    ext = current_app.extensions
    if "payments" not in ext:
        s = current_app.config["SETTINGS"]
        ext["payments"] = Payments(s.stripe_secret_key, s.stripe_webhook_secret, s.stripe_api_base,
                                   s.stripe_max_network_retries, payment_method_types=s.payment_method_types)
    return ext["payments"]
