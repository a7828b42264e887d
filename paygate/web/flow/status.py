"""What the registration frame shows: one sentence per situation, derived from the server's state.

The frame's hot paths (the status poll, a repeat visit of the pre-approval page) read what they show
with `flow_view`: one indexed Core SELECT of only the columns they need, the registration with its
latest Checkout Session and its licence, instead of loading ORM objects and their relationships.
`frame_status` takes that view or a Registration alike.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select

from paygate.core.db import autocommit_reads, utcnow
from paygate.core.languages import N_, format_day
from paygate.core.languages import gettext as _
from paygate.core.models import CheckoutSession, Licence, Registration, State
from paygate.sales.checkout import COMPLETION_MARGIN, STRIPE_MIN_EXPIRY

RESTART = N_("Start the registration again from your LMS.")


def restart() -> str:
    """The sentence that ends every dead end, in the admin's language."""
    return _(RESTART)


@dataclass(frozen=True, slots=True)
class SessionView:
    """The columns of a Checkout Session that the frame's message depends on."""

    status: str
    payment_status: str
    expires_at: datetime | None
    failed_at: datetime | None
    canceled_at: datetime | None


@dataclass(frozen=True, slots=True)
class LicenceView:
    """A licence as the frame reads it: its kind, and for an invoice what the frame says of it."""

    kind: str
    invoicing_error: str | None = None
    invoicing_claimed_at: datetime | None = None
    billing_email: str | None = None
    due_at: datetime | None = None
    invoice_number: str | None = None
    invoice_sent_at: datetime | None = None
    # Whether the registration opened this licence (False: it joined it by key).
    opened: bool = True


@dataclass(frozen=True, slots=True)
class FlowView:
    """A registration as the frame reads it: what `frame_status` uses and, read by its registration id
    for the pre-approval page, what preapproval.html shows (those fields are None in a status poll's)."""

    state: str
    created_at: datetime
    completion_html: str | None
    licence: LicenceView | None
    latest_session: SessionView | None
    registration_id: str | None = None
    id: int | None = None
    flow_token: str | None = None
    lms_url: str | None = None
    lms_family: str | None = None
    lms_version: str | None = None
    amount: int | None = None
    currency: str | None = None
    price_interval: str | None = None
    product_name: str | None = None
    product_description: str | None = None
    price_id: str | None = None
    quantity: int | None = None
    seat_unit: str | None = None


_R, _S, _L = Registration.__table__, CheckoutSession.__table__, Licence.__table__
_LATEST = select(func.max(_S.c.id)).where(_S.c.registration_pk == _R.c.id).correlate(_R).scalar_subquery()
# Column order is the views' field order; a session's status and a licence's kind are never NULL, so
# a NULL there means there is none. Only an invoice's licence says more (a second, rarer read).
_STATUS_COLUMNS = (
    _R.c.state,
    _R.c.created_at,
    _R.c.completion_html,
    *(_S.c[name].label(f"s_{name}") for name in ("status", "payment_status", "expires_at", "failed_at", "canceled_at")),
    _L.c.kind.label("l_kind"),
    (_L.c.registration_pk == _R.c.id).label("l_opened"),
)
_PAGE_COLUMNS = (
    _R.c.id,
    _R.c.flow_token,
    _R.c.lms_url,
    _R.c.lms_family,
    _R.c.lms_version,
    _R.c.amount,
    _R.c.currency,
    _R.c.price_interval,
    _R.c.product_name,
    _R.c.product_description,
    _R.c.price_id,
    _R.c.quantity,
    _R.c.seat_unit,
)
_INVOICE_COLUMNS = (
    _L.c.invoicing_error,
    _L.c.invoicing_claimed_at,
    _L.c.billing_email,
    _L.c.due_at,
    _L.c.invoice_number,
    _L.c.invoice_sent_at,
)
_JOINED = _R.outerjoin(_S, _S.c.id == _LATEST).outerjoin(_L, _L.c.id == _R.c.licence_pk)
_BY_TOKEN = _R.c.flow_token == bindparam("key")
_BY_REGISTRATION_ID = _R.c.registration_id == bindparam("key")
_STATUS = select(*_STATUS_COLUMNS).select_from(_JOINED).where(_BY_TOKEN)
_PAGE = select(*_STATUS_COLUMNS, *_PAGE_COLUMNS).select_from(_JOINED).where(_BY_REGISTRATION_ID)
_INVOICE = {
    key: select(*_INVOICE_COLUMNS).select_from(_L.join(_R, _R.c.id == _L.c.registration_pk)).where(where)
    for key, where in (("token", _BY_TOKEN), ("registration_id", _BY_REGISTRATION_ID))
}


