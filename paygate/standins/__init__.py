"""Built-in local stand-ins for LTIaaS, Stripe, an LMS, the vendor's own systems and a mailbox, mounted under /_local
when APP_ENV=local.

Each stand-in keeps its state in an object (`ltiaas_api.State`, `stripe.State`, `vendor.State`, `mail.State`); the
blueprint
serves one of each, found at app.extensions["standins"]. With `state_dir` (the local run passes instance/) that
state is loaded at start and written back after each change, so that a restart keeps the payments that SQLite
remembers.
"""

import os
import weakref
from dataclasses import dataclass

from flask import Blueprint

from paygate.standins import lms, ltiaas_api, mail, persistence, stripe, vendor

__all__ = ["Standins", "create_standins_blueprint", "reset"]

STATE_FILES = {
    "ltiaas": "standin-ltiaas.json",
    "stripe": "standin-stripe.json",
    "vendor": "standin-vendor.json",
    "mail": "standin-mail.json",
}

_made: "weakref.WeakSet[Standins]" = weakref.WeakSet()


@dataclass(eq=False)
class Standins:
    ltiaas: ltiaas_api.State
    stripe: stripe.State
    vendor: vendor.State
    mail: mail.State

    def reset(self) -> None:
        """Forget every registration, platform, session, payment, event and e-mail."""
        self.ltiaas.reset()
        self.stripe.reset()
        self.vendor.reset()
        self.mail.reset()


def create_standins_blueprint(settings, state_dir: str | None = None) -> Blueprint:
    """One blueprint (url_prefix /_local) serving all the stand-ins, built from `settings`; their state is kept
    in `state_dir` if given, else in memory only."""
    if settings.stripe_secret_key.startswith(("sk_live_", "rk_live_")):
        raise RuntimeError("the local stand-ins refuse to run with a live Stripe key")
    standins = Standins(ltiaas_api.State(settings.ltiaas_api_key), stripe.State(settings), vendor.State(), mail.State())
    if state_dir is not None:
        for name, filename in STATE_FILES.items():
            persistence.keep(getattr(standins, name), os.path.join(state_dir, filename))
    _made.add(standins)
    bp = Blueprint("standins", __name__, url_prefix="/_local")
    ltiaas_api.register(bp, standins.ltiaas, settings.public_url)
    stripe.register(bp, standins.stripe)
    lms.register(bp, settings, standins.ltiaas)
    vendor.register(bp, settings, standins.vendor)
    mail.register(bp, settings, standins.mail)
    bp.record_once(_exempt_from_csrf)
    bp.record_once(lambda state: state.app.extensions.__setitem__("standins", standins))
    return bp


def _exempt_from_csrf(state) -> None:
    # Stripe-style API calls, the hosted page's and the vendor page's form posts carry no CSRF token of ours.
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(state.blueprint)


def reset() -> None:
    """Empty the stand-ins of every app made in this process (tests call it between tests)."""
    for standins in list(_made):
        standins.reset()
