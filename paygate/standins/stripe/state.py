"""What one Stripe stand-in holds (`State`), and what a fresh one sells (its catalogue of prices and products)."""

import threading

from paygate.standins.stripe import promotions

KINDS = (
    "checkout.session",
    "customer",
    "payment_intent",
    "charge",
    "refund",
    "dispute",
    "subscription",
    "invoice",
    "invoiceitem",
    "billing_portal.session",
)
DESCRIPTION = "Registers the tool in your LMS for one institution."


def make_product(product_id: str, name: str, description: str | None = DESCRIPTION) -> dict:
    return {
        "id": product_id,
        "object": "product",
        "active": True,
        "created": 1700000000,
        "description": description,
        "livemode": False,
        "metadata": {},
        "name": name,
        "type": "service",
        "default_price": None,
    }


def recurring(interval: str | None) -> dict | None:
    """A price's `recurring` field: every `interval` ("year", "month"), or None for a one-time price."""
    return (
        {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None, "trial_period_days": None}
        if interval
        else None
    )


def make_price(
    price_id: str,
    product: str,
    unit_amount: int | None = 4900,
    interval: str | None = None,
    active: bool = True,
    currency: str = "usd",
    metadata: dict | None = None,
    tiers: list | None = None,
    tiers_mode: str | None = None,
    **currency_options: int,
) -> dict:
    """A Price; its private `_options` holds its unit amount in each currency it sells in. With `tiers`
    ([{up_to, unit_amount, flat_amount}], the last up_to None for "inf") it is tiered (`tiers_mode` volume or
    graduated) and has no unit amount."""
    if tiers:
        unit_amount = None
    return {
        "id": price_id,
        "object": "price",
        "active": active,
        "billing_scheme": "tiered" if tiers else "per_unit",
        "created": 1700000000,
        "currency": currency,
        "livemode": False,
        "lookup_key": None,
        "metadata": dict(metadata or {}),
        "nickname": None,
        "product": product,
        "tax_behavior": "unspecified",
        "tiers_mode": tiers_mode if tiers else None,
        "transform_quantity": None,
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
        "type": "recurring" if interval else "one_time",
        "recurring": recurring(interval),
        "_options": {currency: unit_amount, **currency_options},
        "_tiers": [dict(t) for t in tiers] if tiers else None,
    }


def local_catalogue(price_id: str) -> tuple[dict, dict]:
    """(prices, products) of the local run: the configured one-time Price plus a few fixed ones to try other plans
    with (the configured id may name one of those)."""
    products = {
        pid: make_product(pid, name)
        for pid, name in (
            ("prod_local", "Tool registration"),
            ("prod_local_yearly", "Tool licence (yearly)"),
            ("prod_local_monthly", "Tool licence (monthly)"),
            ("prod_local_seats", "Tool licence per student (yearly)"),
            ("prod_local_tiered", "Tool licence per teacher (tiered pricing)"),
        )
    }
    products["prod_local_seats"]["description"] = "Every student of the school uses the tool for a year."
    products["prod_local_tiered"]["description"] = "Teachers use the tool; the more teachers, the less each costs."
    fixed = [
        # 3.00 USD per student per year, 10 to 5000 students.
        make_price(
            "price_local_seats_yearly",
            "prod_local_seats",
            300,
            interval="year",
            metadata={"seats": "10-5000", "seat_unit": "student"},
        ),
        # Paid once, graduated: the first 10 teachers 20.00 USD each, the next 40 15.00, every further one 10.00.
        make_price(
            "price_local_tiered",
            "prod_local_tiered",
            metadata={"seats": "1-500", "seat_unit": "teacher"},
            tiers_mode="graduated",
            tiers=[
                {"up_to": 10, "unit_amount": 2000, "flat_amount": None},
                {"up_to": 50, "unit_amount": 1500, "flat_amount": None},
                {"up_to": None, "unit_amount": 1000, "flat_amount": None},
            ],
        ),
        make_price("price_local_yearly", "prod_local_yearly", interval="year"),
        make_price("price_local_monthly", "prod_local_monthly", 900, interval="month"),
        make_price("price_local_multi", "prod_local", eur=4500, gbp=3900),
        make_price("price_local_archived", "prod_local", active=False),
    ]
    # STRIPE_PRICE_ID may list several; each id not among the fixed ones sells flat, once, 49.00 USD.
    configured = [p.strip() for p in (price_id or "").split(",") if p.strip()]
    prices = {pid: make_price(pid, "prod_local") for pid in configured}
    prices.update({p["id"]: p for p in fixed})
    return prices, products


