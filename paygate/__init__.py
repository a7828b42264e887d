"""paygate: payment-gated LTI Dynamic Registration for LTIaaS, with Stripe.

The application is built by `paygate.application.create_app` (the composition root); `wsgi.py` serves it.
The layers, from the top: application, standins, web, ops, sales, licensing, gateways, core
(docs/architecture.md).
"""


def create_app(test_config: dict | None = None):
    """Build the application (see `paygate.application.create_app`)."""
    from paygate.application import create_app as build

    return build(test_config)
