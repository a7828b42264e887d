"""Licences, the access rule, refunds and disputes (paygate/licensing)."""
