"""Local Stripe stand-in: the v1 calls the service makes, in Stripe's wire format, plus hosted pages.

The real `stripe` library talks to it (STRIPE_API_BASE={PUBLIC_URL}/_local/stripe): form-encoded requests with
bracket keys, JSON objects with "object" fields, Stripe's error objects, idempotency keys and signed webhooks.
One module per resource group; `core` holds the stores, the API plumbing and event delivery.
"""
from flask import request

from paygate.standins.stripe import charges, checkout, core, customers, dashboard, invoices, prices, subscriptions
from paygate.standins.stripe.core import reset, send_event

__all__ = ["register", "reset", "send_event"]


def register(bp, settings) -> None:
    """Add the Stripe routes (/_local/stripe/...) to `bp`."""
    core.current_settings = settings
    for module in (prices, checkout, customers, invoices, subscriptions, charges, dashboard):
        module.register(bp, settings)
    route = core.api_routes(bp, settings)

    @route("/<path:rest>", "GET", "POST", "DELETE")
    def unknown(params, rest):
        # Stripe answers a path it does not know with an error object, not an HTML page.
        raise core.StripeFail(404, f"Unrecognized request URL ({request.method}: /v1/{rest}).")
