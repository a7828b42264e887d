"""Tables: registrations, their Checkout Sessions, their timeline, Stripe events, licences and vendor messages."""

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, event, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from paygate.core.db import db, utcnow
from paygate.core.operator_tables import (  # noqa: F401 - named here too, with every other table
    ROLES,
    Notification,
    Operator,
    OperatorAudit,
    OperatorRecoveryCode,
    OperatorSession,
    OperatorToken,
)
from paygate.core.overview_table import OverviewSummary  # noqa: F401 - named here too, with every other table

# A completed platform whose access at LTIaaS differs from what its licence says (or was never told).
ACCESS_DIFFERS = (
    "platform_id IS NOT NULL AND access_wanted IS NOT NULL "
    "AND (platform_active IS NULL OR platform_active <> access_wanted)"
)
# The overview's active platform (paygate/web/operator/overview.py): completed, and its access decided on.
ACTIVE_PLATFORM = "state = 'completed' AND platform_id IS NOT NULL AND access_wanted = true"
# The overview's open invoice (paygate/web/operator/overview.py), matched literally so that the partial index serves.
OPEN_INVOICE = "kind = 'invoice' AND status = 'open'"
# A registration paid before licences existed: its money is in its own columns, not in licence payments.
LEGACY_PAID = "licence_pk IS NULL AND amount_paid IS NOT NULL"


class State(str, enum.Enum):  # noqa: UP042 - a StrEnum would change str(State.PAID) in logs and errors
    PENDING = "pending"  # shown to the admin, not paid
    PAID = "paid"  # money secured (Stripe says paid, or an invoice was sent); not yet completed
    COMPLETING = "completing"  # one caller is talking to LTIaaS Complete right now
    COMPLETED = "completed"  # LTIaaS returned platformId and html
    NEEDS_ATTENTION = "needs_attention"  # paid, not registered: an operator must act
    REFUNDED = "refunded"
    ABANDONED = "abandoned"  # never paid, and the LMS token has run out

    def __str__(self):
        return self.value


