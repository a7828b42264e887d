"""The service's rate limits (paygate/web/throttling.py) and the shared Redis store the tests use."""

from limits import parse_many

from paygate.web import throttling

REDIS_URL = "redis://127.0.0.1:6379/13"


def per_minute(name: str) -> int:
    """The per-minute amount of one of the service's rates."""
    return parse_many(throttling.RATES[name])[0].amount