def flow_view(*, token: str | None = None, registration_id: str | None = None) -> FlowView | None:
    """What the status poll needs of the registration with this flow token, or what the pre-approval
    page needs of the one with this LTIaaS registration id; None if there is none."""
    by, key = ("token", token) if token is not None else ("registration_id", registration_id)
    # Not the ORM session (nothing here is an ORM object), and in autocommit: a read needs no BEGIN and
    # ROLLBACK round trips. An invoice's second read may see a later commit than the first; the frame
    # shows it at its next poll either way.
    with autocommit_reads().connect() as connection:
        row = connection.execute(_STATUS if token is not None else _PAGE, {"key": key}).first()
        if row is None:
            return None
        kind, opened = row[8], bool(row[9])
        if kind == "invoice" and opened:  # a licence joined by key is not this registration's invoice
            licence = LicenceView(kind, *connection.execute(_INVOICE[by], {"key": key}).one(), opened=opened)
        else:
            licence = LicenceView(kind, opened=opened) if kind is not None else None
    session = SessionView(*row[3:8]) if row[3] is not None else None
    return FlowView(*row[:3], licence, session, registration_id, *row[10:])


def _latest(reg) -> CheckoutSession | SessionView | None:
    if isinstance(reg, FlowView):
        return reg.latest_session
    return reg.checkout_sessions[-1] if reg.checkout_sessions else None


def can_open_checkout(reg: Registration | FlowView) -> bool:
    window = timedelta(minutes=current_app.config["SETTINGS"].registration_window_minutes)
    return reg.created_at + window - COMPLETION_MARGIN >= utcnow() + STRIPE_MIN_EXPIRY


