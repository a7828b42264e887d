"""Licences: what Stripe says of a school's money, kept current from Stripe's own objects.

A registration opens at most one licence (a one-time payment, a subscription, an invoice with its subscription
when the Price is recurring, or a pilot), which holds its platform and those that join it by key. Every update
comes from an object just read from Stripe (never an event's snapshot), so late, repeated and out-of-order
events converge on Stripe's truth; what Stripe gives back is applied only if it is that licence's
(`invoice_belongs`, `subscription_belongs`). Each change leaves a timeline entry and decides the access of
every platform on the licence again (paygate/licensing/access.py). Functions flush; their callers commit.
"""

import logging

from flask import current_app
from sqlalchemy import or_, select, update

from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import Licence, LicencePayment, Registration
from paygate.core.registrations import record
from paygate.gateways import payments
from paygate.licensing import access, keys

log = logging.getLogger(__name__)


def of(reg: Registration) -> Licence | None:  # the one its platform is on: the one it opened, or joined by key
    db.session.refresh(reg, ["licence_pk"])  # another transaction may have just opened or joined one
    return db.session.get(Licence, reg.licence_pk) if reg.licence_pk else None


locked = access.locked  # the licence's row lock, which every writer of a licence takes first


def apply_fresh(licence_pk: int, fetch, apply, skipped, belongs=None, foreign=None):
    """Read from Stripe with no transaction open, then apply under the licence's lock; flushes.

    Reads are applied in the order they were started: a read that started before one already applied
    (another event about the same licence, read a moment later) is not written over it, and `skipped`
    is returned instead. So an older answer of Stripe never overwrites a newer one, and duplicate
    events at the same moment queue on the lock without failing. What was read is applied only if
    `belongs(licence, fetched)` (when given) says it is this licence's; otherwise nothing changes and
    `foreign` is returned.
    """
    db.session.commit()
    started = utcnow()
    fetched = fetch()
    licence = locked(licence_pk)
    if belongs is not None and not belongs(licence, fetched):
        log.warning("licence %s: what Stripe gave back is not this licence's; nothing applied", licence_pk)
        return foreign
    if licence.stripe_read_at is not None and licence.stripe_read_at > started:
        log.info("licence %s: a newer read of Stripe was applied meanwhile; this one is dropped", licence_pk)
        return skipped
    licence.stripe_read_at = started
    return apply(licence, fetched)


def open_licence(reg: Registration, kind: str, **values) -> tuple[Licence, bool]:
    """The registration's licence, created with `kind` on first use (a unique row per registration) with
    the key derived from its flow token; and whether this call created it (of simultaneous callers, one)."""
    now = utcnow()
    key = keys.derived(reg.flow_token, current_app.config["SETTINGS"].secret_key)  # platforms.key_of
    created = insert_ignoring_duplicates(
        Licence,
        {
            "registration_pk": reg.id,
            "kind": kind,
            "key_hash": keys.digest(key),
            "key_hint": keys.hint(key),
            "dispute_open": False,
            "invoicing_attempt": 0,
            "created_at": now,
            "updated_at": now,
            **values,
        },
    )
    licence = db.session.scalars(select(Licence).where(Licence.registration_pk == reg.id)).one()
    if created:  # the registration's platform belongs to the licence it opened
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id, Registration.licence_pk.is_(None))
            .values(licence_pk=licence.id)
        )
        db.session.refresh(reg, ["licence_pk"])
    db.session.refresh(licence)
    return licence, created


