"""The HTTP surface: the registration flow, operator pages and API, the Stripe webhook, request guards."""
