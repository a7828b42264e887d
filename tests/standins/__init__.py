"""The local stand-ins (paygate/standins) and the tests' own Stripe fake."""
