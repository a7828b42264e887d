"""The two outside services, each behind one module: Stripe (payments) and LTIaaS (ltiaas)."""
