"""Selling: Checkout Sessions, fulfilment of paid registrations, pay by invoice, reconciliation with Stripe."""
