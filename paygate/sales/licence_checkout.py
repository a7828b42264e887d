"""Paying a licence on its licence page: a Checkout Session opened for the licence, not for a registration's frame.

A pilot, or a licence that does not stand (lapsed, refunded, cancelled, void...), can be paid on its page. The
session names the registration that opened the licence (its reference, as every Stripe object of the licence
does) and the licence itself (metadata `licence`), is for the licence's Customer when it has one (else Stripe
creates one), and returns to the licence page by a one-hour link, never by the key. Its row is the origin
registration's, with a negative generation (never the frame's session) and the choice it was opened for.

A pilot paid before its end holds its access while the payment is under way (`payment_pending_until`, read by
paygate/licensing/access.py), so that a pilot converted while its end passes never flaps at LTIaaS; an expired
or failed session releases that hold. Paying it is paygate/sales/licence_fulfilment.py.
"""

import hashlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from paygate.core.db import db, insert_ignoring_duplicates, utcnow
from paygate.core.models import CheckoutSession, Licence, Registration
from paygate.gateways import payments
from paygate.licensing import access, platforms
from paygate.sales import offers
from paygate.sales.checkout import REUSE_MARGIN, NotPayable, reference

log = logging.getLogger(__name__)

# Inside the one-hour link the return URLs carry (paygate/licensing/keys.py), with time left to come back.
SESSION_LIFE = timedelta(minutes=55)
# Stripe completes a session at its expiry at the latest; its webhook or the return may come a little later. The
# pilot's access holds that much longer, so that a payment made in the session's last minute never flaps it.
PENDING_MARGIN = timedelta(minutes=10)


def metadata(licence: Licence, origin: Registration) -> dict:
    """The reference of the registration that opened the licence, and the licence the session pays."""
    return {**reference(origin)["metadata"], "licence": str(licence.id)}


def licence_named(view: payments.CheckoutView) -> int | None:
    """The licence a session says it pays (metadata `licence`), or None: a frame's session, or nothing of ours."""
    value = view.metadata.get("licence")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


def pays_licence(view: payments.CheckoutView) -> bool:
    """Whether a session was opened to pay a licence on its page (whatever else it says: checked when applied)."""
    return "licence" in view.metadata


def payable(licence: Licence) -> bool:
    """A pilot (running or ended), or a licence whose own facts give no access now; never one whose invoice is
    being made (paygate/sales/licence_invoicing.py): a card payment and an invoice are never both under way."""
    if invoice_under_way(licence):
        return False
    return licence.kind == "pilot" or not platforms.stands(licence)


def invoice_under_way(licence: Licence) -> bool:
    """An invoice was asked for and is not sent yet (being made, or a failure left it halfway)."""
    return licence.kind == "invoice" and licence.invoice_sent_at is None and licence.invoice_form_id is not None


def sessions_of(licence: Licence):
    """The licence page's sessions of this licence, oldest first."""
    return select(CheckoutSession).where(
        CheckoutSession.registration_pk == licence.registration_pk, CheckoutSession.generation < 0
    )


def _expiry(now: datetime) -> datetime:
    """A whole minute: two clicks in the same minute send the same request, and Stripe replays one session."""
    return (now + SESSION_LIFE).replace(second=0, microsecond=0)


