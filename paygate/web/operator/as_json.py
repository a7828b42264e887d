"""What a registration looks like to the operator API: a list row (`summary`) and the detail (`full`)."""

from datetime import datetime

from paygate.core.models import Licence, VendorMessage
from paygate.core.money import format_amount
from paygate.gateways import payments
from paygate.web.operator.detail import Detail
from paygate.web.operator.sold import sold
from paygate.web.operator.standing import standing


def iso(value: datetime | None) -> str | None:
    """A stored (naive UTC) timestamp as the API and the CSV export write it."""
    return value.isoformat() + "Z" if value else None


def stripe_links(reg) -> dict:
    gateway = payments.gateway()
    links = {}
    if reg.payment_session_id:
        links["checkout_session"] = gateway.dashboard_url("checkout/sessions", reg.payment_session_id)
    if reg.payment_intent_id:
        links["payment_intent"] = gateway.dashboard_url("payments", reg.payment_intent_id)
    return links


def summary(reg) -> dict:
    paid = reg.amount_paid is not None
    return {
        "id": reg.id,
        "registration_id": reg.registration_id,
        "state": reg.state,
        "attention": reg.attention,
        "lms": {"url": reg.lms_url, "family": reg.lms_family, "version": reg.lms_version},
        "platform": {
            "id": reg.platform_id,
            "active": reg.platform_active,
            "override": reg.access_override,
            "access_wanted": reg.access_wanted,
            "access_reason": reg.access_reason,
            # A newer platform took this one's place on its licence: inactive for good.
            "replaced_at": iso(reg.replaced_at),
        },
        "offer": {  # the offer chosen in the frame, before or without a licence
            "price_id": reg.price_id,
            "product_name": reg.product_name,
            "quantity": reg.quantity,
            "seat_unit": reg.seat_unit,
        },
        "licence": licence_json(reg.licence, reg),
        "price": {"amount": reg.amount, "currency": reg.currency, "display": format_amount(reg.amount, reg.currency)},
        "payment": {
            "amount": reg.amount_paid,
            "currency": reg.currency_paid,
            "display": format_amount(reg.amount_paid, reg.currency_paid) if paid else None,
            "payer_email": reg.payer_email,
            "payer_name": reg.payer_name,
            "checkout_session_id": reg.payment_session_id,
            "payment_intent_id": reg.payment_intent_id,
            "paid_at": iso(reg.paid_at),
            "refund_id": reg.refund_id,
            "refunded_at": iso(reg.refunded_at),
        },
        "stripe_dashboard": stripe_links(reg),
        "created_at": iso(reg.created_at),
        "completed_at": iso(reg.completed_at),
    }