def add_payment(
    licence: Licence,
    payment_intent: str,
    *,
    amount: int | None,
    currency: str | None,
    paid_at=None,
    invoice_id: str | None = None,
) -> LicencePayment:
    """A payment made for the licence, recorded once by its PaymentIntent id."""
    now = utcnow()
    insert_ignoring_duplicates(
        LicencePayment,
        {
            "licence_pk": licence.id,
            "registration_pk": licence.registration_pk,
            "payment_intent_id": payment_intent,
            "invoice_id": invoice_id,
            "amount": amount,
            "currency": currency,
            "paid_at": paid_at or now,
            "amount_refunded": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    return db.session.scalars(select(LicencePayment).where(LicencePayment.payment_intent_id == payment_intent)).one()


def _update(reg: Registration, licence: Licence, cause: str, changes: dict, what: str) -> bool:
    """Apply `changes` to the licence; a timeline entry names what changed. False when nothing did."""
    changed = {k: v for k, v in changes.items() if getattr(licence, k) != v}
    if not changed:
        return False
    for key, value in changed.items():
        setattr(licence, key, value)
    licence.updated_at = utcnow()
    db.session.flush()
    shown = {k: (v.isoformat(sep=" ") if hasattr(v, "isoformat") else v) for k, v in changed.items()}
    record(reg, "licence", cause=cause, details=shown, message=f"Licence: {what}.")
    return True


# From a paid Checkout Session (card payment or the first payment of a subscription).


def record_checkout(reg: Registration, view: payments.CheckoutView, cause: str) -> Licence:
    """The licence a paid session starts; called in the transaction that records the payment."""
    now = utcnow()
    bought = _bought(reg, view)
    if view.subscription_view is not None:
        sub = view.subscription_view
        licence, _ = open_licence(
            reg, "subscription", subscription_id=sub.id, customer_id=sub.customer, currency=view.currency, **bought
        )
        apply_subscription(reg, licence, sub, cause)
    else:
        # A promotion code that took the whole amount: Stripe made no payment (`no_payment_required`).
        status = "succeeded" if view.payment_status == "paid" else view.payment_status
        licence, _ = open_licence(
            reg,
            "payment",
            status=status,
            currency=view.currency,
            first_paid_at=now,
            customer_id=view.customer,
            **bought,
        )
        if view.payment_intent:
            add_payment(licence, view.payment_intent, amount=view.amount_total, currency=view.currency)
        record(
            reg,
            "licence",
            cause=cause,
            message="Licence: paid once.",
            details={"kind": "payment", "payment_intent": view.payment_intent},
        )
    access.refresh(reg, cause)
    return licence


def _bought(reg: Registration, view: payments.CheckoutView) -> dict:
    """What a paid session bought, as Stripe billed it (the session was checked against the choice already)."""
    return {
        "price_id": view.price_ids[0] if view.price_ids else reg.price_id,
        "quantity": view.quantity or reg.quantity,
        "seat_unit": reg.seat_unit,
        "amount": view.amount_before_tax,
        "discount": view.amount_discount or None,
        "tax": view.amount_tax,
        "promotion_code": view.promotion_code,
        "organisation": view.organisation,
        "invoice_id": view.invoice,
        "hosted_invoice_url": view.invoice_url,
        "invoice_pdf": view.invoice_pdf,
    }


# Subscriptions and invoices.


def apply_subscription(reg: Registration, licence: Licence, sub: payments.SubscriptionView, cause: str) -> bool:
    """What Stripe says of the subscription now (status, period, newest invoice and its payments)."""
    changes = {"customer_id": sub.customer or licence.customer_id, "cancel_at_period_end": sub.cancel_at_period_end}
    if sub.quantity is not None:  # seats changed at Stripe (dashboard, portal): the licence follows
        changes.update(quantity=sub.quantity, price_id=sub.price_id or licence.price_id)
    if licence.kind == "subscription":
        changes.update(status=sub.status, period_end=sub.period_end)
    else:  # billed by invoice: the invoice decides, the subscription can still end it
        changes.update(subscription_status=sub.status, period_end=sub.period_end)
    changed = _update(
        reg,
        licence,
        cause,
        changes,
        f"subscription {sub.id} is {sub.status}"
        + (f", period ends {sub.period_end:%Y-%m-%d}" if sub.period_end else "")
        + (", not renewed" if sub.cancel_at_period_end else "")
        + (f", {sub.quantity} {licence.seat_unit or 'seat'}(s)" if sub.quantity is not None else ""),
    )
    if sub.latest_invoice is not None:
        changed |= apply_invoice(reg, licence, sub.latest_invoice, cause)
    return changed


def apply_invoice(reg: Registration, licence: Licence, invoice: payments.InvoiceView, cause: str) -> bool:
    """An invoice of the licence as Stripe has it now; the newest one is the one that counts."""
    changed = False
    for payment_intent in invoice.payment_intents:
        known = db.session.scalars(
            select(LicencePayment.id).where(LicencePayment.payment_intent_id == payment_intent)
        ).first()
        if known is None:
            add_payment(
                licence,
                payment_intent,
                amount=invoice.amount_paid,
                currency=invoice.currency,
                paid_at=invoice.paid_at,
                invoice_id=invoice.id,
            )
            record(
                reg,
                "licence",
                cause=cause,
                details={"invoice": invoice.id, "payment_intent": payment_intent},
                message=f"Invoice {invoice.number or invoice.id} paid ({payment_intent}).",
            )
            changed = True
    older = licence.invoice_id not in (None, invoice.id) and _is_older(licence, invoice)
    if older:  # a late event about a previous period's invoice: its payments count, its status does not
        return changed
    changes = {
        "invoice_id": invoice.id,
        "invoice_number": invoice.number or licence.invoice_number,
        "hosted_invoice_url": invoice.hosted_invoice_url or licence.hosted_invoice_url,
        "invoice_pdf": invoice.invoice_pdf or licence.invoice_pdf,
        "amount_due": invoice.amount_due,
        "amount_remaining": invoice.amount_remaining,
        "currency": invoice.currency or licence.currency,
    }
    if licence.kind == "invoice":
        changes.update(status=invoice.status, due_at=invoice.due_date)
    if invoice.status == "paid" and licence.first_paid_at is None:
        changes["first_paid_at"] = invoice.paid_at or utcnow()
    due = f", due {invoice.due_date:%Y-%m-%d}" if invoice.due_date else ""
    changed |= _update(reg, licence, cause, changes, f"invoice {invoice.number or invoice.id} is {invoice.status}{due}")
    return changed


def _is_older(licence: Licence, invoice: payments.InvoiceView) -> bool:
    """Whether `invoice` precedes the licence's current one (Stripe numbers a customer's invoices
    PREFIX-0001, -0002, ... -10000: compared as numbers, not as text)."""
    mine, theirs = _sequence(licence.invoice_number), _sequence(invoice.number)
    return mine is not None and theirs is not None and theirs < mine


def _sequence(number: str | None) -> int | None:
    tail = (number or "").rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def _mapping(value) -> dict:
    """A field of an event's snapshot that should be an object: itself, or empty when it is anything else."""
    return value if isinstance(value, dict) else {}


def find_for_invoice(invoice: dict) -> Licence | None:
    """The licence an invoice event is about, from the verified payload's ids (no Stripe call): a hint only,
    Stripe's own invoice is checked before it is applied."""
    parent = _mapping(_mapping(invoice.get("parent")).get("subscription_details"))
    subscription = payments.id_of(parent.get("subscription"))
    conditions = [Licence.invoice_id == invoice.get("id")]
    if payments.valid_id(subscription, "sub"):
        conditions.append(Licence.subscription_id == subscription)
    found = db.session.scalars(select(Licence).where(or_(*conditions))).first()
    return found or _by_reference(_mapping(invoice.get("metadata")) or _mapping(parent.get("metadata")))


def find_for_subscription(subscription: dict) -> Licence | None:
    found = db.session.scalars(select(Licence).where(Licence.subscription_id == subscription.get("id"))).first()
    return found or _by_reference(_mapping(subscription.get("metadata")))


def _by_reference(metadata: dict) -> Licence | None:
    """A licence named by our reference in Stripe metadata (both ids must agree)."""
    pk, registration_id = metadata.get("registration_pk"), metadata.get("registration_id")
    if not (isinstance(pk, str) and pk.isascii() and pk.isdigit() and len(pk) <= 9 and registration_id):
        return None
    reg = db.session.get(Registration, int(pk))
    if reg is None or reg.registration_id != registration_id:
        return None
    # The licence that registration opened: a registration that joined another licence by key opened none.
    return db.session.scalars(select(Licence).where(Licence.registration_pk == reg.id)).first()


# What an event names is a hint: the object Stripe gives back is applied only when it is the licence's.


def _names(metadata: dict, reg: Registration) -> bool:
    """Whether Stripe metadata carries this registration's reference (both ids)."""
    return metadata.get("registration_pk") == str(reg.id) and metadata.get("registration_id") == reg.registration_id


def _ours_before_stored(licence: Licence, customer: str | None, *metadata: dict) -> bool:
    """An object of an invoiced licence that Stripe made before its id was stored here (a crash between the
    two): our customer, and our reference in the object's own metadata as Stripe has it."""
    return (
        licence.kind in ("invoice", "payment")  # a card payment's invoice (CARD_PAYMENT_INVOICE) comes after it
        and licence.customer_id is not None
        and customer == licence.customer_id
        and any(_names(m, licence.registration) for m in metadata)
    )


def invoice_belongs(licence: Licence, invoice: payments.InvoiceView | None) -> bool:
    """Whether an invoice read from Stripe is this licence's: the invoice stored here, or one of the
    subscription stored here; never another customer's."""
    if invoice is None:
        return False
    if licence.customer_id and invoice.customer and invoice.customer != licence.customer_id:
        return False
    if invoice.id == licence.invoice_id:
        return True
    if licence.subscription_id:
        return invoice.subscription == licence.subscription_id
    return licence.invoice_id is None and _ours_before_stored(
        licence, invoice.customer, invoice.metadata, invoice.subscription_metadata
    )


def subscription_belongs(licence: Licence, sub: payments.SubscriptionView | None) -> bool:
    """Whether a subscription read from Stripe is this licence's: the one stored here."""
    if sub is None or licence.kind in ("payment", "pilot"):  # e.g. a lapsed subscription's, since paid once
        return False
    if licence.customer_id and sub.customer and sub.customer != licence.customer_id:
        return False
    if licence.subscription_id:
        return sub.id == licence.subscription_id
    # Only a recurring offer's invoice makes one, stored before it is sent (a lapsed one's is not this licence's).
    if licence.registration.price_interval is None or licence.invoice_sent_at is not None:
        return False
    return _ours_before_stored(licence, sub.customer, sub.metadata)


def read_unless_missing(read, object_id: str, stored: tuple):
    """`read(object_id)`, or None when Stripe has no such object and it is none of the `stored` ids (someone else's:
    final). A 404 for an object stored here is a fault (another account's key...) and raises: a retry outlives it."""
    try:
        return read(object_id)
    except payments.ObjectMissing:
        if object_id in stored:
            raise
        return None


def on_subscription_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """customer.subscription.updated / .deleted: read the subscription now and apply it if it is ours."""
    licence = find_for_subscription(obj)
    if licence is None or not payments.valid_id(obj.get("id"), "sub"):
        return None, "foreign subscription"
    stored = (licence.subscription_id,)

    def apply(licence, sub):
        reg = db.session.get(Registration, licence.registration_pk)
        licence.subscription_id = licence.subscription_id or sub.id
        changed = apply_subscription(reg, licence, sub, cause)
        access.refresh(reg, cause)
        return reg, f"subscription {sub.status}" if changed else "no change"

    reg = licence.registration
    return apply_fresh(
        licence.id,
        lambda: read_unless_missing(payments.gateway().retrieve_subscription, obj["id"], stored),
        apply,
        (reg, "no change (a newer read applied)"),
        subscription_belongs,
        (None, "foreign subscription"),
    )


def on_invoice_event(obj: dict, cause: str) -> tuple[Registration | None, str]:
    """invoice.*: read the invoice (and its subscription) now and apply it if it is ours."""
    licence = find_for_invoice(obj)
    if licence is None or not payments.valid_id(obj.get("id"), "in"):
        return None, "foreign invoice"
    subscription_id, stored = licence.subscription_id, (licence.invoice_id,)

    def fetch():
        gateway = payments.gateway()
        invoice = read_unless_missing(gateway.retrieve_invoice, obj["id"], stored)
        if invoice is None:
            return None, None
        return invoice, gateway.retrieve_subscription(subscription_id) if subscription_id else None

    def apply(licence, fetched):
        invoice, sub = fetched
        reg = db.session.get(Registration, licence.registration_pk)
        changed = apply_invoice(reg, licence, invoice, cause)
        if sub is not None:
            changed |= apply_subscription(reg, licence, sub, cause)
        access.refresh(reg, cause)
        return reg, f"invoice {invoice.status}" if changed else "no change"

    reg = licence.registration
    return apply_fresh(
        licence.id,
        fetch,
        apply,
        (reg, "no change (a newer read applied)"),
        lambda licence, fetched: invoice_belongs(licence, fetched[0]),
        (None, "foreign invoice"),
    )


def recheck(licence_pk: int, cause: str) -> bool:
    """Read a live licence's objects from Stripe again (reconciliation); commits. True if it changed."""
    licence = db.session.get(Licence, licence_pk)
    kind, subscription_id, invoice_id = licence.kind, licence.subscription_id, licence.invoice_id

    def fetch():
        gateway = payments.gateway()
        sub = gateway.retrieve_subscription(subscription_id) if subscription_id else None
        invoice = gateway.retrieve_invoice(invoice_id) if kind == "invoice" and invoice_id and sub is None else None
        return sub, invoice

    def apply(licence, fetched):
        sub, invoice = fetched
        reg = db.session.get(Registration, licence.registration_pk)
        changed = apply_subscription(reg, licence, sub, cause) if sub else False
        if invoice is not None:
            changed |= apply_invoice(reg, licence, invoice, cause)
        licence.checked_at = utcnow()
        access.refresh(reg, cause)
        return changed

    changed = apply_fresh(licence_pk, fetch, apply, False)
    db.session.commit()
    return changed