class Registration(db.Model):
    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # LTIaaS's registrationId: dies once completed or abandoned.
    registration_id: Mapped[str] = mapped_column(String(200), unique=True)
    # Unguessable key of the flow pages: cookies are third-party inside the LMS frame.
    flow_token: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(20), default=State.PENDING.value)
    # Why an operator must look (set with needs_attention, or beside another state, e.g. a second payment).
    attention: Mapped[str | None] = mapped_column(String(200))

    lms_url: Mapped[str] = mapped_column(String(500))
    lms_family: Mapped[str | None] = mapped_column(String(100))
    lms_version: Mapped[str | None] = mapped_column(String(200))
    lms_details: Mapped[dict | None] = mapped_column(JSON)

    # What was sold: read from the Stripe Price when the admin was shown it.
    price_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    # What the Price costs in its other currencies ({"eur": 4500}), and its period if recurring.
    price_options: Mapped[dict | None] = mapped_column(JSON)
    price_interval: Mapped[str | None] = mapped_column(String(20))  # "year", "2 month"...
    # The offer chosen (paygate/sales/offers.py): `price_id` above, this many of it (seats, or 1), in this unit
    # (student, teacher...; None for an offer sold once). `amount` and `price_options` are the total for it.
    quantity: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    seat_unit: Mapped[str | None] = mapped_column(String(20))
    # The Stripe Product of the Price, as the admin was shown it (paygate/web/identity.py).
    product_name: Mapped[str | None] = mapped_column(String(250))
    product_description: Mapped[str | None] = mapped_column(String(1000))
    # Each new Checkout Session gets a new generation; its idempotency key and expiry are fixed with it.
    checkout_generation: Mapped[int] = mapped_column(Integer, default=0)
    checkout_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Checkout's language (its `locale`), fixed with the generation: a retry replays the same request.
    checkout_locale: Mapped[str | None] = mapped_column(String(10))
    # The label of Checkout's "school or organisation" field, in that language, fixed with the generation too.
    checkout_payer_label: Mapped[str | None] = mapped_column(String(50))

    # Evidence of payment, committed before LTIaaS is called.
    payment_session_id: Mapped[str | None] = mapped_column(String(255))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    amount_paid: Mapped[int | None] = mapped_column(Integer)
    currency_paid: Mapped[str | None] = mapped_column(String(3))
    payer_email: Mapped[str | None] = mapped_column(String(320))
    # The billing name Checkout collected (customer_details.name): operators tell schools apart by it.
    payer_name: Mapped[str | None] = mapped_column(String(200))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime)

    platform_id: Mapped[str | None] = mapped_column(String(200))
    # The licence this platform belongs to (docs/architecture.md, invariant 10): the one its payment, pilot or
    # key opened, or the one an admin joined with its key. Access is decided from that licence.
    # use_alter: licences also point at registrations (the one that opened each); the cycle is broken here.
    licence_pk: Mapped[int | None] = mapped_column(ForeignKey("licences.id", use_alter=True), index=True)
    # Set when a newer platform took this one's place on its licence (PLATFORMS_PER_LICENCE): inactive for good.
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The access the vendor's systems were last told of (platform.access_changed; paygate/licensing/vendor_events.py).
    vendor_access: Mapped[bool | None] = mapped_column(Boolean)
    completion_html: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    platform_active: Mapped[bool | None] = mapped_column(Boolean)

    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The last Complete call may have reached LTIaaS: a later "unknown id" is not a plain refusal.
    attempt_uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[dict | None] = mapped_column(JSON)

    refund_id: Mapped[str | None] = mapped_column(String(255))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Access at LTIaaS (paygate/licensing/access.py). `platform_active` above is what LTIaaS was last told;
    # `access_wanted` what the licence and the override say it should be, with why.
    access_wanted: Mapped[bool | None] = mapped_column(Boolean)
    access_reason: Mapped[str | None] = mapped_column(String(200))
    # An operator's override: True grants, False revokes, None follows the licence.
    access_override: Mapped[bool | None] = mapped_column(Boolean)
    # When the access may change by the clock alone (an invoice's due date plus the grace).
    access_review_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The reconciler's claim on the row while it tells LTIaaS, and its retries.
    access_claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    access_attempts: Mapped[int] = mapped_column(Integer, default=0)
    access_next_at: Mapped[datetime | None] = mapped_column(DateTime)
    access_error: Mapped[dict | None] = mapped_column(JSON)

    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    checkout_sessions: Mapped[list["CheckoutSession"]] = relationship(
        back_populates="registration", order_by="CheckoutSession.id"
    )
    timeline: Mapped[list["TimelineEntry"]] = relationship(back_populates="registration", order_by="TimelineEntry.id")
    licence: Mapped["Licence | None"] = relationship(back_populates="platforms", foreign_keys=[licence_pk])

    __table_args__ = (
        Index("ix_registrations_created_at_id", "created_at", "id"),
        Index("ix_registrations_state_created_at_id", "state", "created_at", "id"),
        # The operator list's offer filter and its list of Prices seen (migration 0008).
        Index("ix_registrations_price_id_created_at_id", "price_id", "created_at", "id"),
        Index("ix_registrations_attention", "attention"),
        Index("ix_registrations_lms_family", "lms_family"),
        Index("ix_registrations_lms_url", "lms_url"),
        Index("ix_registrations_payer_email", "payer_email"),
        Index("ix_registrations_platform_id", "platform_id"),
        Index("ix_registrations_payment_session_id", "payment_session_id"),
        Index("ix_registrations_payment_intent_id", "payment_intent_id"),
        Index("ix_registrations_next_attempt_at", "next_attempt_at"),
        Index("ix_registrations_access_review_at", "access_review_at"),
        # The reconciler's work list: platforms whose access differs from what LTIaaS was told.
        Index(
            "ix_registrations_access_differs",
            "id",
            postgresql_where=text(ACCESS_DIFFERS),
            sqlite_where=text(ACCESS_DIFFERS),
        ),
        # The overview's counts (migration 0012): active platforms and their licences, and money paid before licences.
        Index(
            "ix_registrations_active_platform",
            "licence_pk",
            postgresql_where=text(ACTIVE_PLATFORM),
            sqlite_where=text(ACTIVE_PLATFORM),
        ),
        Index(
            "ix_registrations_legacy_paid",
            "paid_at",
            postgresql_where=text(LEGACY_PAID),
            sqlite_where=text(LEGACY_PAID),
        ),
        # Operator search (migration 0002): payer e-mail whatever its case; LMS URL by prefix (LIKE 'x%').
        Index("ix_registrations_payer_email_lower", func.lower(payer_email)),
        Index(
            "ix_registrations_lms_url_lower",
            func.lower(lms_url).label("lms_url_lower"),
            postgresql_ops={"lms_url_lower": "text_pattern_ops"},
        ),
    )

    @property
    def needs_attention(self) -> bool:
        return self.attention is not None


