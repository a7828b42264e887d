"""Licences and access: what a school holds, what access its platforms should have, refunds and disputes."""
