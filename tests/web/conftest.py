"""Fixtures of the web tests: the shared rate store."""

import pytest
import redis

from tests.helpers.rates import REDIS_URL


@pytest.fixture
def redis_url():
    """The shared rate store (Redis), or skip."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379 for the shared-store tests")
    return REDIS_URL
