"""Checkout, fulfilment, pay by invoice, reconciliation with Stripe (paygate/sales)."""