def open_for_licence(
    licence: Licence,
    choice: offers.Choice,
    success_url: str,
    cancel_url: str,
    locale: str | None = None,
    organisation_label: str | None = None,
) -> str:
    """The URL of a Checkout Session paying `licence` for `choice`: an open one of the same choice, or a new one.
    Raises NotPayable ("stands": nothing to pay; "processing": a delayed payment is on its way). Commits; Stripe is
    called outside any transaction."""
    now = utcnow()
    if not payable(licence):
        raise NotPayable("stands")
    rows = db.session.scalars(sessions_of(licence).order_by(CheckoutSession.id)).all()
    if any(r.status == "complete" and r.payment_status == "unpaid" and r.failed_at is None for r in rows):
        raise NotPayable("processing")  # never a second charge beside a payment on its way
    for row in reversed(rows):
        if (
            row.status == "open"
            and row.failed_at is None
            and row.expires_at is not None
            and row.expires_at > now + REUSE_MARGIN
            and (row.price_id, row.quantity) == (choice.offer.id, choice.quantity)
        ):
            return row.url
    origin = db.session.get(Registration, licence.registration_pk)
    expires_at = _expiry(now)
    generation = -(len(rows) + 1)
    price = choice.offer.price
    request = {
        "price_id": price.id,
        "reference": origin.registration_id,
        "metadata": metadata(licence, origin),
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_at": expires_at,
        "idempotency_key": f"paygate-licence-{licence.id}-{-generation}-{_digest(choice, licence, expires_at)}",
        "recurring": price.period is not None,
        "locale": locale,
        "quantity": choice.quantity,
        "organisation_label": organisation_label,
        "customer": licence.customer_id,
    }
    licence_pk, origin_pk = licence.id, origin.id
    holds = _hold(licence, expires_at + PENDING_MARGIN, now)
    db.session.commit()  # the hold first: the access must not lapse while Stripe is asked; nothing stays open
    try:
        view = payments.gateway().create_checkout_session(**request)
    except payments.PaymentProviderError:
        db.session.rollback()
        if holds:
            release(db.session.get(Licence, licence_pk), "licence page: Stripe could not open the payment")
            db.session.commit()
        raise
    insert_ignoring_duplicates(
        CheckoutSession,
        {
            "session_id": view.id,
            "registration_pk": origin_pk,
            "generation": generation,
            "status": view.status or "open",
            "payment_status": view.payment_status or "unpaid",
            "url": view.url,
            "expires_at": view.expires_at or expires_at,
            "amount_total": view.amount_total,
            "currency": view.currency,
            "price_id": price.id,
            "quantity": choice.quantity,
            "amounts": choice.amounts,
            "created_at": now,
            "updated_at": now,
        },
    )
    db.session.commit()
    log.info("licence %s: Checkout Session %s opened on its licence page", licence_pk, view.id)
    return view.url


def _digest(choice: offers.Choice, licence: Licence, expires_at: datetime) -> str:
    text = f"{choice.offer.id}\n{choice.quantity}\n{licence.customer_id}\n{expires_at.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hold(licence: Licence, until: datetime, now: datetime) -> bool:
    """A running pilot keeps its access until `until` while it is being paid; True if held. Flushes."""
    if licence.kind != "pilot" or licence.pilot_ends_at is None or now >= licence.pilot_ends_at:
        return False
    db.session.execute(
        update(Licence)
        .where(
            Licence.id == licence.id,
            Licence.kind == "pilot",
            (Licence.payment_pending_until.is_(None)) | (Licence.payment_pending_until < until),
        )
        .values(payment_pending_until=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


def release(licence: Licence | None, cause: str) -> bool:
    """After a licence page's session expired or failed: the pilot's hold lasts only as long as another open
    session of it does (none: the pilot ends as its date says). Decides the access of its platforms again; True
    if the hold changed (the caller has the reconciler tell LTIaaS after its commit). Flushes."""
    if licence is None or licence.kind != "pilot" or licence.payment_pending_until is None:
        return False
    now = utcnow()
    latest = db.session.scalar(
        select(func.max(CheckoutSession.expires_at)).where(
            CheckoutSession.registration_pk == licence.registration_pk,
            CheckoutSession.generation < 0,
            CheckoutSession.status == "open",
            CheckoutSession.expires_at > now,
        )
    )
    until = latest + PENDING_MARGIN if latest is not None else None
    if until == licence.payment_pending_until:
        return False
    db.session.execute(
        update(Licence)
        .where(Licence.id == licence.id, Licence.kind == "pilot")
        .values(payment_pending_until=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    access.refresh(db.session.get(Registration, licence.registration_pk), cause)
    return True


def release_session(session_id: str, cause: str) -> int | None:
    """An expired or failed session of a licence page: release its hold. The origin registration's id when an
    access changed (tell LTIaaS after the commit), else None. Flushes."""
    row = db.session.scalars(select(CheckoutSession).where(CheckoutSession.session_id == session_id)).first()
    if row is None or row.generation >= 0 or (row.status == "open" and row.failed_at is None):
        return None
    licence = db.session.scalars(select(Licence).where(Licence.registration_pk == row.registration_pk)).first()
    if licence is not None:
        db.session.refresh(licence)
    changed = release(licence, cause)
    if changed:
        log.info("licence %s: its payment on the licence page ended unpaid (%s)", licence.id, cause)
    return row.registration_pk if changed else None