def licence_json(licence: Licence | None, reg) -> dict | None:
    """The licence as operators' scripts see it: kind, Stripe's status, ids, dates, what was sold."""
    if licence is None:
        return None
    # A licence from before the offers were recorded reads as the registration's Price, once, at what was
    # paid (see `sold.sold`); `offer_source` says which.
    what = sold(reg)
    invoice = None
    if licence.kind == "invoice":
        invoice = {
            "organisation": licence.organisation,
            "billing_email": licence.billing_email,
            "po_number": licence.po_number,
            "number": licence.invoice_number,
            "amount_due": licence.amount_due,
            "amount_remaining": licence.amount_remaining,
            "currency": licence.currency,
            "hosted_invoice_url": licence.hosted_invoice_url,
            "sent_at": iso(licence.invoice_sent_at),
        }
    said = standing(reg)
    return {
        "kind": licence.kind,
        # What the money says (refunds, disputes, the access rule), beside Stripe's own status.
        "standing": {"label": said.label, "active": said.active},
        # The key's last 4 characters: the key itself is never stored, and never shown to operators.
        "key_hint": licence.key_hint,
        "pilot_ends_at": iso(licence.pilot_ends_at),
        "platforms": platform_ids(licence),
        # The registration that opened the licence (its payment, invoice or pilot); another one joined it by key.
        "opened_by": licence.registration_pk,
        "status": licence.status,
        "subscription_status": licence.subscription_status,
        "customer_id": licence.customer_id,
        "subscription_id": licence.subscription_id,
        "invoice_id": licence.invoice_id,
        "period_end": iso(licence.period_end),
        "due_date": iso(licence.due_at),
        "disputed": licence.dispute_open,
        "price_id": what.price_id,
        "product_name": what.product_name,
        "quantity": what.quantity,
        "seat_unit": what.seat_unit,
        "amount": what.amount,
        "currency": what.currency,
        "display": format_amount(what.amount, what.currency) or None,
        "discount": what.discount,
        "tax": what.tax,
        "promotion_code": what.promotion_code,
        "payer": what.payer,
        "invoice_pdf": what.invoice_pdf,
        "hosted_invoice_url": what.hosted_invoice_url,
        "offer_source": what.source,
        "invoice": invoice,
        "payments": [
            {
                "payment_intent_id": p.payment_intent_id,
                "charge_id": p.charge_id,
                "invoice_id": p.invoice_id,
                "amount": p.amount,
                "currency": p.currency,
                "paid_at": iso(p.paid_at),
                "amount_refunded": p.amount_refunded,
                "refund_id": p.refund_id,
                "refund_status": p.refund_status,
                "dispute_id": p.dispute_id,
                "dispute_status": p.dispute_status,
                "dispute_due_by": iso(p.dispute_due_by),
            }
            for p in licence.payments
        ],
    }


def platform_ids(licence: Licence) -> list[str]:
    """The platform ids on the licence, oldest first (a replaced one too: it stays on the licence, inactive)."""
    return [p.platform_id for p in licence.platforms if p.platform_id]


def full(d: Detail) -> dict:
    reg = d.registration
    data = summary(reg)
    data.update(
        {
            "lms": {**data["lms"], "details": reg.lms_details},
            "attempts": {
                "count": reg.attempt_count,
                "uncertain": reg.attempt_uncertain,
                "started_at": iso(reg.attempt_started_at),
                "next_at": iso(reg.next_attempt_at),
                "last_error": reg.last_error,
            },
            "updated_at": iso(reg.updated_at),
            "checkout_sessions": [
                {
                    "id": s.session_id,
                    "generation": s.generation,
                    "status": s.status,
                    "payment_status": s.payment_status,
                    "amount_total": s.amount_total,
                    "currency": s.currency,
                    "payment_intent_id": s.payment_intent_id,
                    "payer_email": s.payer_email,
                    "created_at": iso(s.created_at),
                    "expires_at": iso(s.expires_at),
                    "canceled_at": iso(s.canceled_at),
                    "failed_at": iso(s.failed_at),
                }
                for s in d.sessions
            ],
            "stripe_events": [
                {
                    "id": e.event_id,
                    "type": e.type,
                    "session_id": e.session_id,
                    "received_at": iso(e.received_at),
                    "deliveries": e.deliveries,
                    "outcome": e.outcome,
                }
                for e in d.events
            ],
            "timeline": [
                {
                    "at": iso(t.at),
                    "kind": t.kind,
                    "from_state": t.from_state,
                    "to_state": t.to_state,
                    "cause": t.cause,
                    "message": t.message,
                    "details": t.details,
                }
                for t in d.timeline
            ],
            "vendor_messages": [vendor_message(m) for m in d.vendor_messages],
        }
    )
    return data


def vendor_message(message: VendorMessage) -> dict:
    """A delivery to the vendor's systems, newest first in `full`: how it went, never its body."""
    return {
        "message_id": message.message_id,
        "type": message.type,
        "status": message.status,
        "attempts": message.attempts,
        "last_attempt_at": iso(message.last_attempt_at),
        "last_status": message.last_status,  # None after a try: no answer (a timeout, a connection error)
        "last_answer": message.last_answer,
        "next_attempt_at": iso(message.next_attempt_at),
        "delivered_at": iso(message.delivered_at),
    }