class State:
    """Everything one Stripe stand-in holds: one store per object type (each in creation order; the dashboard
    lists them newest first), the idempotency keys seen, the events sent (newest last), and its catalogue
    (`prices` and `products` by id: the local run's fixed ones unless changed).

    `deliver(state, event, payload, signature)` sends an event (by default: POSTed to {public_url}/webhooks/stripe
    in a background thread); `on_change(state)` is called, lock held, after each call that may have changed
    something.

    Dials the local run leaves alone and the tests' stand-in (tests/fakes.Stripe) turns:
    - `calls`: None, or a list that gets (operation, idempotency key / object id / path) for each API call;
    - `failures`: operation name ("customer_create", "retrieve_charge", ...) -> statuses, or exceptions to raise,
      for its next calls (a 5xx is kept under the call's idempotency key and replayed, as Stripe does);
    - `probe`: called with the operation's name while the caller waits on the stand-in;
    - `refund_status`: the status of refunds made through the API ("pending" for a bank that takes its time);
    - `invoice_prefix`: invoices numbered account-wide {prefix}-0001, ... instead of per customer;
    - `invoice_url`: the hosted invoice page, "{id}" filled in, instead of the dashboard;
    - `payments_follow_sessions`: a Checkout payment's PaymentIntent is found only while a session names it (a
      test removes the session to make Stripe forget the payment);
    - `one_dispute_per_charge`: as in Stripe; False lets a test dispute one charge again and again.
    """

    def __init__(self, settings, deliver=None):
        self.settings = settings
        self.lock = threading.RLock()
        self.stores: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.idempotency: dict[str, list] = {}  # key -> [fingerprint, status, body text]
        self.events: list[dict] = []
        self.seq = 0
        self.invoice_seq = 0
        self.prices, self.products = local_catalogue(settings.stripe_price_id)
        self.coupons, self.promotion_codes = promotions.local_promotions()
        self.deliver = deliver
        self.on_change = None
        self.calls: list[tuple[str, str | None]] | None = None
        self.failures: dict[str, list] = {}
        self.probe = None
        self.refund_status = "succeeded"
        self.invoice_prefix: str | None = None
        self.invoice_url: str | None = None
        self.payments_follow_sessions = False
        self.one_dispute_per_charge = True

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def reset(self) -> None:
        """Forget every object, idempotency key and event."""
        with self.lock:
            for store in (*self.stores.values(), self.idempotency):
                store.clear()
            self.events.clear()
            self.changed()

    def dump(self) -> dict:
        """What survives a restart (JSON)."""
        with self.lock:
            return {
                "stores": self.stores,
                "idempotency": self.idempotency,
                "events": self.events,
                "seq": self.seq,
                "invoice_seq": self.invoice_seq,
                # the catalogue is rebuilt at start; what was used of its coupons and codes is not
                "redeemed": {
                    "coupons": {k: c["times_redeemed"] for k, c in self.coupons.items()},
                    "promotion_codes": {k: p["times_redeemed"] for k, p in self.promotion_codes.items()},
                },
            }

    def load(self, saved: dict) -> None:
        with self.lock:
            for kind, store in self.stores.items():
                store.clear()
                store.update((saved.get("stores") or {}).get(kind) or {})
            self.idempotency.clear()
            self.idempotency.update(saved.get("idempotency") or {})
            self.events[:] = saved.get("events") or []
            self.seq = int(saved.get("seq") or 0)
            self.invoice_seq = int(saved.get("invoice_seq") or 0)
            redeemed = saved.get("redeemed") or {}
            for kind, store in (("coupons", self.coupons), ("promotion_codes", self.promotion_codes)):
                for object_id, count in (redeemed.get(kind) or {}).items():
                    if object_id in store:
                        store[object_id]["times_redeemed"] = int(count)