def frame_status(reg: Registration | FlowView) -> dict:
    """{state, phase, message}: phase is pay (show the button), invoice (only the invoice form), wait,
    done (run html) or stop."""
    state = State(reg.state)
    licence = reg.licence
    free = without_payment(reg)
    invoiced = licence is not None and licence.kind == "invoice" and free is None
    if state is State.PENDING and invoiced:
        if licence.invoicing_error and licence.invoicing_claimed_at is None:
            return _status(
                reg,
                "invoice",
                _(
                    "We could not make your invoice yet: the payment service did not "
                    "answer. Send the invoice form again: nothing is made twice."
                ),
            )
        return _status(reg, "wait", _("Preparing the invoice for %(email)s…", email=licence.billing_email))
    if state in (State.PAID, State.COMPLETING) and invoiced:
        return _status(
            reg,
            "wait",
            _("Invoice sent to %(email)s. Finishing the registration in your LMS…", email=licence.billing_email),
        )
    if state is State.COMPLETED and invoiced:
        if licence.due_at:
            message = _(
                "Invoice %(number)s sent to %(email)s, due %(due)s, and the tool is registered. Keep the "
                "details below, then press Finish.",
                number=licence.invoice_number or "",
                email=licence.billing_email,
                due=format_day(licence.due_at),
            )
        else:
            message = _(
                "Invoice %(number)s sent to %(email)s, and the tool is registered. Keep the details below, "
                "then press Finish.",
                number=licence.invoice_number or "",
                email=licence.billing_email,
            )
        return _status(reg, "done", message, html=reg.completion_html)
    if state is State.PENDING:
        session = _latest(reg)
        open_session = (
            session is not None
            and session.status == "open"
            and session.failed_at is None
            and session.expires_at is not None
            and session.expires_at > utcnow()
        )
        if (
            session is not None
            and session.failed_at is None
            and session.status == "complete"
            and session.payment_status == "unpaid"
        ):
            return _status(
                reg,
                "wait",
                _(
                    "Your payment is being processed by your bank. This window finishes "
                    "the registration by itself once the payment is confirmed."
                ),
            )
        if not open_session and not can_open_checkout(reg):
            if session is not None and session.status == "open" and session.failed_at is None:
                # Stripe has not said "expired" yet: a payment may still be on its way to us.
                return _status(
                    reg,
                    "wait",
                    _(
                        "This registration has timed out. If you paid, your payment is "
                        "safe: the registration finishes here or you are refunded. If "
                        "you did not pay, nothing was charged."
                    )
                    + " "
                    + restart(),
                )
            return _status(
                reg,
                "stop",
                _("This registration has timed out before it was paid, and nothing was charged.") + " " + restart(),
            )
        if session is None:
            return _status(
                reg,
                "pay",
                _(
                    "Pay to finish registering this tool in your LMS. The payment opens "
                    "in a new window; keep this one open."
                ),
            )
        if session.failed_at is not None:
            return _status(
                reg,
                "pay",
                _(
                    "The payment did not go through, and nothing was charged. "
                    "Press Pay to try again, perhaps with another payment method."
                ),
            )
        if not open_session:
            return _status(
                reg,
                "pay",
                _(
                    "The payment window expired before a payment was made, and nothing "
                    "was charged. Press Pay to start again."
                ),
            )
        if session.canceled_at is not None:
            return _status(reg, "pay", _("The payment was cancelled, and nothing was charged. Press Pay to try again."))
        return _status(
            reg,
            "pay",
            _(
                "Complete the payment in the payment window. This window updates by "
                "itself; if you closed the payment window, press Pay to reopen it."
            ),
        )
    if state in (State.PAID, State.COMPLETING):
        if free == "pilot":
            return _status(reg, "wait", _("Your free pilot is starting. Finishing the registration in your LMS…"))
        if free == "joined":
            return _status(reg, "wait", _("Your licence key was accepted. Finishing the registration in your LMS…"))
        return _status(reg, "wait", _("Payment received. Finishing the registration in your LMS…"))
    if state is State.COMPLETED:
        if free == "pilot":
            message = _(
                "Your free pilot has started and the tool is registered. Keep the details below, then press Finish."
            )
        elif free == "joined":
            message = _("The tool is registered on your licence. Keep the details below, then press Finish.")
        else:
            message = _("Payment received and the tool is registered. Keep the details below, then press Finish.")
        return _status(reg, "done", message, html=reg.completion_html)
    if state is State.NEEDS_ATTENTION and free is not None:
        return _status(
            reg,
            "wait",
            _(
                "The registration could not be finished automatically. The vendor's support team sees it and "
                "will finish it; this window updates by itself if it is finished while open."
            ),
        )
    if state is State.NEEDS_ATTENTION:
        return _status(
            reg,
            "wait",
            _(
                "Your payment is recorded and safe, but the registration could not be "
                "finished automatically. The vendor's support team sees it and will "
                "finish it or refund you; this window updates by itself if it is "
                "finished while open."
            ),
        )
    if state is State.REFUNDED:
        return _status(reg, "stop", _("This registration was cancelled and its payment refunded.") + " " + restart())
    return _status(
        reg, "stop", _("This registration expired before it was paid, and nothing was charged.") + " " + restart()
    )


def without_payment(reg: Registration | FlowView) -> str | None:
    """`pilot` or `joined` (by key) for a registration cleared to complete with no payment of its own, else None."""
    licence = reg.licence
    if licence is None:
        return None
    opened = licence.opened if isinstance(licence, LicenceView) else licence.registration_pk == reg.id
    if not opened:
        return "joined"
    return "pilot" if licence.kind == "pilot" else None


def _status(reg: Registration | FlowView, phase: str, message: str, html: str | None = None) -> dict:
    body = {"state": reg.state, "phase": phase, "message": message}
    if html is not None:
        body["html"] = html
    return body
