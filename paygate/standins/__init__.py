"""Built-in local stand-ins for LTIaaS, Stripe and an LMS, mounted under /_local when APP_ENV=local."""
from flask import Blueprint

from paygate.standins import lms, ltiaas_api, stripe
from paygate.standins.stripe import send_event

__all__ = ["create_standins_blueprint", "reset", "send_event"]


def create_standins_blueprint(settings) -> Blueprint:
    """One blueprint (url_prefix /_local) serving all three stand-ins, built from `settings`."""
    if settings.stripe_secret_key.startswith(("sk_live_", "rk_live_")):
        raise RuntimeError("the local stand-ins refuse to run with a live Stripe key")
    bp = Blueprint("standins", __name__, url_prefix="/_local")
    ltiaas_api.register(bp, settings)
    stripe.register(bp, settings)
    lms.register(bp, settings)
    bp.record_once(_exempt_from_csrf)
    return bp


def _exempt_from_csrf(state) -> None:
    # Stripe-style API calls and the hosted page's form posts carry no CSRF token of ours.
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(state.blueprint)


def reset() -> None:
    """Forget every registration, platform, session, payment and event (tests call it)."""
    ltiaas_api.reset()
    stripe.reset()