class Licence(db.Model):
    """A school's licence: what Stripe says of its money (or its pilot), the facts that decide the access
    of every platform on it."""

    __tablename__ = "licences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The registration that opened it (its payment, invoice or pilot); its Stripe objects name that one.
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # payment, subscription, invoice, pilot
    # The licence key, kept only as its SHA-256 (paygate/licensing/keys.py), and its last 4 characters.
    key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str | None] = mapped_column(String(4))
    # A pilot's end (PILOT_DAYS); kept once the pilot is paid for, so that its LMS gets no second pilot.
    pilot_ends_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    # A payment started on the licence page before the pilot ended: access holds until its Checkout expires.
    payment_pending_until: Mapped[datetime | None] = mapped_column(DateTime)
    # SHA-256 of the licence as the vendor's systems were last told it (licence.updated is sent when it differs).
    vendor_state: Mapped[str | None] = mapped_column(String(64))
    # Stripe's status of the licence's object: the PaymentIntent's, the subscription's or the invoice's.
    status: Mapped[str | None] = mapped_column(String(40))
    # A subscription billed by invoice: the subscription's status beside the invoice's.
    subscription_status: Mapped[str | None] = mapped_column(String(40))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(255), index=True)  # the newest invoice
    period_end: Mapped[datetime | None] = mapped_column(DateTime)
    due_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_paid_at: Mapped[datetime | None] = mapped_column(DateTime)
    currency: Mapped[str | None] = mapped_column(String(3))
    # What was bought, as Stripe billed it: the Price, how many (seats), in what unit; the amount after
    # discounts and before tax, the discount and the tax (minor units), and the promotion code used.
    price_id: Mapped[str | None] = mapped_column(String(255), index=True)
    quantity: Mapped[int | None] = mapped_column(Integer)
    seat_unit: Mapped[str | None] = mapped_column(String(20))
    amount: Mapped[int | None] = mapped_column(Integer)
    discount: Mapped[int | None] = mapped_column(Integer)
    tax: Mapped[int | None] = mapped_column(Integer)
    promotion_code: Mapped[str | None] = mapped_column(String(100))
    promotion_code_id: Mapped[str | None] = mapped_column(String(255))  # the invoice form's, sent to Stripe
    # Where Stripe Tax places an invoiced school (STRIPE_TAX): kept until the Stripe Customer is made with it.
    billing_country: Mapped[str | None] = mapped_column(String(2))
    billing_postal_code: Mapped[str | None] = mapped_column(String(20))
    # The invoice's PDF (a card payment's paper trail with CARD_PAYMENT_INVOICE, or the invoice sent).
    invoice_pdf: Mapped[str | None] = mapped_column(Text)

    # Who pays: the school or organisation (the invoice form, or Checkout's required field), and for
    # invoices the billing e-mail and purchase order.
    billing_email: Mapped[str | None] = mapped_column(String(320))
    organisation: Mapped[str | None] = mapped_column(String(200))
    po_number: Mapped[str | None] = mapped_column(String(140))
    invoice_form_id: Mapped[str | None] = mapped_column(String(64))
    invoice_number: Mapped[str | None] = mapped_column(String(100))
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    amount_due: Mapped[int | None] = mapped_column(Integer)
    amount_remaining: Mapped[int | None] = mapped_column(Integer)
    invoice_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # One caller at a time makes the invoice at Stripe; others wait for it (a stale claim is retaken).
    invoicing_claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    invoicing_error: Mapped[str | None] = mapped_column(String(300))
    # Bumped after an answer Stripe keeps under its idempotency key (a 5xx): the next try takes new
    # keys, and first looks at Stripe for what the failed call may have made.
    invoicing_attempt: Mapped[int] = mapped_column(Integer, default=0)

    # A subscription an operator set to end at its period's end (Stripe's cancel_at_period_end), no refund.
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # A dispute open on any of its payments, for operators.
    dispute_open: Mapped[bool] = mapped_column(Boolean, default=False)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime)  # last read from Stripe
    # When the read of Stripe last applied to it was started (paygate/licensing/licences.py: apply_fresh): an
    # older read is never written over a newer one.
    stripe_read_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    registration: Mapped[Registration] = relationship(foreign_keys=[registration_pk])
    # Its platforms, oldest first (a platform replaced on it stays here, inactive).
    platforms: Mapped[list[Registration]] = relationship(
        back_populates="licence", foreign_keys=[Registration.licence_pk], order_by=Registration.id
    )
    payments: Mapped[list["LicencePayment"]] = relationship(back_populates="licence", order_by="LicencePayment.id")

    __table_args__ = (
        Index("ix_licences_kind_status", "kind", "status"),
        Index("ix_licences_due_at", "due_at"),
        # The overview's overdue invoices (migration 0012): counted, summed and listed from the index alone.
        Index(
            "ix_licences_open_invoice_due_at",
            "due_at",
            "id",
            postgresql_where=text(OPEN_INVOICE),
            sqlite_where=text(OPEN_INVOICE),
            postgresql_include=["currency", "amount_remaining"],
        ),
    )


