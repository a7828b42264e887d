"""Between "Stripe says paid" and "LTIaaS says completed": what the frame says, the registration and
its timeline, a worker pass driven with a clock, and what a repeated run must leave alone."""

from sqlalchemy import func, select

from paygate.core.db import db
from paygate.core.models import CheckoutSession, Registration, StripeEvent, TimelineEntry
from paygate.ops import worker

FINISHING = "Payment received. Finishing the registration"
SAFE = "Your payment is recorded and safe"
NEXT_STEP = "will finish it or refund you"


def load(client, registration_id: str | None = None) -> Registration:
    """The registration (the only one, or by LTIaaS id), with its timeline and sessions loaded."""
    with client.application.app_context():
        query = select(Registration)
        if registration_id:
            query = query.where(Registration.registration_id == registration_id)
        reg = db.session.scalars(query).one()
        _ = reg.timeline, reg.checkout_sessions  # load before the context ends
        return reg


def states(reg: Registration) -> list[str]:
    return [e.to_state for e in reg.timeline if e.kind == "state"]


def run_worker(client, now=None, **kwargs) -> dict:
    with client.application.app_context():
        return worker.run_once(now=now, **kwargs)


def snapshot(client) -> dict:
    """Everything a repeated run must leave alone."""
    with client.application.app_context():
        return {
            "registrations": sorted(
                (r.registration_id, r.state, r.attention, r.payment_session_id, r.platform_id, r.attempt_count)
                for r in db.session.scalars(select(Registration))
            ),
            "timeline": db.session.scalar(select(func.count()).select_from(TimelineEntry)),
            "sessions": sorted(
                (s.session_id, s.status, s.payment_status) for s in db.session.scalars(select(CheckoutSession))
            ),
            "events": db.session.scalar(select(func.count()).select_from(StripeEvent)),
        }


def no_refund(stripe_api) -> bool:
    return not any(kind == "refund" for kind, _ in stripe_api.calls)


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, no handler catches it."""
