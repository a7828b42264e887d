"""Fixtures of the sales tests: an app that offers pay by invoice (30 days), and its client."""

import pytest

from paygate.core.db import db
from tests.helpers.apps import make_app

DAYS = 30


@pytest.fixture
def make():
    """make(database_url, **settings): an app offering pay by invoice (30 days), disposed after the test."""
    apps = []

    def factory(database_url, **overrides):
        app = make_app(database_url, **{"invoice_days_until_due": DAYS, **overrides})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def inv_app(make, database_url, stripe_api, ltiaas_api):
    return make(database_url)


@pytest.fixture
def inv_client(inv_app):
    return inv_app.test_client()