class LicencePayment(db.Model):
    """One Stripe payment (a PaymentIntent and its charge) made for a licence, with its refunds and dispute."""

    __tablename__ = "licence_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    licence_pk: Mapped[int] = mapped_column(ForeignKey("licences.id"), index=True)
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime)
    amount_refunded: Mapped[int] = mapped_column(Integer, default=0)
    refund_id: Mapped[str | None] = mapped_column(String(255))
    refund_status: Mapped[str | None] = mapped_column(String(30))
    dispute_id: Mapped[str | None] = mapped_column(String(255))
    dispute_status: Mapped[str | None] = mapped_column(String(40))
    dispute_due_by: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    licence: Mapped[Licence] = relationship(back_populates="payments")

    __table_args__ = (
        # The overview's money per month (migration 0012): read from the index alone, by month of payment.
        Index(
            "ix_licence_payments_paid_at_money",
            "paid_at",
            "currency",
            "amount",
            "amount_refunded",
            "dispute_status",
        ),
    )

    @property
    def fully_refunded(self) -> bool:
        return self.amount is not None and self.amount > 0 and self.amount_refunded >= self.amount


class CheckoutSession(db.Model):
    """A Stripe Checkout Session we created for a registration, with what Stripe last told us."""

    __tablename__ = "checkout_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), unique=True)
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"), index=True)
    # The registration's Checkout generation; negative for a session opened on the licence page to pay the licence
    # this registration opened (paygate/sales/licence_checkout.py): never the frame's session.
    generation: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # open, complete, expired
    payment_status: Mapped[str] = mapped_column(String(30))  # unpaid, paid, no_payment_required
    url: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    amount_total: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payer_email: Mapped[str | None] = mapped_column(String(320))
    # The choice it was opened for: it is fulfilled only for this Price and quantity, at these totals
    # before discounts and tax ({"usd": 36000, "eur": 33000}).
    price_id: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int | None] = mapped_column(Integer)
    amounts: Mapped[dict | None] = mapped_column(JSON)
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime)  # the admin came back via cancel_url
    failed_at: Mapped[datetime | None] = mapped_column(DateTime)  # async payment failed
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    registration: Mapped[Registration] = relationship(back_populates="checkout_sessions")


class TimelineEntry(db.Model):
    """One line of a registration's history: a state change, an event, an attempt, an operator action."""

    __tablename__ = "timeline_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))  # state, event, attempt, operator, note
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    # Who or what caused it: "webhook evt_...", "return", "worker", "reconcile", "operator a@b".
    cause: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON)

    registration: Mapped[Registration] = relationship(back_populates="timeline")


class StripeEvent(db.Model):
    """Each verified Stripe event, once by its id; repeats only count deliveries."""

    __tablename__ = "stripe_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    session_id: Mapped[str | None] = mapped_column(String(255), index=True)
    registration_pk: Mapped[int | None] = mapped_column(ForeignKey("registrations.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[str | None] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)  # the raw, verified body


PENDING_MESSAGE = "status = 'pending'"


class VendorMessage(db.Model):
    """One event for the vendor's systems (docs/architecture.md, invariant 12): written in the transaction of the
    change it reports, then delivered in order per licence, at least once, always with the same `message_id`."""

    __tablename__ = "vendor_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)  # the webhook-id header, the same every try
    type: Mapped[str] = mapped_column(String(40))  # registration.completed, licence.updated, platform.access_changed
    registration_pk: Mapped[int] = mapped_column(ForeignKey("registrations.id"), index=True)
    # Messages of one licence are delivered in the order written (by id); one without a licence stands alone.
    licence_pk: Mapped[int | None] = mapped_column(ForeignKey("licences.id"))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, signed and sent byte for byte the same every try
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, delivered, failed (gave up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)  # a sender's lease while it is sending
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)  # the endpoint's HTTP status, None: no answer
    last_answer: Mapped[str | None] = mapped_column(String(300))  # the start of its answer, or what went wrong
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        Index("ix_vendor_messages_status_next_attempt_at", "status", "next_attempt_at"),
        # A licence's messages not delivered yet, in order: what decides whether one is due (a delivered history,
        # however long, is not read).
        Index(
            "ix_vendor_messages_pending_licence_pk_id",
            "licence_pk",
            "id",
            postgresql_where=text(PENDING_MESSAGE),
            sqlite_where=text(PENDING_MESSAGE),
        ),
    )


@event.listens_for(Licence, "after_insert")
def _holds_the_platform_that_opened_it(mapper, connection, licence: Licence) -> None:
    """A licence holds the platform of the registration that opened it (paygate/licensing/licences.py sets it
    too, for its own INSERT ... ON CONFLICT, which bypasses the ORM): one rule wherever a licence is written."""
    registrations = Registration.__table__
    connection.execute(
        registrations.update()
        .where(registrations.c.id == licence.registration_pk, registrations.c.licence_pk.is_(None))
        .values(licence_pk=licence.id)
    )
