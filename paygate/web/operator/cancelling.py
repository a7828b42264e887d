"""An operator ends a subscription at its period's end, without a refund: Stripe's `cancel_at_period_end`.

The school keeps what it paid for: the access continues until the period ends, and then the subscription ends at
Stripe (customer.subscription.deleted), which ends the access as any cancelled subscription does
(paygate/licensing/access.py). What Stripe answers is applied to the licence like a webhook's read of it
(paygate/licensing/licences.py `apply_subscription`), so the licence shows "ends on ..., not renewed" at once.

Pattern as for every operator action (paygate/web/operator/actions.py): check, commit, call, record, commit.
"""

from paygate.core.db import db
from paygate.core.models import Registration
from paygate.core.registrations import record
from paygate.core.text import clean
from paygate.gateways import payments
from paygate.licensing import access, licences
from paygate.web.operator.actions import NOTE_MAX, Result, already_done, cause_of
from paygate.web.operator.standing import joined_from


def subscription_of(reg: Registration) -> str | None:
    """The live subscription an operator can end at its period's end on this registration, if any: the licence's,
    on the registration that opened it, not already set to end."""
    lic = reg.licence
    if lic is None or not lic.subscription_id or lic.cancel_at_period_end or joined_from(reg) is not None:
        return None
    status = lic.status if lic.kind == "subscription" else lic.subscription_status
    return lic.subscription_id if status in access.ACTIVE_SUBSCRIPTION else None


def cancel_at_period_end(reg: Registration, note: str, email: str, form_id: str) -> Result:
    """Ask Stripe to end the subscription when its period ends; the licence follows from Stripe's answer."""
    cause = cause_of(email)
    note = clean(note, NOTE_MAX) or ""
    subscription_id = subscription_of(reg)
    if subscription_id is None:
        db.session.rollback()
        lic = reg.licence
        if lic is not None and lic.cancel_at_period_end:
            return Result("info", "The subscription already ends at its period's end.")
        return Result("error", "Nothing to cancel here: this registration has no running subscription of its own.")
    if already_done(reg, form_id):
        db.session.rollback()
        return Result("info", "This form was sent already.")
    record(
        reg,
        "operator",
        cause=cause,
        message="Cancel at the period's end, without a refund, asked" + (f": {note}" if note else "."),
        details={"form": form_id, "subscription": subscription_id, "note": note},
    )
    licence_pk = reg.licence_pk
    db.session.commit()  # the form is spent and nothing is held while Stripe is asked
    key = f"paygate-cancel-at-period-end-{reg.id}-{subscription_id}-{form_id}"

    def apply(licence, sub):
        owner = db.session.get(Registration, licence.registration_pk)
        licences.apply_subscription(owner, licence, sub, cause)
        access.refresh(owner, cause)
        return sub

    try:
        sub = licences.apply_fresh(
            licence_pk,
            lambda: payments.gateway().cancel_at_period_end(subscription_id, key),
            apply,
            None,
            licences.subscription_belongs,
        )
    except payments.PaymentProviderError as exc:
        db.session.rollback()
        record(
            reg,
            "operator",
            cause=cause,
            message=f"Cancel at the period's end failed at Stripe: {exc} Nothing was changed.",
            details={"subscription": subscription_id, "idempotency_key": key},
        )
        db.session.commit()
        return Result("error", f"{exc} Nothing was changed; reload the page to try again.")
    db.session.commit()
    if sub is None:  # a newer read of the subscription was applied meanwhile: it says how it stands
        return Result("ok", f"Subscription {subscription_id} set to end at its period's end.")
    end = f"{sub.period_end:%Y-%m-%d}" if sub.period_end else "its period's end"
    return Result("ok", f"Subscription {subscription_id} ends on {end}, not renewed; the access continues until then.")
