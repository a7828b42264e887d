"""Local Stripe stand-in: the v1 calls the service makes, in Stripe's wire format, plus hosted pages.

The real `stripe` library talks to it (STRIPE_API_BASE={PUBLIC_URL}/_local/stripe): form-encoded requests with
bracket keys, JSON objects with "object" fields, Stripe's error objects, idempotency keys and signed webhooks.
One module per resource group; `state` holds what a stand-in holds (`State`, with the dials tests turn), `core`
the API plumbing and event delivery.
"""

from flask import request

from paygate.standins.stripe import (
    billing_portal,
    charges,
    checkout,
    checkout_page,
    core,
    customers,
    dashboard,
    invoice_items,
    invoices,
    prices,
    promotions,
    subscriptions,
)
from paygate.standins.stripe.events import send_event
from paygate.standins.stripe.state import State

__all__ = ["State", "register", "send_event"]


def register(bp, st: State) -> None:
    """Add the Stripe routes (/_local/stripe/...) serving `st` to `bp`."""
    modules = (prices, promotions, checkout, checkout_page, customers, invoices, invoice_items, subscriptions)
    for module in (*modules, billing_portal, charges, dashboard):
        module.register(bp, st)
    route = core.api_routes(bp, st)

    @route("/<path:rest>", "GET", "POST", "DELETE")
    def unknown(params, rest):
        # Stripe answers a path it does not know with an error object, not an HTML page.
        raise core.StripeFail(404, f"Unrecognized request URL ({request.method}: /v1/{rest}).")
