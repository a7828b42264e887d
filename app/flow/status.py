"""What the registration frame shows: one sentence per situation, derived from the server's state."""
from datetime import timedelta

from flask import current_app

from ..checkout import COMPLETION_MARGIN, STRIPE_MIN_EXPIRY
from ..db import utcnow
from ..models import CheckoutSession, Registration, State

RESTART = "Start the registration again from your LMS."


def _latest(reg: Registration) -> CheckoutSession | None:
    return reg.checkout_sessions[-1] if reg.checkout_sessions else None


def can_open_checkout(reg: Registration) -> bool:
    window = timedelta(minutes=current_app.config["SETTINGS"].registration_window_minutes)
    return reg.created_at + window - COMPLETION_MARGIN >= utcnow() + STRIPE_MIN_EXPIRY


def frame_status(reg: Registration) -> dict:
    """{state, phase, message}: phase is pay (show the button), invoice (only the invoice form), wait,
    done (run html) or stop."""
    state = State(reg.state)
    licence = reg.licence
    invoiced = licence is not None and licence.kind == "invoice"
    if state is State.PENDING and invoiced:
        if licence.invoicing_error and licence.invoicing_claimed_at is None:
            return _status(reg, "invoice", "We could not make your invoice yet: the payment service did not answer. "
                                       "Send the invoice form again: nothing is made twice.")
        return _status(reg, "wait", f"Preparing the invoice for {licence.billing_email}…")
    if state in (State.PAID, State.COMPLETING) and invoiced:
        return _status(reg, "wait", f"Invoice sent to {licence.billing_email}. Finishing the registration in "
                                    "your LMS…")
    if state is State.COMPLETED and invoiced:
        due = f", due {licence.due_at:%Y-%m-%d}" if licence.due_at else ""
        return _status(reg, "done", f"Invoice {licence.invoice_number or ''} sent to {licence.billing_email}{due}, "
                                    "and the tool is registered. This dialog closes by itself; if it does not, "
                                    "close it.", html=reg.completion_html)
    if state is State.PENDING:
        session = _latest(reg)
        open_session = session is not None and session.status == "open" and session.failed_at is None \
            and session.expires_at is not None and session.expires_at > utcnow()
        if session is not None and session.failed_at is None and session.status == "complete" \
                and session.payment_status == "unpaid":
            return _status(reg, "wait", "Your payment is being processed by your bank. This window finishes "
                                        "the registration by itself once the payment is confirmed.")
        if not open_session and not can_open_checkout(reg):
            if session is not None and session.status == "open" and session.failed_at is None:
                # Stripe has not said "expired" yet: a payment may still be on its way to us.
                return _status(reg, "wait", "This registration has timed out. If you paid, your payment is "
                                            "safe: the registration finishes here or you are refunded. If "
                                            f"you did not pay, nothing was charged. {RESTART}")
            return _status(reg, "stop", f"This registration has timed out before it was paid, and nothing "
                                        f"was charged. {RESTART}")
        if session is None:
            return _status(reg, "pay", "Pay to finish registering this tool in your LMS. The payment opens "
                                       "in a new window; keep this one open.")
        if session.failed_at is not None:
            return _status(reg, "pay", "The payment did not go through, and nothing was charged. "
                                       "Press Pay to try again, perhaps with another payment method.")
        if not open_session:
            return _status(reg, "pay", "The payment window expired before a payment was made, and nothing "
                                       "was charged. Press Pay to start again.")
        if session.canceled_at is not None:
            return _status(reg, "pay", "The payment was cancelled, and nothing was charged. Press Pay to "
                                       "try again.")
        return _status(reg, "pay", "Complete the payment in the payment window. This window updates by "
                                   "itself; if you closed the payment window, press Pay to reopen it.")
    if state in (State.PAID, State.COMPLETING):
        return _status(reg, "wait", "Payment received. Finishing the registration in your LMS…")
    if state is State.COMPLETED:
        return _status(reg, "done", "Payment received and the tool is registered. This dialog closes by "
                                    "itself; if it does not, close it.", html=reg.completion_html)
    if state is State.NEEDS_ATTENTION:
        return _status(reg, "wait", "Your payment is recorded and safe, but the registration could not be "
                                    "finished automatically. The vendor's support team sees it and will "
                                    "finish it or refund you; this window updates by itself if it is "
                                    "finished while open.")
    if state is State.REFUNDED:
        return _status(reg, "stop", f"This registration was cancelled and its payment refunded. {RESTART}")
    return _status(reg, "stop", f"This registration expired before it was paid, and nothing was charged. "
                                f"{RESTART}")


def _status(reg: Registration, phase: str, message: str, html: str | None = None) -> dict:
    body = {"state": reg.state, "phase": phase, "message": message}
    if html is not None:
        body["html"] = html
    return body
